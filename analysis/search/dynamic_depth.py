"""The per-sequence dynamic-depth oracle of Glavas et al. (arXiv 2410.20022), exactly as
DESIGN.md section 3 defines it.

Each evaluation window is a group. A configuration c has a weight w_c, the number of
blocks it runs, and a value per window, NLL_c(window), the window's mean next-token NLL
with c applied. Two families, solved separately:

- early exit: stop after block d (the logit-lens readout of h_d, final norm applied
  afresh), d = 1..L, weight d; depth L is the full model;
- layer skipping: remove a set of blocks, weight L - |set|: every prefix of the
  iterative greedy order (the empty prefix is the full model), the best contiguous
  block of n layers for every n, and skip-every-p-th patterns (blocks p-1, 2p-1, ...).

The oracle picks one configuration per window to minimise the mean weight subject to
mean NLL over windows <= the full model's mean NLL + tolerance: a multiple-choice
knapsack, solved exactly by dynamic programming over integer block budgets
(`min_total_weight`). The paper reports 23.3% of blocks for skipping on OPT-1.3B, but
measures ROUGE of generated text, not NLL; the numbers are not the same metric.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from analysis.measure.collect import batch_tokens_for, batches, token_nll
from analysis.model.hooks import readout
from analysis.ablate.replay import clean_states
from analysis.core.store import Record

PAPER_SKIP_FRACTION = 0.233
PAPER_NOTE = ("Glavas et al. (arXiv 2410.20022) report that an oracle choosing layer skips per sequence needs "
              "23.3% of OPT-1.3B's blocks on average to match the full model. Their metric is ROUGE of generated "
              "text; here it is the teacher-forced mean next-token NLL of each window, so the numbers are "
              "comparable in spirit only.")
SLACK = 1e-7  # per-window NLL rounding allowance in the budget comparison (nats)


def skip_patterns(n_layers: int) -> list[frozenset]:
    """Skip every p-th block (blocks p-1, 2p-1, ...) for p = 2..L: L-1 sets."""
    return [frozenset(range(p - 1, n_layers, p)) for p in range(2, n_layers + 1)]


def min_total_weight(weights, values: np.ndarray, budget: float) -> tuple[int, np.ndarray] | None:
    """Exact multiple-choice knapsack: choose one configuration per group (row of
    `values` [G, C]) with integer `weights` [C] so that the sum of chosen values is
    <= `budget` and the sum of weights is smallest. Returns (total weight, chosen
    configuration per group) or None when no choice meets the budget.

    DP over budgets B = 0..G*max(w): f_g(B) = least value sum of the first g groups with
    total weight <= B. Per group only the cheapest value at each distinct weight matters,
    so a step costs (distinct weights) vector minimums. Ties go to the lower configuration
    index."""
    w = np.asarray(weights, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    G, C = v.shape
    if G == 0:
        return 0, np.zeros(0, dtype=np.int64)
    distinct = np.unique(w)
    # per group and distinct weight: the cheapest configuration (lowest index on ties)
    best_cfg = np.empty((G, len(distinct)), dtype=np.int64)
    for j, weight in enumerate(distinct):
        idx = np.flatnonzero(w == weight)
        best_cfg[:, j] = idx[np.argmin(v[:, idx], axis=1)]
    best_val = np.take_along_axis(v, best_cfg, axis=1)
    top, wmax = int(G * distinct.max()), int(distinct.max())
    f = np.zeros(top + 1)  # no groups yet: value 0 at every budget
    padded = np.full(wmax + top + 1, np.inf)
    rows = wmax - distinct  # padded[rows[j] + B] = f[B - distinct[j]] (inf below 0)
    choice = np.empty((G, top + 1), dtype=np.int64)
    for g in range(G):
        padded[wmax:] = f
        shifted = np.lib.stride_tricks.sliding_window_view(padded, top + 1)[rows] + best_val[g][:, None]
        choice[g] = np.argmin(shifted, axis=0)  # ties: the lowest weight
        f = shifted[choice[g], np.arange(top + 1)]
    feasible = np.flatnonzero(f <= budget + SLACK * G)
    if feasible.size == 0:
        return None
    total = int(feasible[0])
    chosen, remaining = np.empty(G, dtype=np.int64), total
    for g in range(G - 1, -1, -1):
        j = choice[g, remaining]
        chosen[g] = best_cfg[g, j]
        remaining -= int(distinct[j])
    return int(w[chosen].sum()), chosen


def exit_nll(model, windows: torch.Tensor, batch_tokens: int | None = None) -> np.ndarray:
    """[W, L]: each window's mean next-token NLL of the readout after block d (column
    d-1), d = 1..L; the last column is the full model's."""
    L, rows = model.n_layers, []
    for _, chunk in batches(windows, batch_tokens or batch_tokens_for(model)):
        chunk = chunk.to(model.device)
        with model.lock:
            clean = clean_states(model, chunk)
        with torch.inference_mode():
            cols = [token_nll(readout(model, clean.resid[d]), chunk).double().mean(1) for d in range(1, L + 1)]
        rows.append(torch.stack(cols, 1).cpu().numpy())
        del clean
    return np.concatenate(rows)


@dataclass(frozen=True)
class OracleResult(Record):
    """One family's oracle: the smallest mean fraction of blocks, and per window the
    configuration chosen, its fraction of blocks and its mean NLL."""

    family: str  # "skipping" or "early_exit"
    mean_fraction: float | None  # None when even the full model misses the budget (cannot happen at tol >= 0)
    window_fraction: list  # per window: blocks run / L
    window_config: list  # per window: the chosen configuration's label
    window_nll: list
    mean_nll: float | None
    n_configs: int


@dataclass(frozen=True)
class DynamicDepth(Record):
    """Both oracles over the evaluation windows, at tolerance `tolerance` nats."""

    tolerance: float
    full_mean_nll: float
    n_windows: int
    n_layers: int
    skipping: OracleResult
    early_exit: OracleResult
    paper_skip_fraction: float
    note: str

    NESTED = {"skipping": OracleResult, "early_exit": OracleResult}


def solve(family: str, labels: list, weights: list, values: np.ndarray, full: np.ndarray, n_layers: int,
          tolerance: float) -> OracleResult:
    """The oracle over configurations (labels, weights [C], values [W, C]); `full` [W]."""
    budget = float(full.sum()) + tolerance * len(full)
    found = min_total_weight(weights, values, budget)
    if found is None:
        return OracleResult(family, None, [], [], [], None, len(labels))
    total, chosen = found
    rows = np.arange(len(chosen))
    picked = values[rows, chosen]
    return OracleResult(family, total / (len(chosen) * n_layers), [weights[c] / n_layers for c in chosen],
                        [labels[c] for c in chosen], picked.tolist(), float(picked.mean()), len(labels))


def dynamic_depth(skip_sets: list, skip_values: np.ndarray, exit_values: np.ndarray, full: np.ndarray,
                  n_layers: int, tolerance: float = 0.0) -> DynamicDepth:
    """Both oracles. skip_sets: frozensets of skipped blocks with values [W, len(skip_sets)];
    exit_values [W, L] (exit_nll); full [W] the full model's per-window mean NLL."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError("the tolerance must be a finite number of nats >= 0")
    L = n_layers
    skip_labels = ["skip " + (",".join(map(str, sorted(s))) or "none") for s in skip_sets]
    skipping = solve("skipping", skip_labels, [L - len(s) for s in skip_sets], skip_values, full, L, tolerance)
    exits = solve("early_exit", [f"exit after block {d - 1}" for d in range(1, L + 1)], list(range(1, L + 1)),
                  exit_values, full, L, tolerance)
    return DynamicDepth(tolerance, float(full.mean()), len(full), L, skipping, exits, PAPER_SKIP_FRACTION, PAPER_NOTE)
