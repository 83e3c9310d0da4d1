"""MLP activation sparsity (DESIGN.md section 3).

On the hidden activation entering the MLP's output projection (`blocks.l.mlp.hook_post`,
act(gate) * up for gated MLPs), over representation positions, counted exactly during
the pass for a grid of thresholds so the UI can switch eps without another pass:
- |a| <= eps (absolute rule), for every eps in EPS_GRID (plus any extra eps asked for);
- |a| <= p * max|a| of the same token (relative rule), for every p in P_GRID;
- a == 0 exactly (only ReLU-like activations produce these);
- per-neuron firing counts (|a| > eps) for the firing-frequency histogram; a neuron is
  dead at eps when it never fires (|a| <= eps at every position).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.model import hooks
from analysis.measure.fused import fused
from analysis.core.store import Record

EPS_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
P_GRID = (1e-3, 1e-2, 2e-2, 5e-2, 1e-1)


@dataclass(frozen=True)
class SparsityResult(Record):
    """Counts of the MLP activation over `n_positions` representation positions: grids
    [thresholds, L] for the absolute and relative rules, exact zeros [L], and per-neuron
    firing frequencies [eps, L, d_mlp]."""

    eps_grid: np.ndarray
    p_grid: np.ndarray
    frac_near_zero_grid: np.ndarray
    frac_relative_grid: np.ndarray
    frac_exact_zero: np.ndarray
    firing_frequency_grid: np.ndarray
    n_positions: int

    ARRAYS = ("eps_grid", "p_grid", "frac_near_zero_grid", "frac_relative_grid", "frac_exact_zero",
              "firing_frequency_grid")

    def at_eps(self, eps: float) -> dict:
        """Per-layer sparsity at one eps of the grid: fractions and dead-neuron counts."""
        i = int(np.argmin(np.abs(self.eps_grid - eps)))
        if not np.isclose(self.eps_grid[i], eps, rtol=1e-9):
            raise ValueError(f"eps {eps} was not counted; choose one of {self.eps_grid.tolist()}.")
        return {
            "eps": float(self.eps_grid[i]),
            "frac_near_zero": self.frac_near_zero_grid[i],
            "dead_neurons": (self.firing_frequency_grid[i] == 0).sum(axis=1),
            "firing_frequency": self.firing_frequency_grid[i],
        }

    def at_p(self, p: float) -> np.ndarray:
        """Per-layer share under the relative rule at the grid's p nearest to `p`."""
        return self.frac_relative_grid[int(np.argmin(np.abs(self.p_grid - p)))]


@fused(examples=lambda: [(torch.randn(2, 5, 7), EPS_GRID, P_GRID)])
def threshold_counts(x: torch.Tensor, eps: tuple, p: tuple):
    """Counts over activations x [..., d_mlp] (any float dtype, counted in float32): per
    eps, how many |x| <= eps in each column [eps, d_mlp]; how many x == 0; per p, how
    many |x| <= p * (the position's max |x|) [p]. Compiled, this is one read of x
    (analysis.measure.fused); int32 counts are exact."""
    a = x.float().abs()
    rows = tuple(range(a.dim() - 1))
    below = torch.stack([(a <= e).sum(rows, dtype=torch.int32) for e in eps])
    exact = (a == 0).sum(dtype=torch.int32)
    top = a.amax(-1, keepdim=True)  # the rule as defined: |a| <= p * max|a| (no division per element)
    rel = torch.stack([(a <= q * top).sum(dtype=torch.int32) for q in p])
    return below, exact, rel


class SparsityReducer:
    sites = ()

    def __init__(self, n_layers: int, d_mlp: int, extra_eps: tuple = ()) -> None:
        self.eps = tuple(sorted(set(EPS_GRID) | {float(e) for e in extra_eps}))
        self.p = P_GRID
        self.n_layers = n_layers
        self.near = torch.zeros(len(self.eps), n_layers, dtype=torch.float64)
        self.rel = torch.zeros(len(self.p), n_layers, dtype=torch.float64)
        self.exact = torch.zeros(n_layers, dtype=torch.float64)
        self.fire = torch.zeros(len(self.eps), n_layers, d_mlp, dtype=torch.float64)
        self.positions = 0

    def hooks(self, model, first_repr):
        """In-hook counting (the documented exception to the reducer protocol): the MLP
        activation [B, T, d_mlp] is reduced as it passes and never kept."""
        return [(hooks.mlp_post(l), self._hook(l, first_repr)) for l in range(self.n_layers)]

    def _hook(self, layer: int, first_repr: int):
        def hook(tensor, hook):
            self._fold(layer, tensor.detach()[:, first_repr:])
            return tensor
        return hook

    def _fold(self, layer: int, a: torch.Tensor) -> None:
        """Add one batch's counts of activations a [..., d_mlp] to layer `layer`."""
        below, exact, rel = threshold_counts(a, self.eps, self.p)
        n = a.numel() // a.shape[-1]
        below = below.double().cpu()  # [eps, d_mlp]
        self.near[:, layer] += below.sum(1)
        self.fire[:, layer] += n - below
        self.exact[layer] += float(exact)
        self.rel[:, layer] += rel.double().cpu()
        if layer == 0:
            self.positions += n

    def update(self, model, batch) -> None:
        pass

    def result(self) -> SparsityResult:
        n = max(1, self.positions)
        d_mlp = self.fire.shape[2]
        return SparsityResult(
            eps_grid=np.array(self.eps), p_grid=np.array(self.p),
            frac_near_zero_grid=(self.near / (n * d_mlp)).numpy(),
            frac_relative_grid=(self.rel / (n * d_mlp)).numpy(),
            frac_exact_zero=(self.exact / (n * d_mlp)).numpy(),
            firing_frequency_grid=(self.fire / n).numpy(),
            n_positions=self.positions,
        )


def token_density(model, window: torch.Tensor, eps: float) -> np.ndarray:
    """Fraction of |a| > eps per token and layer [T, L] for one window (one short forward)."""
    names = [hooks.mlp_post(l) for l in range(model.n_layers)]
    density = lambda a: (a.detach()[0].abs() > eps).float().mean(-1).cpu()
    with model.lock, torch.inference_mode(), hooks.capture(model, names, keep=density) as got:
        model.bridge(window.view(1, -1).to(model.device), return_type=None)
        return torch.stack([got[n] for n in names], dim=1).numpy()
