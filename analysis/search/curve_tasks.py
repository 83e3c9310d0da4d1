"""Task accuracy along the pruning curves: at chosen k (default 3, 6, 9 and the k where
the best method's evaluation perplexity first doubles), each method's removal judged on
tasks by lm-eval (`tasks.engine.compare`; every (removal, task) is cached on its own, so
methods that remove the same layers cost one run), beside its perplexity at the same k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analysis.core import store
from analysis.core.kinds import Kind
from analysis.core.results import Result
from analysis.model.removal import Removal
from analysis.search import curves as cv
from analysis.tasks import engine

DEFAULT_KS = (3, 6, 9)


def doubling_k(result: cv.PruningCurves, kind: Kind) -> int | None:
    """The first k at which the best method's evaluation perplexity is at least twice the
    full model's (None when it never is)."""
    full = result.full_ppl["evaluation"]
    curves = [result.curve(kind, m) for m in _methods(kind)]
    for i, k in enumerate(curves[0].k):
        if min(c.eval_ppl[i] for c in curves) >= 2 * full:
            return int(k)
    return None


def _methods(kind: Kind) -> list[str]:
    return [m for m in cv.methods_for(kind) if m != "random"]


def chosen_ks(result: cv.PruningCurves, kind: Kind, ks=DEFAULT_KS) -> list[int]:
    stored = result.curve(kind, _methods(kind)[0]).k
    wanted = set(ks) | ({doubling_k(result, kind)} - {None})
    return sorted(k for k in wanted if k in stored)


@dataclass(frozen=True)
class CurveTasks(store.Record):
    """Per method and k: the removed layers, the evaluation perplexity and each task's main
    metric {value, stderr}; and the full model's."""

    kind: str
    ks: list
    full_ppl: float
    full: dict  # task -> {value, stderr}
    points: dict  # method -> list (one per k) of {k, removed, eval_ppl, tasks: {task -> {value, stderr}}}


CURVE_TASKS = Result("curve-tasks", 1, CurveTasks, lane="tasks")


def _main(score) -> dict:
    return dict(score.metrics[score.main_metric])


def curve_tasks(model, result: cv.PruningCurves, kind: Kind, taskset: engine.TaskSet, *, ks=DEFAULT_KS,
                limit: int | None = None, progress: Callable | None = None,
                check: Callable | None = None) -> CurveTasks:
    points_k = chosen_ks(result, kind, ks)
    methods = _methods(kind)
    total, done = len(points_k) * len(methods), 0
    full = engine.evaluate_tasks(model, Removal(), taskset, limit=limit, check=check)
    points: dict = {}
    for method in methods:
        curve = result.curve(kind, method)
        for k in points_k:
            if progress:
                progress(done / total, f"{method}, k = {k}")
            i = curve.k.index(k)
            scores = engine.evaluate_tasks(model, curve.removal(k), taskset, limit=limit, check=check)
            points.setdefault(method, []).append({"k": k, "removed": list(curve.removed[i]),
                                                  "eval_ppl": curve.eval_ppl[i],
                                                  "tasks": {n: _main(s) for n, s in scores.items()}})
            done += 1
    return CurveTasks(kind, points_k, result.full_ppl["evaluation"], {n: _main(s) for n, s in full.items()}, points)


def curve_tasks_key(model, result: cv.PruningCurves, kind: Kind, taskset: engine.TaskSet, limit) -> str:
    return store.make_key(fingerprint=model.fingerprint, curves=result.corpus, split=result.split, kind=kind,
                          seconds=result.seconds, tasks={n: taskset.version_of(n) for n in taskset.names}, limit=limit)


def submit_curve_tasks(model, result: cv.PruningCurves, kind: Kind, taskset: engine.TaskSet, limit: int | None):
    key = curve_tasks_key(model, result, kind, taskset, limit)

    def run(ctx):
        return curve_tasks(model, result, kind, taskset, limit=limit, progress=ctx.progress, check=ctx.check_cancelled)
    return CURVE_TASKS.submit(key, run, label=f"Tasks along the {kind} curves: {', '.join(taskset.names)}")
