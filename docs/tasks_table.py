"""Make the README's "Tasks" table: the default model with 3, 6 and 9 blocks removed by
lowest Block Influence and by iterative greedy; evaluation perplexity beside each offline
task's accuracy, unhealed and healed. Runs the CLI (plan, heal, tasks) and prints the
Markdown table; takes about an hour on a 2-core CPU.

    .venv/bin/python docs/tasks_table.py OUT_DIR
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CORPUS = ["--corpus", "builtin:all", "--seq-len", "128", "--max-windows", "24"]
TASKS = "layerlab_agreement,layerlab_sequences"
HEAL_STEPS = 30  # LoRA steps per healing run (the app's default is 60)
METHODS = {"lowest_block_influence": "lowest Block Influence", "iterative_greedy": "iterative greedy"}


def run(*args: str) -> None:
    print("+", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "analysis", *args], check=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method, label in METHODS.items():
        for k in (3, 6, 9):
            plan, healed, tasks = out / f"{method}-{k}.json", out / f"{method}-{k}-healed", out / f"{method}-{k}-tasks.json"
            if not plan.exists():
                run("plan", "--method", method, "--target", str(k), *CORPUS, "--out", str(plan))
            if not (healed / "layer-lab-plan.json").exists():
                run("heal", "--plan", str(plan), *CORPUS, "--steps", str(HEAL_STEPS), "--out", str(healed))
            if not tasks.exists():
                run("tasks", "--plan", str(healed / "layer-lab-plan.json"), "--tasks", TASKS, "--out", str(tasks))
            rows.append((label, k, json.loads((healed / "layer-lab-plan.json").read_text()),
                         json.loads(tasks.read_text())))
    print(table(rows))


def _acc(entry: dict, side: str) -> str:
    m = entry[side][entry["main_metric"]]
    return f"{m['value']:.3f} ± {m['stderr']:.3f}"


def table(rows) -> str:
    names = TASKS.split(",")
    head = ("| removal | blocks | perplexity (eval) full / pruned / healed | "
            + " | ".join(f"{n} full / pruned / healed" for n in names) + " |")
    lines = [head, "|" + " --- |" * (3 + len(names))]
    for label, k, plan, tasks in rows:
        ppl = " / ".join(f"{plan['healing']['perplexity'][s]['evaluation']:.2f}" for s in ("full", "pruned", "healed"))
        accs = [" / ".join(_acc(tasks["tasks"][n], s) for s in ("full", "pruned", "healed")) for n in names]
        lines.append(f"| {label} k={k} | {plan['remove']['blocks']} | {ppl} | " + " | ".join(accs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
