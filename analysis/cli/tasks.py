"""`python -m analysis tasks`: task accuracy by lm-eval, full model beside the pruned one.

    python -m analysis tasks --plan plan.json --tasks layerlab_agreement,layerlab_sequences \\
        [--task-file F.jsonl ...] [--limit N] [--num-fewshot K] [--healed DIR] [--model M] \\
        --out tasks.json [--write-plan plan-with-tasks.json]
    python -m analysis tasks --checkpoint DIR --tasks NAMES [--task-file F] ... --out tasks.json

With a plan: the full model and the pruned one (the plan's removals applied in-process to
the same weights) and, when the plan has been healed (its file sits in the healed
checkpoint `heal` writes, or --healed DIR), the healed checkpoint; lm-eval's metrics with
their standard errors side by side, and the items that flip between full and pruned.
With --checkpoint: one checkpoint by path (an `apply` or `heal` output), as lm-eval on
its own runs it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from analysis.cli.args import UsageError, add_model_args, non_negative_int, positive_int, progress
from analysis.core import store

SCHEMA = "layer-lab/tasks"
VERSION = 1
SHOWN_FLIPS = 20


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def healed_dir(plan_path: str, plan, given: str | None) -> Path | None:
    """The healed checkpoint: --healed, else the directory of a healed plan's file when it
    is a checkpoint (`heal --out DIR` writes DIR/layer-lab-plan.json)."""
    if given:
        return Path(given)
    here = Path(plan_path).resolve().parent
    if plan.healing and (here / "config.json").is_file():
        return here
    return None


def _row(name: str, metric: str, scores: dict) -> str:
    cells = []
    for side in ("full", "pruned", "healed"):
        if side in scores:
            m = scores[side].metrics.get(metric)
            se = m and m["stderr"]
            cells.append(f"{side} {m['value']:.4f}" + (f" ± {se:.4f}" if se is not None else "") if m else f"{side} -")
    return f"{name} {metric}: " + ", ".join(cells)


def _section(scores: dict) -> dict:
    """One task's entry of tasks.json (and of a plan's evaluation.tasks)."""
    from analysis.tasks.scores import flips

    any_score = next(iter(scores.values()))
    out = {"version": any_score.version, "output_type": any_score.output_type, "n": any_score.n,
           "num_fewshot": any_score.num_fewshot, "main_metric": any_score.main_metric}
    for side, score in scores.items():
        out[side] = score.metrics
    if "full" in scores and "pruned" in scores:
        changed = flips(scores["full"], scores["pruned"])
        out["flips"] = {"right_to_wrong": sum(f.direction == "right to wrong" for f in changed),
                        "wrong_to_right": sum(f.direction == "wrong to right" for f in changed),
                        "items": [store.jsonable(f.__dict__) for f in changed]}
    return out


def cmd_tasks(args) -> int:
    from analysis.tasks.engine import evaluate_checkpoint, resolve_tasks

    if bool(args.plan) == bool(args.checkpoint):
        raise UsageError("give --plan plan.json or --checkpoint DIR (one of them)")
    taskset = resolve_tasks(_names(args.tasks), args.task_file or ())  # TaskError, TaskFileError: ValueErrors
    settings = {"limit": args.limit, "num_fewshot": args.num_fewshot}
    results: dict[str, dict] = {name: {} for name in taskset.names}
    payload = {"schema": SCHEMA, "version": VERSION, "settings": settings}
    if args.checkpoint:
        for name, score in evaluate_checkpoint(args.checkpoint, taskset, **settings).items():
            results[name]["checkpoint"] = score
        payload["checkpoint"] = str(args.checkpoint)
    else:
        payload |= _with_plan(args, taskset, settings, results)
    payload["tasks"] = {name: _section(scores) for name, scores in results.items() if scores}
    store.write_json_atomic(Path(args.out), payload)
    for name, scores in results.items():
        first = next(iter(scores.values()))
        for metric in first.metrics:
            if metric != "sample_len":
                print(_row(name, metric, scores))
        flipped = payload["tasks"][name].get("flips")
        if flipped:
            print(f"{name}: {flipped['right_to_wrong']} items right -> wrong, {flipped['wrong_to_right']} "
                  "wrong -> right (full -> pruned)")
    print(f"tasks -> {args.out}")
    return 0


def _with_plan(args, taskset, settings, results) -> dict:
    """Full, pruned (and healed) scores for a plan; the plan with `evaluation.tasks` when asked."""
    from analysis.cli.plans import read_plan, _model_for
    from analysis.tasks.engine import compare, evaluate_checkpoint
    plan = read_plan(args.plan, show_warnings=False)
    model = _model_for(args, plan)
    comparison = compare(model, plan.removal(), taskset, progress=progress, **settings)
    for name in taskset.names:
        results[name] |= {"full": comparison.full[name], "pruned": comparison.pruned[name]}
    healed = healed_dir(args.plan, plan, args.healed)
    if healed is not None:
        progress(0.0, f"healed checkpoint {healed}")
        for name, score in evaluate_checkpoint(str(healed), taskset, tokenizer=model.tokenizer, **settings).items():
            results[name]["healed"] = score
    out = {"model": model.card(), "removal": plan.removal().to_dict(), "plan": str(args.plan)}
    if healed is not None:
        out["healed"] = str(healed)
    if args.write_plan:
        from dataclasses import replace
        entry = {name: {k: v for k, v in _section(scores).items() if k != "flips"} | settings
                 for name, scores in results.items()}
        evaluation = dict(plan.evaluation or {}) | {"tasks": entry}
        store.write_json_atomic(Path(args.write_plan), replace(plan, evaluation=evaluation).to_dict())
        print(f"plan with evaluation.tasks -> {args.write_plan}", file=sys.stderr)
    return out


def add_command(sub) -> None:
    p = sub.add_parser("tasks", help="task accuracy by lm-eval: full, pruned (and healed) side by side")
    add_model_args(p)
    p.set_defaults(model=None)
    p.add_argument("--plan", default=None, help="the pruning plan (its removals are applied in-process)")
    p.add_argument("--checkpoint", default=None, help="evaluate one checkpoint directory by path instead")
    p.add_argument("--tasks", default="", help="comma-separated lm-eval task names (offline: layerlab_agreement, "
                                               "layerlab_sequences)")
    p.add_argument("--task-file", action="append", default=None, metavar="JSONL",
                   help="a JSONL task file (question/choices/answer or prompt/target); may repeat")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N items of each task")
    p.add_argument("--num-fewshot", type=non_negative_int, default=None, help="few-shot examples (lm-eval's)")
    p.add_argument("--healed", default=None, metavar="DIR", help="the healed checkpoint of this plan")
    p.add_argument("--out", required=True, help="where to write tasks.json")
    p.add_argument("--write-plan", default=None, metavar="FILE", help="also write the plan with evaluation.tasks")
    p.set_defaults(handler=cmd_tasks)
