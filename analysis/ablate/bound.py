"""A lower bound on a candidate's NLL from part of the vocabulary: iterative greedy drops
a candidate with it instead of running its whole unembedding (DESIGN.md section 3).

For one position with logits z over the vocabulary V and any subset S that holds the gold
token g, logsumexp_S(z) <= logsumexp_V(z), so

    sum over positions of (logsumexp_S(z) - z_g)  <=  the NLL sum.

S is the gold tokens of the batch plus the top-K tokens at every position under a
reference model (the best candidate measured so far on that batch): a removal moves most
probability mass among the same tokens, so the bound misses the exact value by
-log P(S), about 0.08 nats per token at K = 64 on the default model, while the logits of S
cost |S| / |V| (about 14%) of the unembedding. A candidate whose bound exceeds the best
complete NLL cannot win and needs no exact value.

Exactness: the subset logits are the same dot products as the full unembedding's, summed
in another order, so they differ from it by rounding. The bound subtracts a margin of
MARGIN_PER_TOKEN nats per predicted token, far above float32 rounding (about 1e-6 of a
logit), and is only used where that holds: float32 or float64 weights, full-precision
matmuls, a linear unembedding and an elementwise logit transform (soft-capping, a scale).
Half-precision logits round by up to 1/256 of their size, more than the bound could gain.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.model import hooks

TOP_K = (8, 64)  # a small subset first (about 3% of the vocabulary); the larger only where it did not decide
MARGIN_PER_TOKEN = 1e-4


@dataclass
class Subset:
    """The columns S of one batch: their unembedding rows, and where each gold token is in S."""

    weight: torch.Tensor  # [|S|, d]
    bias: torch.Tensor | None  # [|S|] or None (no bias, or an all-zero one)
    gold: torch.Tensor  # [B, T-1] index into S of each position's gold token
    size: int


def _full_precision(model) -> bool:
    if model.hf_model.dtype not in (torch.float32, torch.float64):
        return False
    return torch.get_float32_matmul_precision() == "highest"  # TF32 matmuls (allow_tf32) read "high"


def usable(model) -> bool:
    """Whether the bound is exact enough on this model (see the module docstring)."""
    _, head, transform = hooks.final_modules(model)
    if not isinstance(head, torch.nn.Linear) or not _full_precision(model):
        return False
    if transform is None:
        return True
    x = torch.randn(3, 7, dtype=head.weight.dtype, device=head.weight.device) * 40
    columns = torch.tensor([5, 0, 2], device=x.device)
    with torch.inference_mode():  # an elementwise transform commutes with taking columns
        return bool(torch.equal(transform(x.clone())[:, columns], transform(x[:, columns].clone())))


def subsets(model, reference_logits: torch.Tensor, tokens: torch.Tensor) -> list[Subset]:
    """One subset per K in TOP_K, smallest first."""
    return [subset(model, reference_logits, tokens, k) for k in TOP_K]


def subset(model, reference_logits: torch.Tensor, tokens: torch.Tensor, k: int) -> Subset:
    """S for one batch from a reference model's logits [B, T, V] and the tokens [B, T]."""
    _, head, _ = hooks.final_modules(model)
    gold = tokens[:, 1:]
    top = reference_logits[:, :-1].topk(min(k, reference_logits.shape[-1]), dim=-1).indices
    columns = torch.unique(torch.cat([top.reshape(-1), gold.reshape(-1)]))  # sorted
    bias = head.bias[columns] if head.bias is not None and bool(head.bias.any()) else None
    return Subset(head.weight[columns], bias, torch.searchsorted(columns, gold.contiguous()), int(columns.numel()))


def lower_bound(model, normed: torch.Tensor, s: Subset) -> float:
    """A lower bound of the NLL sum of a batch from its final-normed residual [B, T, d]."""
    _, _, transform = hooks.final_modules(model)
    z = torch.nn.functional.linear(normed[:, :-1], s.weight, s.bias)
    if transform is not None:
        z = transform(z)
    z = z.float()
    gold = z.gather(-1, s.gold[..., None]).squeeze(-1)
    value = (torch.logsumexp(z, dim=-1) - gold).double().sum()
    return float(value) - MARGIN_PER_TOKEN * gold.numel()


def exceeding(model, normed: torch.Tensor, subsets_: list[Subset], limit: float) -> float | None:
    """The first lower bound (smallest subset first) above `limit`, or None if none is."""
    for s in subsets_:
        low = lower_bound(model, normed, s)
        if low > limit:
            return low
    return None
