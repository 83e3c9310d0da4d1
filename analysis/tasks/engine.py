"""Task accuracy of a model with removals applied, by lm-eval (DESIGN.md section 3, "Tasks").

lm-eval does everything a harness does: task definitions, prompts, few-shot sampling,
requests, metrics and their standard errors. Layer Lab gives it a model:

- in-process (`evaluate_tasks`): `RemovalLM`, lm-eval's own `HFLM` over the shared
  model's unwrapped decoder (the same parameters, no copy), whose two model calls set the
  removal and take the model's lock per batch, so the playground keeps answering while a
  task runs;
- by path (`evaluate_checkpoint`): plain `HFLM(pretrained=<dir>)`, for the checkpoints
  `apply` and `heal` write, which is also how anyone checks a number with lm-eval alone.

Tasks are named: lm-eval's registered names (their datasets come from the hub), the
offline suite (`suite.py`) and task files (`files.py`), which become task YAMLs in a
directory given to `TaskManager(include_path=...)`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from analysis.core import caches, settings, store
from analysis.model.removal import Removal
from analysis.model.unwrapped import unwrapped
from analysis.tasks import files, suite
from analysis.tasks.scores import COMPARISON, TASK_RESULT, TaskComparison, TaskScore, score_of

BATCH_SIZE = 16


class TaskError(ValueError):
    """A task that cannot run (unknown name, unreachable dataset, bad file): one clear line."""


# ---------------------------------------------------------------- which tasks


@dataclass(frozen=True)
class TaskSet:
    """Task names to run, the files that define some of them and lm-eval's TaskManager."""

    names: tuple
    file_tasks: tuple = ()  # TaskFile of the suite and of user files
    include_dir: str = ""
    defaults: bool = False  # some names are lm-eval's own tasks

    def version_of(self, name: str) -> str:
        """What the cache key needs to know of a task's definition: the file's content hash
        for our tasks, lm-eval's version for its own."""
        for task in self.file_tasks:
            if task.name == name:
                return f"file:{task.sha256[:16]}"
        from importlib import metadata
        return f"lm-eval {metadata.version('lm_eval')}"


def suite_tasks() -> list[files.TaskFile]:
    return [files.read_task_file(suite.SUITE_DIR / f"{name}.jsonl", name=name) for name in suite.TASKS]


_MANAGERS: dict = caches.register("tasks.managers", {})


def task_manager(include_dir: str, defaults: bool):
    """lm-eval's TaskManager over our YAMLs in `include_dir`, and lm-eval's own tasks when
    `defaults` (indexing those takes about 17 s here, so it is built once per process and
    only when a name is not ours)."""
    key = (include_dir, defaults)
    found = _MANAGERS.get(key)
    if found is None:
        from lm_eval.tasks import TaskManager
        found = _MANAGERS[key] = TaskManager(include_path=include_dir, include_defaults=defaults)
    return found


def _include_dir(ours: list) -> str:
    """A directory holding the YAML of each of our tasks (by content, written once)."""
    configs = [files.task_config(t) for t in ours]
    digest = hashlib.sha256(json.dumps(configs, sort_keys=True).encode()).hexdigest()[:16]
    directory = settings.cache_dir() / "tasks" / digest
    if not directory.is_dir():
        with store.building_dir(directory, keep_existing=True) as tmp:  # a concurrent build's directory wins
            for task in ours:
                files.write_config(task, tmp)
    return str(directory)


def resolve_tasks(names, task_files=()) -> TaskSet:
    """The tasks to run: `names` (the suite's or lm-eval's) plus one task per file in
    `task_files`; TaskError listing what exists for an unknown name."""
    ours = suite_tasks() + [files.read_task_file(f) for f in task_files]
    wanted = list(dict.fromkeys([n.strip() for n in names if n.strip()] + [t.name for t in ours[len(suite.TASKS):]]))
    if not wanted:
        raise TaskError("no task given: name one or give a task file")
    directory = _include_dir(ours)
    own = {t.name for t in ours}
    defaults = not set(wanted) <= own
    if defaults:
        known = set(task_manager(directory, True).all_tasks)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise TaskError(f"unknown task {unknown[0]!r}; available offline: {', '.join(suite.TASKS)} (or a task "
                            f"file); lm-eval's {len(known) - len(own)} other tasks and groups need their datasets "
                            "(the Hugging Face hub)")
    return TaskSet(tuple(wanted), tuple(ours), directory, defaults)


# ---------------------------------------------------------------- the model


def _hflm_class():
    from lm_eval.models.huggingface import HFLM
    return HFLM


class _Quiet:
    """lm-eval logs every step at INFO / WARNING; the CLI's output stays ours."""

    def __enter__(self):
        self.loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval", "evaluate")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


def removal_lm(model, removal: Removal, batch_size: int = BATCH_SIZE, check: Callable | None = None):
    """lm-eval's HFLM over the shared model with `removal` applied to each call."""
    decoder = unwrapped(model)
    if decoder is None:
        raise TaskError("task accuracy in-process needs the model's own modules; this model is offloaded "
                        "(evaluate the checkpoint `apply` writes by path instead)")
    HFLM = _hflm_class()

    class RemovalLM(HFLM):
        """HFLM whose forward and generate run with the removal, under the model's lock."""

        @contextmanager
        def _removed(self):
            if check is not None:
                check()
            with model.lock:
                decoder.removal = removal
                try:
                    yield
                finally:
                    decoder.removal = Removal()

        def _model_call(self, inps, attn_mask=None, labels=None):
            with self._removed():
                return super()._model_call(inps, attn_mask, labels)

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            with self._removed():
                return super()._model_generate(context, max_length, stop, **generation_kwargs)

    # HFLM ties the embeddings of a model it is given; the decoder's tree shares the
    # original's parameter dicts, so it must not re-tie anything.
    decoder.model.tie_weights = lambda *args, **kwargs: None
    try:
        with _Quiet():
            return RemovalLM(pretrained=decoder.model, tokenizer=model.tokenizer, batch_size=batch_size)
    finally:
        del decoder.model.tie_weights


def checkpoint_lm(path: str, tokenizer=None, batch_size: int = BATCH_SIZE):
    """Plain lm-eval HFLM of a checkpoint directory (what lm-eval on its own does)."""
    with _Quiet():
        return _hflm_class()(pretrained=str(path), tokenizer=tokenizer, batch_size=batch_size, device="cpu",
                             dtype="float32")


# ---------------------------------------------------------------- running


def run_lm(lm, taskset: TaskSet, *, limit: int | None = None, num_fewshot: int | None = None) -> dict[str, TaskScore]:
    """lm-eval's simple_evaluate of `lm` on the tasks, as TaskScores (with every item)."""
    import lm_eval

    manager = task_manager(taskset.include_dir, taskset.defaults)
    try:
        with _Quiet():
            # No global reseeding (random, numpy, torch): the server's other threads (a healing
            # run) keep their random state. Few-shot sampling keeps lm-eval's own seeded sampler.
            out = lm_eval.simple_evaluate(model=lm, tasks=list(taskset.names), num_fewshot=num_fewshot, limit=limit,
                                          task_manager=manager, log_samples=True, random_seed=None,
                                          numpy_random_seed=None, torch_random_seed=None)
    except (ConnectionError, OSError) as err:
        raise TaskError(f"a task's dataset cannot be reached ({_first_line(err)}); offline, use the suite "
                        f"({', '.join(suite.TASKS)}) or a task file") from err
    except Exception as err:  # datasets' own "couldn't reach the hub" errors are not OSErrors everywhere
        if "hub" in str(err).lower() or "offline" in str(err).lower() or "connect" in str(err).lower():
            raise TaskError(f"a task's dataset cannot be reached offline ({_first_line(err)})") from err
        raise
    return {name: score_of(out, name, taskset.version_of(name)) for name in out["results"]
            if name in out.get("samples", {})}


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def task_key(model, removal: Removal, task: str, version: str, num_fewshot, limit) -> str:
    return store.make_key(fingerprint=model.fingerprint, dtype=model.dtype, removal=removal.to_dict(), task=task,
                          version=version, num_fewshot=num_fewshot, limit=limit)


def _each_task(taskset: TaskSet, key_of: Callable, run: Callable, progress: Callable | None = None) -> dict:
    """Each task's TaskScore, cached under `key_of(name)`; `run(one)` runs lm-eval on the
    one-task TaskSet `one` when the cache has nothing."""
    out: dict[str, TaskScore] = {}
    for i, name in enumerate(taskset.names):
        if progress:
            progress(i / len(taskset.names), f"task {name} ({i + 1} of {len(taskset.names)})")
        one = TaskSet((name,), taskset.file_tasks, taskset.include_dir, taskset.defaults)
        out[name] = TASK_RESULT.cached(key_of(name), lambda one=one, name=name: run(one)[name])
    if progress:
        progress(1.0, "tasks done")
    return out


def evaluate_tasks(model, removal: Removal, taskset: TaskSet, *, limit: int | None = None,
                   num_fewshot: int | None = None, progress: Callable | None = None,
                   check: Callable | None = None) -> dict[str, TaskScore]:
    """Each task's score with `removal` applied in-process; cached per (fingerprint,
    removal, task, task version, few-shot, limit)."""
    return _each_task(taskset, lambda name: task_key(model, removal, name, taskset.version_of(name), num_fewshot, limit),
                      lambda one: run_lm(removal_lm(model, removal, check=check), one, limit=limit,
                                         num_fewshot=num_fewshot), progress)


def evaluate_checkpoint(path: str, taskset: TaskSet, *, tokenizer=None, limit: int | None = None,
                        num_fewshot: int | None = None) -> dict[str, TaskScore]:
    """Each task's score of the checkpoint at `path`, by lm-eval's HFLM on its own."""
    return run_lm(checkpoint_lm(path, tokenizer), taskset, limit=limit, num_fewshot=num_fewshot)


@dataclass(frozen=True)
class Healed:
    """A healed checkpoint to evaluate by path, and what identifies it in cache keys."""

    path: str
    key: str


def comparison_key(model, removal: Removal, taskset: TaskSet, limit, num_fewshot, healed: Healed | None = None) -> str:
    return store.make_key(fingerprint=model.fingerprint, dtype=model.dtype, removal=removal.to_dict(),
                          tasks={n: taskset.version_of(n) for n in taskset.names}, limit=limit,
                          num_fewshot=num_fewshot, healed=healed and healed.key)


def compare(model, removal: Removal, taskset: TaskSet, *, limit: int | None = None, num_fewshot: int | None = None,
            healed: Healed | None = None, progress: Callable | None = None,
            check: Callable | None = None) -> TaskComparison:
    """Full, pruned (and healed) scores; each task is cached on its own, so a full model's
    run serves every removal."""
    parts = 3 if healed else 2

    def part(i: int, side: str):
        return None if progress is None else (lambda f, m: progress((i + f) / parts, f"{side}: {m}"))
    settings = {"limit": limit, "num_fewshot": num_fewshot}
    full = evaluate_tasks(model, Removal(), taskset, progress=part(0, "full"), check=check, **settings)
    pruned = evaluate_tasks(model, removal, taskset, progress=part(1, "pruned"), check=check, **settings)
    done = {}
    if healed is not None:
        if check is not None:
            check()
        done = _each_task(taskset, lambda name: store.make_key(checkpoint=healed.key, task=name,
                                                               version=taskset.version_of(name), **settings),
                          lambda one: evaluate_checkpoint(healed.path, one, tokenizer=model.tokenizer, **settings))
    return TaskComparison(full, pruned, done)


def submit_comparison(model, removal: Removal, taskset: TaskSet, *, limit: int | None = None,
                      num_fewshot: int | None = None, healed: Healed | None = None):
    """`compare` as a background job (progress per task, Cancel between batches)."""
    key = comparison_key(model, removal, taskset, limit, num_fewshot, healed)

    def run(ctx):
        return compare(model, removal, taskset, limit=limit, num_fewshot=num_fewshot, healed=healed,
                       progress=ctx.progress, check=ctx.check_cancelled)
    return COMPARISON.submit(key, run, label=f"Tasks: {', '.join(taskset.names)}",
                             details={"removal": removal.to_dict(), "tasks": list(taskset.names)})
