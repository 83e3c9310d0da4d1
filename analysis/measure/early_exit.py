"""Early exit from the logit lens (DESIGN.md section 3).

A token's oracle exit depth is the first block whose logit-lens top-1 equals the final
top-1. A confidence rule with threshold t exits at the first block where the rule
passes (or the last block). For a grid of thresholds per rule we accumulate the
fraction of blocks used, the agreement with the full model, the cross-entropy at the
exit and the histogram of exit blocks. Teacher-forced numbers are optimistic: later
tokens still attend to full-depth keys and values of earlier positions, which a real
early-exiting model would not have.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.store import Record

OPTIMISM_NOTE = (
    "Teacher-forced: every position still attends to keys and values computed at full "
    "depth for earlier positions, which a model that really exits early would not have. "
    "Real early exit does worse than these curves."
)



def _grid(*parts) -> np.ndarray:
    return np.unique(np.round(np.concatenate([np.ravel(p) for p in parts]), 8))


# Within 1e-6 of certainty: a logit-lens readout is often confidently wrong at early
# blocks, so agreement with the full model only rises for thresholds very close to 1
# (max probability, top-2 gap, cosine) or 0 (entropy); the grids are dense there.
_STEPS = np.array([m * 10.0 ** e for e in range(-6, 1) for m in (1, 1.5, 2, 3, 5, 7)])  # 1e-6 .. 7
_NEAR_ONE = 1 - _STEPS[_STEPS <= 0.05]  # 0.95, 0.97, 0.98, 0.985, 0.99, ... 0.999999

# rule -> (signal, direction, thresholds). A rule passes when signal >= t ('ge') or <= t ('le').
RULES = {
    "max_prob": ("maxprob", "ge", _grid(np.linspace(0.05, 0.9, 35), _NEAR_ONE, 1.0)),
    "top2_gap": ("gap", "ge", _grid(np.linspace(0.0, 0.9, 37), _NEAR_ONE, 1.0)),
    "entropy": ("entropy", "le", _grid(0.0, _STEPS, 8.0)),
    "cosine": ("cos_next", "ge", _grid(np.linspace(0.5, 0.9, 33), _NEAR_ONE, 1.0)),
}


@dataclass(frozen=True)
class ExitCurve(Record):
    """One confidence rule over its threshold grid: for each threshold the mean fraction
    of blocks used, agreement with the full model's top-1, change in cross-entropy, and
    the histogram of exit blocks ([thresholds, L])."""

    signal: str
    direction: str  # 'ge': passes when signal >= t; 'le': when signal <= t
    thresholds: list
    fraction_blocks: list
    agreement: list
    delta_ce: list
    exit_hist: list


@dataclass(frozen=True)
class ExitResult(Record):
    """The oracle exit (first block whose top-1 equals the final top-1) and every rule's curve."""

    oracle_exit_hist: list  # [L]: tokens whose oracle exit is after block l
    oracle_mean_fraction: float  # mean of (exit block + 1) / L
    curves: dict  # rule -> ExitCurve
    n_positions: int

    NESTED_MAPS = {"curves": ExitCurve}


def exit_layers(passes: torch.Tensor) -> torch.Tensor:
    """passes [n, L, k] bool -> first passing block per token and threshold [n, k];
    the last block when none passes."""
    passes = passes.clone()
    passes[:, -1] = True
    return passes.float().argmax(dim=1)


class ExitAccumulator:
    def __init__(self, n_layers: int) -> None:
        self.L = n_layers
        self.n = 0
        self.oracle_hist = torch.zeros(n_layers, dtype=torch.float64)
        self.ce_final = 0.0
        self.curves = {r: {k: torch.zeros(len(t), dtype=torch.float64) for k in ("blocks", "agree", "ce")}
                       for r, (_, _, t) in RULES.items()}
        self.exit_hist = {r: torch.zeros(len(t), n_layers, dtype=torch.float64) for r, (_, _, t) in RULES.items()}

    def update(self, sig: dict) -> None:
        agree = sig["agree"].bool()
        n = agree.shape[0]
        oracle = exit_layers(agree.unsqueeze(-1)).squeeze(-1)
        self.oracle_hist += torch.bincount(oracle, minlength=self.L).double()
        self.ce_final += float(sig["ce"][:, -1].double().sum())
        for rule, (signal, direction, thresholds) in RULES.items():
            t = torch.tensor(thresholds, dtype=sig[signal].dtype)
            values = sig[signal].unsqueeze(-1)
            passes = values >= t if direction == "ge" else values <= t
            exits = exit_layers(passes)  # [n, k]
            acc = self.curves[rule]
            acc["blocks"] += (exits + 1).double().sum(0)
            acc["agree"] += agree.double().gather(1, exits).sum(0)
            acc["ce"] += sig["ce"].double().gather(1, exits).sum(0)
            self.exit_hist[rule].scatter_add_(1, exits.T, torch.ones(exits.T.shape, dtype=torch.float64))
        self.n += n

    def result(self) -> ExitResult:
        n = max(1, self.n)
        ce_final = self.ce_final / n
        curves = {}
        for rule, (signal, direction, thresholds) in RULES.items():
            acc = self.curves[rule]
            curves[rule] = ExitCurve(
                signal=signal,
                direction=direction,
                thresholds=[float(x) for x in thresholds],
                fraction_blocks=(acc["blocks"] / n / self.L).tolist(),
                agreement=(acc["agree"] / n).tolist(),
                delta_ce=(acc["ce"] / n - ce_final).tolist(),
                exit_hist=self.exit_hist[rule].tolist(),  # [threshold, block]: tokens exiting there
            )
        depths = np.arange(1, self.L + 1)
        hist = self.oracle_hist.numpy()
        return ExitResult(oracle_exit_hist=hist.tolist(), oracle_mean_fraction=float((hist * depths).sum() / n / self.L),
                          curves=curves, n_positions=self.n)


DEFAULT_AGREEMENT = 0.9  # the logit-lens page opens at the cheapest threshold reaching this agreement


def default_threshold(curve: ExitCurve, target_agreement: float = DEFAULT_AGREEMENT) -> float:
    """Where a user would start: the rule's operating point at `target_agreement` (the
    cheapest threshold whose agreement with the full model reaches it on the analysed
    windows); when none does, the threshold of highest agreement (the cheapest of ties)."""
    point = operating_point(curve, target_agreement)
    if point is not None:
        return point["threshold"]
    best = max(range(len(curve.thresholds)), key=lambda i: (curve.agreement[i], -curve.fraction_blocks[i]))
    return curve.thresholds[best]


def operating_point(curve: ExitCurve, target_agreement: float) -> dict | None:
    """Cheapest threshold whose agreement reaches the target, or None."""
    best = None
    for t, frac, agree, dce in zip(curve.thresholds, curve.fraction_blocks, curve.agreement, curve.delta_ce):
        if agree >= target_agreement and (best is None or frac < best["fraction_blocks"]):
            best = {"threshold": t, "fraction_blocks": frac, "agreement": agree, "delta_ce": dce}
    return best


def per_window_tolerance_exit(seq_mean_ce: np.ndarray, tolerance_pct: float) -> np.ndarray:
    """Per window on its own, the fewest blocks (early-exit depth 1..L) whose logit-lens
    perplexity on that window is within tolerance_pct % of the full model's on that
    window. Each window must meet its own bound: this is not the Glavas et al. oracle,
    which only bounds the mean NLL over all windows (search/dynamic_depth.py)."""
    ce = np.asarray(seq_mean_ce)
    limit = ce[:, -1:] + math.log1p(tolerance_pct / 100.0)
    ok = ce <= limit + 1e-12
    return ok.argmax(axis=1) + 1
