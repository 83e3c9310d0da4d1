"""A task file becomes an lm-eval task: the fixed mapping (README, "Tasks").

A JSONL file, one object per line, either all multiple choice
    {"question": str, "choices": [str, str, ...], "answer": int (0-based index)}
or all generative
    {"prompt": str, "target": str}.

Multiple choice is lm-eval's `multiple_choice` output type with doc_to_text
"{{question}}", doc_to_choice "{{choices}}", doc_to_target "{{answer}}", lm-eval's
default target delimiter (" ") and the metrics acc and acc_norm. Generative is
`generate_until` with doc_to_text "{{prompt}}", doc_to_target "{{target}}", greedy
decoding, until ["\\n"], at most 32 new tokens, and exact_match with leading and trailing
whitespace ignored (the model writes " April" after "A:"; the target is "April").
`task_config` gives the YAML mapping lm-eval reads (`dataset_path: json`), so a number can be
reproduced with lm-eval alone.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 5_000_000
MAX_ITEMS = 20_000
MAX_GEN_TOKS = 32
MC_FIELDS = ("question", "choices", "answer")
GEN_FIELDS = ("prompt", "target")


class TaskFileError(ValueError):
    """A task file that cannot become a task: names the line and the field."""


@dataclass(frozen=True)
class TaskFile:
    """A checked task file: its output type, items and content hash."""

    name: str
    output_type: str  # "multiple_choice" or "generate_until"
    n_items: int
    sha256: str
    path: str


def _check_item(item, line: int, kind: str | None, where: str) -> str:
    """The item's kind ("multiple_choice" / "generate_until"); TaskFileError otherwise."""
    at = f"{where} line {line}"
    if not isinstance(item, dict):
        raise TaskFileError(f"{at}: expected a JSON object, got {type(item).__name__}")
    this = "multiple_choice" if "question" in item else "generate_until" if "prompt" in item else None
    if this is None:
        raise TaskFileError(f"{at}: needs the field 'question' (multiple choice) or 'prompt' (generative)")
    if kind is not None and this != kind:
        raise TaskFileError(f"{at}: a {this.replace('_', ' ')} item in a file of {kind.replace('_', ' ')} items")
    expected = MC_FIELDS if this == "multiple_choice" else GEN_FIELDS
    for name in expected:
        if name not in item:
            raise TaskFileError(f"{at}: missing field '{name}'")
    extra = sorted(set(item) - set(expected))
    if extra:
        raise TaskFileError(f"{at}: unknown field '{extra[0]}' (expected {', '.join(expected)})")
    if this == "generate_until":
        for name in GEN_FIELDS:
            if not isinstance(item[name], str) or not item[name].strip():
                raise TaskFileError(f"{at}: field '{name}' must be a non-empty string")
        return this
    if not isinstance(item["question"], str):
        raise TaskFileError(f"{at}: field 'question' must be a string")
    choices = item["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise TaskFileError(f"{at}: field 'choices' must be a list of at least 2 non-empty strings")
    answer = item["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise TaskFileError(f"{at}: field 'answer' must be an index into choices (0 to {len(choices) - 1})")
    return this


def read_task_file(path: str | Path, name: str | None = None) -> TaskFile:
    """Check a task file; TaskFileError naming the line and field of the first problem."""
    path = Path(path)
    where = path.name
    try:
        size = path.stat().st_size
    except OSError as err:
        raise TaskFileError(f"cannot read task file {path}: {err.strerror or err}") from err
    if size > MAX_FILE_BYTES:
        raise TaskFileError(f"task file {where} is {size / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskFileError(f"task file {where} is not UTF-8 text (byte {err.start})") from err
    kind, n = None, 0
    for line, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        try:
            item = json.loads(row)
        except json.JSONDecodeError as err:
            raise TaskFileError(f"{where} line {line}: not valid JSON ({err.msg})") from err
        kind = _check_item(item, line, kind, where)
        n += 1
        if n > MAX_ITEMS:
            raise TaskFileError(f"task file {where} has more than {MAX_ITEMS} items; the limit is {MAX_ITEMS}")
    if n == 0:
        raise TaskFileError(f"task file {where} has no items")
    digest = hashlib.sha256(raw).hexdigest()
    return TaskFile(name or f"file_{_slug(path.stem)}_{digest[:8]}", kind, n, digest, str(path.resolve()))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:40] or "tasks"


def task_config(task: TaskFile) -> dict:
    """The lm-eval task YAML (as a dict) of the fixed mapping for `task`."""
    common = {"task": task.name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": task.path}},
              "test_split": "test", "output_type": task.output_type, "metadata": {"version": 1.0}}
    if task.output_type == "multiple_choice":
        return common | {"doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}",
                         "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                         {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    return common | {"doc_to_text": "{{prompt}}", "doc_to_target": "{{target}}",
                     "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": MAX_GEN_TOKS},
                     "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                      "regexes_to_ignore": ["^\\s+", "\\s+$"]}]}


def write_config(task: TaskFile, directory: Path) -> Path:
    """`task_config` as a YAML file lm-eval's TaskManager(include_path=directory) finds."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{task.name}.yaml"
    out.write_text(yaml.safe_dump(task_config(task), sort_keys=False), encoding="utf-8")
    return out
