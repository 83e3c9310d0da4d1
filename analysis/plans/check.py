"""Validation of pruning-plan files: `parse_plan` never raises; it returns every problem
it finds in words, so the app and the CLI can show them all at once."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from analysis.model.removal import KINDS
from analysis.plans.schema import DEFAULTS, EVALUATION_FIELDS, HEALING_FIELDS, MODEL_DEFAULTS, PLAN_SCHEMA, PLAN_VERSION, TOP_FIELDS, PruningPlan
from analysis.data.corpus import CorpusError
from analysis.data.evaluation import EvalSpec
from analysis.data.evaluation import PARTS


@dataclass
class PlanCheck:
    plan: PruningPlan | None
    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        """All errors on one line (for the CLI)."""
        return "; ".join(self.errors)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _load_source(source, errors: list) -> dict | None:
    if isinstance(source, dict):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError as err:
            errors.append(f"the plan is not UTF-8 text (byte {err.start} cannot be decoded)")
            return None
    if not isinstance(source, str):
        errors.append(f"a plan must be JSON text or a dict, not {type(source).__name__}")
        return None
    if not source.strip():
        errors.append("the plan is empty")
        return None
    try:
        data = json.loads(source)
    except ValueError as err:
        line, col = getattr(err, "lineno", "?"), getattr(err, "colno", "?")
        msg = getattr(err, "msg", str(err))
        errors.append(f"the plan is not valid JSON ({msg} at line {line}, column {col})")
        return None
    if not isinstance(data, dict):
        errors.append(f"the plan must be a JSON object, not {type(data).__name__}")
        return None
    return data


def _check_header(data: dict, errors: list, warnings: list) -> None:
    schema = data.get("schema")
    if "schema" not in data:
        errors.append(f"missing field 'schema' (expected {PLAN_SCHEMA!r})")
    elif schema != PLAN_SCHEMA:
        errors.append(f"unknown schema {str(schema)[:80]!r}: this is not a Layer Lab pruning plan "
                      f"(expected {PLAN_SCHEMA!r})")
    version = data.get("version")
    if "version" not in data:
        errors.append("missing field 'version'")
    elif not _is_int(version):
        errors.append(f"'version' must be an integer, not {json.dumps(version)[:40]}")
    elif version > PLAN_VERSION:
        errors.append(f"plan version {version} is newer than this Layer Lab supports ({PLAN_VERSION}); "
                      "upgrade Layer Lab to read it")
    elif version < 1:
        errors.append(f"unsupported plan version {version} (supported: {PLAN_VERSION})")
    known = TOP_FIELDS if not _is_int(version) or version >= 2 else tuple(f for f in TOP_FIELDS if f != "healing")
    unknown = sorted(set(data) - set(known))
    if unknown:
        warnings.append(f"unknown fields ignored: {', '.join(unknown)}")


def _section(data: dict, name: str, contents: str, errors: list) -> dict | None:
    """The object `data[name]`, or None with the problem added to `errors`."""
    if name not in data:
        errors.append(f"missing field {name!r}")
        return None
    if not isinstance(data[name], dict):
        errors.append(f"{name!r} must be an object with {contents}")
        return None
    return data[name]


def _check_model(data: dict, errors: list) -> int | None:
    """Validate the 'model' section; returns n_layers when usable."""
    info = _section(data, "model", "name, n_layers and optionally fingerprint", errors)
    if info is None:
        return None
    for key in ("name", "n_layers"):
        if key not in info:
            errors.append(f"missing field 'model.{key}'")
    if "name" in info and not isinstance(info["name"], str):
        errors.append("'model.name' must be a string")
    if "fingerprint" in info and not (info["fingerprint"] is None or isinstance(info["fingerprint"], str)):
        errors.append("'model.fingerprint' must be a string")
    n = info.get("n_layers")
    if "n_layers" in info and (not _is_int(n) or n < 1):
        errors.append(f"'model.n_layers' must be a positive integer, not {json.dumps(n)[:40]}")
        return None
    return n


def _check_remove(data: dict, n_layers: int | None, errors: list, warnings: list) -> dict | None:
    remove = _section(data, "remove", "lists 'blocks', 'attn' and/or 'mlp'", errors)
    if remove is None:
        return None
    out = {}
    for kind in KINDS:
        values = remove.get(kind, [])  # a kind left out removes nothing
        if not isinstance(values, list):
            errors.append(f"'remove.{kind}' must be a list of layer indices, not {type(values).__name__}")
            continue
        good = True
        for v in values:
            if not _is_int(v):
                errors.append(f"'remove.{kind}' contains {json.dumps(v)[:40]}, which is not an integer layer index")
                good = False
            elif v < 0:
                errors.append(f"'remove.{kind}' contains the negative index {v}")
                good = False
            elif n_layers is not None and v >= n_layers:
                errors.append(f"'remove.{kind}' index {v} is out of range for a {n_layers}-layer model "
                              f"(valid: 0..{n_layers - 1})")
                good = False
        ints = [v for v in values if _is_int(v)]
        dups = sorted({v for v in ints if ints.count(v) > 1})
        if dups:
            errors.append(f"'remove.{kind}' lists {', '.join(map(str, dups))} more than once")
            good = False
        if good:
            if ints != sorted(ints):
                warnings.append(f"'remove.{kind}' was not sorted; sorted it")
            out[kind] = sorted(ints)
    for extra in sorted(set(remove) - set(KINDS)):
        errors.append(f"unknown removal kind 'remove.{extra}' (known: {', '.join(KINDS)})")
    if n_layers is not None and "blocks" in out and len(out["blocks"]) >= n_layers:
        errors.append(f"the plan removes all {n_layers} blocks; at least one must remain")
    if "blocks" in out:
        blocks = set(out["blocks"])
        covered = [f"{k} {l}" for k in ("attn", "mlp") for l in out.get(k, []) if l in blocks]
        if covered:
            warnings.append(f"{', '.join(covered)} lie in removed blocks (removing the block removes them already)")
    return out if set(out) == set(KINDS) else None


def _check_rest(data: dict, errors: list) -> None:
    """The optional fields (absent ones take their DEFAULTS), checked when present."""
    method = _section(data, "method", "'name' and optionally 'parameters'", errors) if "method" in data else None
    if method is not None and not isinstance(method.get("name"), str):
        errors.append("missing or non-string field 'method.name'")
    if method is not None and not isinstance(method.get("parameters", {}), dict):
        errors.append("'method.parameters' must be an object")
    if data.get("evaluation") is not None:
        _check_evaluation(data["evaluation"], errors)
    if not isinstance(data.get("created_with", ""), str):
        errors.append("'created_with' must be a string")
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        errors.append("'notes' must be a list of strings")


def _check_numbers(ev: dict, where: str, errors: list) -> None:
    if "corpus_sha256" in ev and not isinstance(ev["corpus_sha256"], str):
        errors.append(f"'{where}.corpus_sha256' must be a string")
    for key in ("seq_len", "n_windows"):
        if key in ev and ev[key] is not None and not (_is_int(ev[key]) and ev[key] >= 1):
            errors.append(f"'{where}.{key}' must be a positive integer")
    for key in ("perplexity_full", "perplexity_pruned"):
        if key in ev and ev[key] is not None and not _is_number(ev[key]):
            errors.append(f"'{where}.{key}' must be a number or null")


def _is_eval_spec(value) -> bool:
    try:
        return isinstance(value, str) and bool(value.strip()) and EvalSpec.parse(value) is not None
    except CorpusError:
        return False


def _object_with(value, where: str, fields, errors: list) -> bool:
    """True when `value` is an object (each missing one of `fields` noted); else the error."""
    if not isinstance(value, dict):
        errors.append(f"'{where}' must be an object or null")
        return False
    errors += [f"missing field '{where}.{key}'" for key in fields if key not in value]
    return True


def _check_evaluation(ev, errors: list) -> None:
    """The required fields, and the optional split fields a plan may carry:
    `eval` (EvalSpec string), `windows` (which windows the perplexities are on) and
    `calibration` (the same removal on the calibration windows) and `tasks` (task
    accuracy by lm-eval, `tasks` command). An evaluation with only `tasks` has no
    perplexity fields."""
    if isinstance(ev, dict) and "tasks" in ev:
        if not isinstance(ev["tasks"], dict) or not all(isinstance(v, dict) for v in ev["tasks"].values()):
            errors.append("'evaluation.tasks' must be an object of task name -> object")
        if set(ev) == {"tasks"}:
            return
    if not _object_with(ev, "evaluation", EVALUATION_FIELDS, errors):
        return
    _check_numbers(ev, "evaluation", errors)
    if "eval" in ev and not _is_eval_spec(ev["eval"]):
        errors.append(f"'evaluation.eval' must be 'holdout' or a corpus id, not {json.dumps(ev['eval'])[:60]}")
    if "windows" in ev and ev["windows"] not in PARTS:
        errors.append(f"'evaluation.windows' must be one of {', '.join(PARTS)}")
    calibration = ev.get("calibration")
    if calibration is not None:
        if isinstance(calibration, dict):
            _check_numbers(calibration, "evaluation.calibration", errors)
        else:
            errors.append("'evaluation.calibration' must be an object or null")


def _check_healing(data: dict, errors: list) -> None:
    """The optional `healing` section (version 2): null, or an object with the run's record."""
    healing = data.get("healing")
    if healing is None or not _is_int(data.get("version")) or data["version"] < 2:
        return
    if not _object_with(healing, "healing", HEALING_FIELDS, errors):
        return
    if "method" in healing and not isinstance(healing["method"], str):
        errors.append("'healing.method' must be a string")
    for key in ("settings", "perplexity"):
        if key in healing and not isinstance(healing[key], dict):
            errors.append(f"'healing.{key}' must be an object")
    curve = healing.get("loss_curve")
    if "loss_curve" in healing and not (isinstance(curve, list) and all(v is None or _is_number(v) for v in curve)):
        errors.append("'healing.loss_curve' must be a list of numbers")


def _check_against(data: dict, n_layers: int | None, model, errors: list, warnings: list) -> None:
    info = data.get("model") if isinstance(data.get("model"), dict) else {}
    if n_layers is not None and n_layers != model.n_layers:
        errors.append(f"the plan is for a {n_layers}-layer model but {model.name} has {model.n_layers} layers")
    if isinstance(info.get("name"), str) and info["name"] != model.name:
        warnings.append(f"the plan was made for model {info['name']!r}, not {model.name!r}")
    fp = info.get("fingerprint")
    if isinstance(fp, str) and fp != model.fingerprint:
        warnings.append(f"the plan's weight fingerprint {fp} differs from this model's {model.fingerprint}: "
                        "the weights are not the ones the plan was made on")


def parse_plan(source: str | bytes | dict, model=None) -> PlanCheck:
    """Validate a plan (JSON text, bytes or dict); never raises.

    Returns PlanCheck(plan, errors, warnings); plan is None whenever there are errors.
    With `model` given, a different name or weight fingerprint is a warning, a
    different layer count (or indices beyond it) an error.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        data = _load_source(source, errors)
        if data is None:
            return PlanCheck(None, errors, warnings)
        _check_header(data, errors, warnings)
        n_layers = _check_model(data, errors)
        in_range = model.n_layers if model is not None and n_layers is None else n_layers
        remove = _check_remove(data, in_range, errors, warnings)
        _check_rest(data, errors)
        _check_healing(data, errors)
        if model is not None:
            _check_against(data, n_layers, model, errors, warnings)
        if errors:
            return PlanCheck(None, errors, warnings)
        full = DEFAULTS | {k: data[k] for k in DEFAULTS if k in data}
        info = MODEL_DEFAULTS | data["model"]
        plan = PruningPlan(
            schema=data["schema"], version=data["version"],
            model={"name": info["name"], "n_layers": n_layers, "fingerprint": info["fingerprint"]},
            remove=remove,
            method={"name": full["method"]["name"], "parameters": full["method"].get("parameters", {})},
            evaluation=full["evaluation"], created_with=full["created_with"], notes=list(full["notes"]),
            healing=data.get("healing") if data["version"] >= 2 else None,
        )
        return PlanCheck(plan, [], warnings)
    except Exception as err:  # never raise: report the unexpected as one more problem
        errors.append(f"the plan could not be read ({type(err).__name__}: {str(err)[:200]})")
        return PlanCheck(None, errors, warnings)
