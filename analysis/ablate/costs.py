"""What a removal saves: parameters and per-token forward FLOPs, counted from the real
layer shapes of the loaded model."""
from __future__ import annotations

from dataclasses import dataclass

from analysis.model.removal import Removal


@dataclass(frozen=True)
class ComponentCosts:
    """Parameter counts per layer and forward FLOPs per token (2 per multiply-add).

    attn FLOPs = 2 x (attention weight-matrix entries) + 4 x context x n_heads x d_head
    (scores and weighted sum over `context` keys); MLP FLOPs = 2 x (MLP weight-matrix
    entries); plus the unembedding, 2 x d_model x d_vocab. Norms and the embedding
    lookup count as parameters, not FLOPs.
    """

    total_params: int
    attn_params: list
    mlp_params: list
    norm_params: list
    attn_flops: list
    mlp_flops: list
    other_flops: float

    @property
    def total_flops(self) -> float:
        return float(sum(self.attn_flops) + sum(self.mlp_flops) + self.other_flops)


def _count(module) -> tuple[int, int]:
    """(all parameters, weight-matrix entries) of a module, each tensor counted once."""
    seen, params, matrix = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        matrix += p.numel() if p.dim() >= 2 else 0
    return params, matrix


def component_costs(model, context: int) -> ComponentCosts:
    """Per-layer costs from the model's real layer shapes, attention over `context` tokens."""
    cfg = model.bridge.cfg
    attn_p, mlp_p, norm_p, attn_f, mlp_f = [], [], [], [], []
    for block in model.bridge.blocks:
        (a, a_mat), (m, m_mat), (b, _) = _count(block.attn), _count(block.mlp), _count(block)
        attn_p.append(a)
        mlp_p.append(m)
        norm_p.append(b - a - m)
        attn_f.append(2 * a_mat + 4 * context * int(cfg.n_heads) * int(cfg.d_head))
        mlp_f.append(2 * m_mat)
    unembed = model.hf_model.get_output_embeddings().weight
    return ComponentCosts(model.n_params, attn_p, mlp_p, norm_p, attn_f, mlp_f, 2.0 * unembed.numel())


def removed_fractions(costs: ComponentCosts, removal: Removal) -> tuple[float, float]:
    """(fraction of parameters, fraction of per-token FLOPs) that `removal` takes away.

    A removed block saves its attention, MLP and norms; a removed attention or MLP
    sublayer of a kept block saves its own parameters and FLOPs.
    """
    attn, mlp = removal.zeroed()
    params = (sum(costs.attn_params[l] for l in attn) + sum(costs.mlp_params[l] for l in mlp)
              + sum(costs.norm_params[l] for l in removal.blocks))
    flops = sum(costs.attn_flops[l] for l in attn) + sum(costs.mlp_flops[l] for l in mlp)
    return params / costs.total_params, flops / costs.total_flops
