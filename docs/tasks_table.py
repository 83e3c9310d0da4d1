"""Make the README's "Tasks" table: the default model with 3, 6 and 9 blocks removed by
lowest Block Influence and by iterative greedy; evaluation perplexity beside each offline
task's accuracy, unhealed and healed. Runs the CLI (plan, heal, tasks) and prints the
Markdown table (first without healing, then with it); about two hours on a 2-core CPU.

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
    """First every plan and its unhealed task scores, then the healing runs and the healed
    scores (the full and pruned scores come from the cache); a row without its healing
    yet shows '-'."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [(method, k) for method in METHODS for k in (3, 6, 9)]
    for method, k in runs:
        plan, tasks = out / f"{method}-{k}.json", out / f"{method}-{k}-tasks.json"
        if not plan.exists():
            run("plan", "--method", method, "--target", str(k), *CORPUS, "--out", str(plan))
        if not tasks.exists():
            run("tasks", "--plan", str(plan), "--tasks", TASKS, "--out", str(tasks))
    print(table(out, runs), flush=True)
    for method, k in runs:
        plan, healed = out / f"{method}-{k}.json", out / f"{method}-{k}-healed"
        healed_tasks = out / f"{method}-{k}-healed-tasks.json"
        if not (healed / "layer-lab-plan.json").exists():
            run("heal", "--plan", str(plan), *CORPUS, "--steps", str(HEAL_STEPS), "--out", str(healed))
        if not healed_tasks.exists():
            run("tasks", "--plan", str(healed / "layer-lab-plan.json"), "--tasks", TASKS, "--out", str(healed_tasks))
    print(table(out, runs))


def _acc(entry: dict | None, side: str) -> str:
    if entry is None or side not in entry:
        return "-"
    m = entry[side][entry["main_metric"]]
    return f"{m['value']:.3f} ± {m['stderr']:.3f}"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def table(out: Path, runs) -> str:
    names = TASKS.split(",")
    head = ("| removal | blocks | perplexity (eval) full / pruned / healed | "
            + " | ".join(f"{n} full / pruned / healed" for n in names) + " |")
    lines = [head, "|" + " --- |" * (3 + len(names))]
    for method, k in runs:
        plan = _read(out / f"{method}-{k}.json")
        tasks = _read(out / f"{method}-{k}-healed-tasks.json") or _read(out / f"{method}-{k}-tasks.json")
        healing = (_read(out / f"{method}-{k}-healed" / "layer-lab-plan.json") or {}).get("healing")
        ev = plan["evaluation"]
        healed_ppl = f"{healing['perplexity']['healed']['evaluation']:.2f}" if healing else "-"
        ppl = f"{ev['perplexity_full']:.2f} / {ev['perplexity_pruned']:.2f} / {healed_ppl}"
        accs = [" / ".join(_acc(tasks["tasks"].get(n), s) for s in ("full", "pruned", "healed")) for n in names]
        lines.append(f"| {METHODS[method]} k={k} | {plan['remove']['blocks']} | {ppl} | " + " | ".join(accs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
