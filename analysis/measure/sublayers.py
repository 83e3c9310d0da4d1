"""Attention-versus-MLP redundancy per layer (LLM-Drop style, DESIGN.md section 3).

Sequential blocks: attention score = 1 - mean cos(resid_pre_l, resid_mid_l), MLP score
= 1 - mean cos(resid_mid_l, resid_post_l). Parallel attention/MLP (no resid_mid): each
sublayer's output is scored against resid_pre, i.e. 1 - mean cos(pre, pre + out).
Output-norm ratios: mean ||attn_out|| / ||resid_pre|| and ||mlp_out|| / ||sublayer input
stream|| over representation positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.measure.fused import fused
from analysis.core.store import Record


@dataclass(frozen=True)
class SublayerResult(Record):
    """Per-layer [L] sublayer redundancy scores and output-norm ratios."""

    parallel: bool  # attention and MLP read the same input stream (no resid_mid)
    attn_score: np.ndarray
    mlp_score: np.ndarray
    attn_norm_ratio: np.ndarray
    mlp_norm_ratio: np.ndarray
    n_positions: int

    ARRAYS = ("attn_score", "mlp_score", "attn_norm_ratio", "mlp_norm_ratio")


SUMS = ("attn_cos", "mlp_cos", "attn_ratio", "mlp_ratio")


def _layer_sums_examples() -> list:
    x = torch.randn(2, 5, 7)
    return [(x, x + 1, x + 2, x, x), (x, None, x + 2, x, x)]  # sequential blocks; parallel attention + MLP


@fused(examples=_layer_sums_examples)
def layer_sums(pre, mid, post, attn, mlp):
    """One layer's sums over positions [4] (float64): cos(sublayer input stream, output
    stream) for attention and MLP, and ||out|| / ||input stream|| for both. Inputs are
    [B, T, d] residual-stream tensors; `mid` is None for parallel attention/MLP, whose
    sublayers both read `pre` (their output streams are pre + out). Compiled
    (analysis.measure.fused), one read of each input."""
    pre, post, attn, mlp = pre.float(), post.float(), attn.float(), mlp.float()
    if mid is None:
        mlp_in = pre
        attn_cos = F.cosine_similarity(pre, pre + attn, dim=-1)
        mlp_cos = F.cosine_similarity(pre, pre + mlp, dim=-1)
    else:
        mlp_in = mid = mid.float()
        attn_cos = F.cosine_similarity(pre, mid, dim=-1)
        mlp_cos = F.cosine_similarity(mid, post, dim=-1)
    attn_ratio = attn.norm(dim=-1) / pre.norm(dim=-1).clamp_min(1e-12)
    mlp_ratio = mlp.norm(dim=-1) / mlp_in.norm(dim=-1).clamp_min(1e-12)
    return torch.stack([v.sum(dtype=torch.float64) for v in (attn_cos, mlp_cos, attn_ratio, mlp_ratio)])


class SublayerReducer:
    sites = ("resid_mid", "attn_out", "mlp_out")

    def __init__(self, n_layers: int, parallel: bool) -> None:
        self.parallel = parallel
        self.sums = {k: torch.zeros(n_layers, dtype=torch.float64) for k in SUMS}
        self.count = 0
        self.n_layers = n_layers

    def hooks(self, model, first_repr):
        return []

    def update(self, model, batch) -> None:
        s = batch.first_repr
        for l in range(self.n_layers):
            mid = None if self.parallel else batch.resid_mid[l][:, s:]
            sums = layer_sums(batch.resid[l][:, s:], mid, batch.resid[l + 1][:, s:], batch.attn_out[l][:, s:],
                              batch.mlp_out[l][:, s:]).cpu()
            for i, key in enumerate(SUMS):
                self.sums[key][l] += float(sums[i])
        self.count += batch.resid[0][:, s:].shape[0] * batch.resid[0][:, s:].shape[1]

    def result(self) -> SublayerResult:
        n = max(1, self.count)
        return SublayerResult(
            parallel=self.parallel,
            attn_score=(1.0 - self.sums["attn_cos"] / n).numpy(),
            mlp_score=(1.0 - self.sums["mlp_cos"] / n).numpy(),
            attn_norm_ratio=(self.sums["attn_ratio"] / n).numpy(),
            mlp_norm_ratio=(self.sums["mlp_ratio"] / n).numpy(),
            n_positions=self.count,
        )


def joint_ranking(attn_score, mlp_score) -> list[dict]:
    """All 2L sublayers sorted from most redundant (lowest score) to least."""
    rows = [{"kind": "attn", "layer": l, "score": float(s)} for l, s in enumerate(attn_score)]
    rows += [{"kind": "mlp", "layer": l, "score": float(s)} for l, s in enumerate(mlp_score)]
    return sorted(rows, key=lambda r: r["score"])


def ranking_table(attn_score, mlp_score, attn_ppl=None, mlp_ppl=None) -> list[dict]:
    """The joint ranking as table rows (rank 1 = most redundant); with measured removal
    perplexities, also each sublayer's rank by measured cost (1 = cheapest to remove)."""
    rows = joint_ranking(attn_score, mlp_score)
    measured = None
    if attn_ppl is not None and mlp_ppl is not None:
        measured = {("attn", l): float(p) for l, p in enumerate(attn_ppl)}
        measured |= {("mlp", l): float(p) for l, p in enumerate(mlp_ppl)}
        by_cost = sorted(measured, key=measured.get)
        cost_rank = {key: i + 1 for i, key in enumerate(by_cost)}
    out = []
    for rank, row in enumerate(rows, start=1):
        item = {"rank": rank, "sublayer": f"{row['kind']} {row['layer']}", "score": row["score"]}
        if measured is not None:
            key = (row["kind"], row["layer"])
            item |= {"ppl removed": measured[key], "rank by measured cost": cost_rank[key]}
        out.append(item)
    return out
