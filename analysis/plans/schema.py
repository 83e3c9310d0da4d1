"""Pruning plans: a small, versioned JSON record of which blocks and sublayers to remove.

A plan names the model it was made for (name, layer count, weight fingerprint), the
removals (0-based layer indices per kind: whole blocks, attention sublayers, MLP
sublayers), how they were chosen (method + parameters) and, optionally, the perplexity
measured with and without them on a named corpus, and (version 2) the record of a
healing run on the pruned model (`healing`, see `heal.py`). Version 1 plans, which have
no `healing` section, still load. Validation of plan files is in
`plan_check.py`, the MergeKit export in `mergekit.py`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata

from analysis.core import store
from analysis.model.removal import KINDS, Removal

PLAN_SCHEMA = "layer-lab/pruning-plan"
PLAN_VERSION = 2  # 2 added the optional `healing` section; version 1 plans still load
LAYER_LAB_VERSION = "0.1"
ZEROED_NOTE = ("Removed attention/MLP sublayers of kept blocks are zeroed (their output projection is set to 0): "
               "the output changes but they save no compute or memory; only removed blocks make the model "
               "smaller and faster.")
TOP_FIELDS = ("schema", "version", "model", "remove", "method", "evaluation", "created_with", "notes", "healing")
HEALING_FIELDS = ("method", "settings", "perplexity", "loss_curve")
# A plan written by hand needs only schema, version, model {name, n_layers} and remove; the
# rest default to these values (README, "Pruning plans").
DEFAULTS = {"method": {"name": "manual", "parameters": {}}, "evaluation": None, "created_with": "unknown",
            "notes": []}
MODEL_DEFAULTS = {"fingerprint": None}
EVALUATION_FIELDS = ("corpus_sha256", "seq_len", "perplexity_full", "perplexity_pruned")


@dataclass(frozen=True)
class PruningPlan:
    schema: str
    version: int
    model: dict  # {name, n_layers, fingerprint}
    remove: dict  # {blocks, attn, mlp}: sorted lists of 0-based layer indices
    method: dict  # {name, parameters}
    evaluation: dict | None  # evaluation_section(): corpus_sha256, seq_len, perplexity_full/_pruned, ...
    created_with: str
    notes: list = field(default_factory=list)
    healing: dict | None = None  # version 2: {method, settings, perplexity, loss_curve, ...} of a healing run

    def to_dict(self) -> dict:
        data = json.loads(json.dumps(asdict(self)))
        if self.version < 2:
            data.pop("healing")  # a version 1 plan is written back as it was
        return data

    def with_healing(self, healing: dict) -> "PruningPlan":
        """This plan, as the current version, carrying a healing record."""
        return replace(self, version=PLAN_VERSION, healing=store.jsonable(dict(healing)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def removal(self) -> Removal:
        return Removal.of(**{kind: self.remove[kind] for kind in KINDS})

    @property
    def n_layers(self) -> int:
        return int(self.model["n_layers"])

    def kept_blocks(self) -> list[int]:
        return [l for l in range(self.n_layers) if l not in set(self.remove["blocks"])]


def created_with() -> str:
    try:
        tl = metadata.version("transformer-lens")
    except metadata.PackageNotFoundError:
        tl = "unknown"
    return f"layer-lab {LAYER_LAB_VERSION} / transformer-lens {tl}"


def plan_notes(remove: dict, n_layers: int) -> list[str]:
    """Human-readable caveats that travel with the plan."""
    notes = []
    blocks = set(remove["blocks"])
    zeroed = {kind: [l for l in remove[kind] if l not in blocks] for kind in ("attn", "mlp")}
    if zeroed["attn"] or zeroed["mlp"]:
        notes.append(ZEROED_NOTE)
    covered = sorted({l for kind in ("attn", "mlp") for l in remove[kind] if l in blocks})
    if covered:
        notes.append(f"Sublayers of removed blocks {covered} are listed too; removing the block already removes them.")
    if blocks:
        notes.append(f"Removing {len(blocks)} of {n_layers} blocks physically deletes them from the checkpoint "
                     "(fewer parameters, faster forward).")
    return notes


def make_plan(model, removal: Removal, method: str, parameters: dict, evaluation: dict | None = None) -> PruningPlan:
    """A plan for `removal` on a loaded model (anything with name, n_layers, fingerprint).

    `evaluation`, when given, needs corpus_sha256, seq_len, perplexity_full and
    perplexity_pruned (None allowed for the perplexities; extra keys are kept).
    """
    remove = {kind: sorted(int(x) for x in getattr(removal, kind)) for kind in KINDS}
    bad = [f"{kind} {l}" for kind in KINDS for l in remove[kind] if not 0 <= l < model.n_layers]
    if bad:
        raise ValueError(f"layer indices out of range for a {model.n_layers}-layer model: {', '.join(bad)}")
    if len(remove["blocks"]) >= model.n_layers:
        raise ValueError("a plan cannot remove every block")
    missing = [k for k in EVALUATION_FIELDS if evaluation is not None and k not in evaluation]
    if missing:
        raise ValueError(f"evaluation lacks {', '.join(missing)}")
    notes = plan_notes(remove, int(model.n_layers))
    return PruningPlan(
        schema=PLAN_SCHEMA,
        version=PLAN_VERSION,
        model={"name": str(model.name), "n_layers": int(model.n_layers), "fingerprint": model.fingerprint},
        remove=remove,
        method={"name": str(method), "parameters": store.jsonable(dict(parameters or {}))},
        evaluation=None if evaluation is None else store.jsonable(dict(evaluation)),
        created_with=created_with(),
        notes=notes,
    )


def evaluation_section(*, corpus_sha256: str, seq_len: int, perplexity_full, perplexity_pruned, n_windows: int,
                       windows: str = "all", eval_spec: str | None = None, calibration: dict | None = None,
                       **extra) -> dict:
    """A plan's `evaluation`: perplexity without and with the removals on `n_windows`
    windows of the corpus `corpus_sha256`; `windows` says which ("evaluation": held out
    or another corpus, "calibration", "all"), `eval_spec` the split (EvalSpec string) and
    `calibration` ({corpus_sha256, n_windows, perplexity_full, perplexity_pruned}) the
    same removal on the calibration windows the choice was made on."""
    out = {"corpus_sha256": corpus_sha256, "seq_len": int(seq_len), "perplexity_full": perplexity_full,
           "perplexity_pruned": perplexity_pruned, "n_windows": int(n_windows), "windows": windows}
    if eval_spec is not None:
        out["eval"] = eval_spec
    if calibration is not None:
        out["calibration"] = dict(calibration)
    return out | extra


def plan_evaluation(corpus, split, seq_len: int, max_windows: int | None, on: str, full: float, pruned: float,
                    n_windows: int, calibration: dict | None = None) -> dict:
    """The one way a plan's `evaluation` is written, by the app and the CLI: perplexity
    without (`full`) and with (`pruned`) the removals on `n_windows` windows. `on` says
    which windows ("evaluation" or "calibration") of `split` (the calibration corpus
    `corpus`'s split; None or nothing held out: every window of `corpus`); `calibration`
    the same removal on the calibration windows, when measured (calibration_numbers)."""
    held = split is not None and split.available
    measured = split.eval_corpus if held and on == "evaluation" else corpus
    return evaluation_section(corpus_sha256=measured.sha256, seq_len=seq_len, perplexity_full=full,
                              perplexity_pruned=pruned, n_windows=n_windows, windows=on if held else "all",
                              eval_spec=str(split.spec) if held else None, calibration=calibration,
                              corpus=measured.corpus_id, max_windows=max_windows)


def calibration_numbers(corpus, n_windows: int, full: float, pruned: float) -> dict:
    """A plan evaluation's `calibration`: the removal on the calibration windows."""
    return {"corpus_sha256": corpus.sha256, "n_windows": int(n_windows), "perplexity_full": full,
            "perplexity_pruned": pruned}


def kept_ranges(plan: PruningPlan) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges of the blocks that remain."""
    ranges, start = [], None
    removed = set(plan.remove["blocks"])
    for l in range(plan.n_layers + 1):
        kept = l < plan.n_layers and l not in removed
        if kept and start is None:
            start = l
        elif not kept and start is not None:
            ranges.append((start, l))
            start = None
    return ranges
