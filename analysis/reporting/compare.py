"""Two analyses side by side: which layers correspond, and what differs.

Layer axes are aligned by index, or, when one side is a pruned checkpoint of the other
(its plan, the checkpoint's layer-lab-plan.json, names the other side's layer count),
by the plan's kept-layer map: the pruned model's block j is the full model's block
kept[j], and its residual h_j+1 (the output of block j) sits where the full model's
h_kept[j]+1 (the output of that block) does; h_0 is the embedding on both. So before
the first removed block the two streams are the same numbers, and the difference shows
what the removals changed after it. Per-block series are placed at their aligned
positions; the similarity difference is taken over the residual positions both sides
have.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a label, its Analysis and, for a pruned checkpoint, its plan."""

    label: str
    analysis: object  # pipeline.Analysis
    plan: object | None = None  # plans.schema.PruningPlan the checkpoint was written from

    @property
    def n_layers(self) -> int:
        return int(self.analysis.model["n_layers"])

    @property
    def fingerprint(self) -> str:
        return self.analysis.model["fingerprint"]


@dataclass(frozen=True)
class Alignment:
    """Aligned position of each block (blocks) and each residual h_0..h_L (resid) of both
    sides, on a common axis: the full model's layer index ('plan') or the index itself."""

    how: str  # "plan" or "index"
    blocks: tuple[list[int], list[int]]
    resid: tuple[list[int], list[int]]
    notes: list[str] = field(default_factory=list)
    pruned: int | None = None  # which side (0 = A, 1 = B) is the pruned checkpoint


def _plan_fits(pruned: Side, full: Side) -> bool:
    plan = pruned.plan
    return plan is not None and plan.n_layers == full.n_layers and len(plan.kept_blocks()) == pruned.n_layers


def align(a: Side, b: Side) -> Alignment:
    """The kept-layer map when one side is a pruned checkpoint of the other, else by index."""
    for pruned_index, (pruned, full) in enumerate(((a, b), (b, a))):
        if not _plan_fits(pruned, full):
            continue
        kept = pruned.plan.kept_blocks()
        notes = [f"{pruned.label} is a pruned checkpoint of {full.label}: its block j is block kept[j] of "
                 f"{full.label} (removed blocks {pruned.plan.remove['blocks']})."]
        fp = pruned.plan.model.get("fingerprint")
        if fp and fp != full.fingerprint:
            notes.append(f"The plan was made on weights with fingerprint {fp}, but {full.label} has "
                         f"{full.fingerprint}: the layer map may not describe these two models.")
        zeroed = [f"{k} {l}" for k in ("attn", "mlp") for l in pruned.plan.remove[k]
                  if l not in pruned.plan.remove["blocks"]]
        if zeroed:
            notes.append(f"Zeroed sublayers in kept blocks: {', '.join(zeroed)}.")
        full_blocks, full_resid = list(range(full.n_layers)), list(range(full.n_layers + 1))
        sides = [(kept, [0] + [k + 1 for k in kept]), (full_blocks, full_resid)]
        if pruned_index == 1:
            sides.reverse()
        return Alignment("plan", (sides[0][0], sides[1][0]), (sides[0][1], sides[1][1]), notes, pruned_index)
    notes = []
    if a.n_layers != b.n_layers:
        notes.append(f"{a.label} has {a.n_layers} layers and {b.label} {b.n_layers}, and neither carries a plan "
                     "that maps one onto the other: layers are aligned by index only.")
    return Alignment("index", (list(range(a.n_layers)), list(range(b.n_layers))),
                     (list(range(a.n_layers + 1)), list(range(b.n_layers + 1))), notes)


def matrix_difference(a: np.ndarray, b: np.ndarray, alignment: Alignment) -> tuple[np.ndarray, list[int]]:
    """B - A over the residual positions both sides have ([k, k]) and those positions."""
    pos_a, pos_b = alignment.resid
    common = sorted(set(pos_a) & set(pos_b))
    ia = [pos_a.index(p) for p in common]
    ib = [pos_b.index(p) for p in common]
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return b[np.ix_(ib, ib)] - a[np.ix_(ia, ia)], common


def block_series(name: str, values_a, values_b, alignment: Alignment, labels: tuple[str, str]) -> list[dict]:
    """Per-block values of both sides as overlay series {name, side, x, y}, x aligned."""
    return [{"name": name, "side": labels[i], "x": alignment.blocks[i], "y": np.asarray(v, dtype=float).tolist()}
            for i, v in enumerate((values_a, values_b))]


def text_notes(a: Side, b: Side) -> list[str]:
    """Why the two perplexities may not be comparable (different text or windowing)."""
    ca, cb = a.analysis.corpus, b.analysis.corpus
    notes = []
    if ca["sha256"] != cb["sha256"]:
        notes.append("The two sides were measured on different text (corpus sha256 differs): their perplexities "
                     "and statistics are not directly comparable.")
    elif (ca["seq_len"], ca["n_windows"]) != (cb["seq_len"], cb["n_windows"]):
        notes.append(f"Same text, different windows ({ca['n_windows']} x {ca['seq_len']} against "
                     f"{cb['n_windows']} x {cb['seq_len']} tokens).")
    return notes


def summary_rows(a: Side, b: Side) -> list[dict]:
    """One table row per side: model, fingerprint, layers, parameters, corpus, windows, perplexity."""
    rows = []
    for side in (a, b):
        model, corpus = side.analysis.model, side.analysis.corpus
        rows.append({"side": side.label, "model": str(model["name"]), "fingerprint": model["fingerprint"],
                     "layers": model["n_layers"], "parameters (M)": round(model["n_params"] / 1e6, 2),
                     "corpus": str(corpus.get("id", "")), "corpus sha256": corpus["sha256"][:12],
                     "windows x seq_len": f"{corpus['n_windows']} x {corpus['seq_len']}",
                     "perplexity": round(float(side.analysis.perplexity), 4)})
    return rows
