"""What lm-eval's runs give, as Layer Lab's records: a task's score with every item
(TaskScore, TaskItem), the full / pruned / healed scores of one removal (TaskComparison),
their stored results, and the items that flip between two runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from analysis.core import store
from analysis.core.results import Result

MAIN_METRIC = {"multiple_choice": "acc", "generate_until": "exact_match"}


@dataclass(frozen=True)
class TaskItem(store.Record):
    """One item as lm-eval scored it: its main metric (1 right, 0 wrong), the target, and
    the per-choice log-likelihoods (multiple choice) or the generated text."""

    doc_id: int
    score: float
    target: str
    loglikelihoods: list | None = None
    output: str | None = None
    prompt: str = ""


@dataclass(frozen=True)
class TaskScore(store.Record):
    """One task's metrics (value and lm-eval's standard error) and its items."""

    task: str
    version: str
    output_type: str
    n: int
    num_fewshot: int
    metrics: dict  # name -> {"value": float, "stderr": float | None}
    items: list  # of TaskItem

    @classmethod
    def from_dict(cls, data: dict):
        score = super().from_dict(data)
        return cls(**{**score.__dict__, "items": [TaskItem.from_dict(i) for i in data["items"]]})

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC.get(self.output_type, next(iter(self.metrics)))

    @property
    def accuracy(self) -> float:
        return self.metrics[self.main_metric]["value"]

    def summary(self) -> dict:
        return {"task": self.task, "version": self.version, "n": self.n, "num_fewshot": self.num_fewshot,
                "metrics": self.metrics}


TASK_RESULT = Result("tasks", 1, TaskScore, lane="tasks")


@dataclass(frozen=True)
class TaskComparison(store.Record):
    """The full model's and the pruned model's scores on the same tasks and settings, and
    a healed checkpoint's when one was given ({} otherwise)."""

    full: dict  # task name -> TaskScore
    pruned: dict
    healed: dict
    NESTED_MAPS: ClassVar[dict] = {"full": TaskScore, "pruned": TaskScore, "healed": TaskScore}


COMPARISON = Result("task-comparison", 1, TaskComparison, lane="tasks")


def score_of(out: dict, name: str, version: str) -> TaskScore:
    """One task of lm-eval's simple_evaluate output (run with log_samples) as a TaskScore."""
    results, config = out["results"][name], out["configs"][name]
    output_type = config["output_type"]
    main = MAIN_METRIC.get(output_type)
    metrics = {}
    for key, value in results.items():
        metric, _, filt = key.partition(",")
        if metric.endswith("_stderr") or metric in ("alias", "sample_len") or not isinstance(value, (int, float)):
            continue
        stderr = results.get(f"{metric}_stderr,{filt}")
        metrics[metric] = {"value": float(value), "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    items = []
    for sample in sorted(out["samples"][name], key=lambda s: s["doc_id"]):
        if output_type == "multiple_choice":
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            items.append(TaskItem(int(sample["doc_id"]), float(sample[main]), str(sample["target"]), lls, None,
                                  _prompt(sample)))
        else:
            text = sample["filtered_resps"][0]
            text = text[0] if isinstance(text, list) else text
            items.append(TaskItem(int(sample["doc_id"]), float(sample.get(main, 0.0)), str(sample["target"]), None,
                                  str(text), _prompt(sample)))
    n_shot = out.get("n-shot", {}).get(name, 0)
    return TaskScore(name, version, output_type, len(items), int(n_shot or 0), metrics, items)


def _prompt(sample: dict) -> str:
    args = sample.get("arguments") or []
    first = args[0] if args else None
    if isinstance(first, (list, tuple)) and first:
        return str(first[0])
    return ""


@dataclass(frozen=True)
class Flip:
    doc_id: int
    direction: str  # "right to wrong" or "wrong to right"
    prompt: str
    target: str
    full: object  # log-likelihoods or the output
    pruned: object


def flips(full: TaskScore, pruned: TaskScore) -> list[Flip]:
    """The items whose main metric differs between the two runs of one task."""
    theirs = {item.doc_id: item for item in pruned.items}
    out = []
    for item in full.items:
        other = theirs.get(item.doc_id)
        if other is None or (item.score > 0) == (other.score > 0):
            continue
        shown = (lambda i: i.loglikelihoods) if full.output_type == "multiple_choice" else (lambda i: i.output)
        out.append(Flip(item.doc_id, "right to wrong" if item.score > 0 else "wrong to right", item.prompt,
                        item.target, shown(item), shown(other)))
    return out
