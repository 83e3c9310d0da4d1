"""`bench --parts tasks`: lm-eval in-process with the removals applied / lm-eval on its
own on the checkpoint (the model's directory for the full model, the one `apply` writes
for the pruned one), the same tasks and items, run alternately in the same process."""
from __future__ import annotations

import tempfile

from analysis.model.removal import Removal
from analysis.tasks import engine, suite

BENCH_LIMIT = 60  # items per offline task
BENCH_BLOCKS = 3  # the pruned model: this many middle blocks removed


def bench_tasks(model, paired, repeats: int = 1) -> dict:
    """Seconds of each side (median over `repeats`, alternating) and the ratios."""
    from analysis.plans.apply import apply_plan
    from analysis.plans.schema import make_plan

    middle = model.n_layers // 2
    removal = Removal.of(blocks=range(middle - BENCH_BLOCKS // 2, middle - BENCH_BLOCKS // 2 + BENCH_BLOCKS))
    taskset = engine.resolve_tasks(list(suite.TASKS))
    out = {"removal": removal.to_dict(), "limit": BENCH_LIMIT}
    with tempfile.TemporaryDirectory() as tmp:
        pruned_dir = apply_plan(make_plan(model, removal, "manual", {}), model.source_dir, f"{tmp}/pruned")
        for side, r, directory in (("full", Removal(), model.source_dir), ("pruned", removal, pruned_dir)):
            for warm_up in (lambda: engine.run_lm(engine.removal_lm(model, r), taskset, limit=2),
                            lambda: engine.evaluate_checkpoint(str(directory), taskset, tokenizer=model.tokenizer,
                                                               limit=2)):
                warm_up()  # first calls (generate's set-up, lazy imports) are not what is compared
            ours, theirs = paired([
                lambda: engine.run_lm(engine.removal_lm(model, r), taskset, limit=BENCH_LIMIT),
                lambda: engine.evaluate_checkpoint(str(directory), taskset, tokenizer=model.tokenizer,
                                                   limit=BENCH_LIMIT)], repeats)
            out[side] = {"in_process": ours, "checkpoint": theirs, "ratio": ours / theirs}
    return out


def print_bench(got: dict) -> None:
    print(f"tasks ({', '.join(suite.TASKS)}, {got['limit']} items each), lm-eval in-process / on the checkpoint:")
    for side in ("full", "pruned"):
        s = got[side]
        what = "full model" if side == "full" else f"blocks {got['removal']['blocks']} removed"
        print(f"  {what:28s} {s['in_process']:7.2f} s / {s['checkpoint']:7.2f} s   ratio {s['ratio']:.2f}  "
              "(target <= 1.1)")
