"""Pruning curves (DESIGN.md section 3): which selection method keeps perplexity lowest
as more and more is removed, judged on windows the methods never saw.

For k = 1..L-1 removed blocks (and, separately, attention-only and MLP-only removal) each
method picks k components on the calibration windows; the curve is the perplexity of
those k on the evaluation windows (and, for the deterministic methods, on the
calibration windows, to show how optimistic in-sample numbers are). Methods:

- lowest_block_influence (blocks) / lowest_redundancy (sublayers: the LLM-Drop score):
  the k lowest scores of the instrumented pass over the calibration windows;
- best_contiguous_block (blocks): Gromov et al.'s best run of k blocks (angular distance);
- reverse_order: layers L-1-k .. L-2, the last k before the final one;
- cheapest_single: the k cheapest single removals of that kind, from one exact sweep;
- iterative_greedy: `greedy.iterative_greedy` (exact, re-measured every step);
- random: a random order per seed (>= 5 seeds); the curve is the lower median over seeds
  (always one seed's actual set, so a point can be opened), with the 10-90% band.

Every distinct removal set is evaluated once per window set with `window_nll`: one clean
pass per batch, then each set restarts from its first changed layer. The same per-window
numbers feed the dynamic-depth oracle (`dynamic_depth.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.kinds import KINDS, Kind
from analysis.core import store
from analysis.search import presets
from analysis.model.removal import Removal
from analysis.ablate.replay import removal_nll
from analysis.ablate.costs import component_costs, removed_fractions
from analysis.search.dynamic_depth import DynamicDepth
from analysis.plans.schema import evaluation_section, make_plan

SCHEMA_VERSION = 2  # 2: each point keeps its per-window evaluation NLL (intervals)
KIND_TITLES = {"blocks": "whole blocks", "attn": "attention sublayers only", "mlp": "MLP sublayers only"}
BLOCK_METHODS = ("lowest_block_influence", "best_contiguous_block", "reverse_order", "cheapest_single",
                 "iterative_greedy", "random")
SUBLAYER_METHODS = ("lowest_redundancy", "reverse_order", "cheapest_single", "iterative_greedy", "random")
DEFAULT_SEEDS = 5
BAND = (10, 90)


def methods_for(kind: Kind) -> tuple:
    return BLOCK_METHODS if kind == "blocks" else SUBLAYER_METHODS


def random_orders(n_layers: int, seeds: int) -> list[list[int]]:
    """One random permutation of the layers per seed (numpy default_rng(seed))."""
    return [np.random.default_rng(seed).permutation(n_layers).tolist() for seed in range(seeds)]


def selections(kind: Kind, n_layers: int, k_max: int, *, similarity=None, sublayers=None, removal_cost=None,
               greedy_order=None) -> dict:
    """method -> [Removal for k = 1..k_max] for every deterministic method of `kind`."""
    L, ks = n_layers, range(1, k_max + 1)
    of = lambda layers: Removal.of(**{kind: layers})
    out = {"reverse_order": [of(range(L - 1 - k, L - 1)) for k in ks]}
    if kind == "blocks":
        for method in ("lowest_block_influence", "best_contiguous_block"):
            out[method] = [presets.suggest(method, k, L, similarity=similarity) for k in ks]
    else:
        method = "redundant_attention" if kind == "attn" else "redundant_mlp"
        out["lowest_redundancy"] = [presets.suggest(method, k, L, sublayers=sublayers) for k in ks]
    ranking = np.argsort(np.asarray(removal_cost.ppl(kind), dtype=float), kind="stable").tolist()
    out["cheapest_single"] = [of(ranking[:k]) for k in ks]
    out["iterative_greedy"] = [of(greedy_order[:k]) for k in ks]
    return {m: out[m] for m in methods_for(kind) if m in out}


def window_nll(model, windows: torch.Tensor, removals: list, progress=None,
               batch_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(full [W], per removal [W, n]): each window's mean next-token NLL, from one clean
    pass per batch with every removal restarting from its first changed layer (batches
    from the memory budget unless `batch_tokens` is given)."""
    W = windows.shape[0]
    values = np.zeros((W, len(removals)))
    full = np.zeros(W)
    total, done = max(1, W * len(removals)), 0

    def keep(i, offset, nll):
        target = full if i < 0 else values[:, i]
        target[offset:offset + nll.shape[0]] = nll.double().mean(1).cpu().numpy()

    def step(i, n):
        nonlocal done
        done += n
        if progress:
            progress(done / total, f"{done}/{total} window-removals")

    removal_nll(model, windows, removals, batch_tokens=batch_tokens, on_tokens=keep, on_removal=step)
    return full, values


def ppl(per_window) -> float:
    """exp(mean per-window mean NLL): the corpus perplexity, windows being equally long."""
    return math.exp(float(np.mean(per_window)))


@dataclass(frozen=True)
class Curve(store.Record):
    """One method's curve for one kind: per k, the removed layers, the fraction of the
    model's parameters they hold, and the perplexity on evaluation (and calibration)
    windows. Random: the lower median over seeds, with `band_low`/`band_high`.
    `eval_window_nll` [k][W]: each evaluation window's mean NLL at that point (the
    perplexity is exp of their mean; the page's intervals come from them)."""

    kind: Kind
    method: str
    k: list
    removed: list
    param_fraction: list
    eval_ppl: list
    calib_ppl: list | None
    band_low: list | None = None
    band_high: list | None = None
    eval_window_nll: list | None = None

    def removal(self, k: int) -> Removal:
        return Removal.of(**{self.kind: self.removed[self.k.index(k)]})


@dataclass(frozen=True)
class PruningCurves(store.Record):
    """Every curve of every kind, the greedy orders, and the dynamic-depth oracle."""

    schema_version: int
    model: dict  # name, n_layers, fingerprint
    corpus: dict  # id, sha256, seq_len, max_windows
    split: dict  # evaluation.Split.info(...)
    full_ppl: dict  # {"calibration": ..., "evaluation": ...}
    seeds: int
    curves: dict  # "kind/method" -> Curve
    greedy: dict  # kind -> {order, calib_ppl, batches_measured, batches_naive, batches_bounded, suffix_blocks, ...}
    depth_inputs: dict  # skip_sets, skip_values [W][C], exit_values [W][L], full [W] (evaluation windows)
    dynamic_depth: DynamicDepth
    seconds: float

    NESTED = {"dynamic_depth": DynamicDepth}
    NESTED_MAPS = {"curves": Curve}

    @classmethod
    def from_dict(cls, data: dict) -> "PruningCurves":
        store.require_version(data, SCHEMA_VERSION, "Pruning-curves")
        return super().from_dict(data)

    def curve(self, kind: Kind, method: str) -> Curve:
        return self.curves[f"{kind}/{method}"]

    def kinds(self) -> list[str]:
        return [k for k in KINDS if any(key.startswith(k + "/") for key in self.curves)]

    def winners(self, kind: Kind, k: int) -> list[dict]:
        """Methods at k removed, lowest evaluation perplexity first (random excluded)."""
        rows = [{"method": c.method, "eval_ppl": c.eval_ppl[c.k.index(k)],
                 "calib_ppl": c.calib_ppl[c.k.index(k)] if c.calib_ppl else None,
                 "removed": c.removed[c.k.index(k)]}
                for key, c in self.curves.items() if c.kind == kind and c.method != "random" and k in c.k]
        return sorted(rows, key=lambda r: (r["eval_ppl"], r["method"]))


def build_curves(kind: Kind, k_max: int, chosen: dict, rand_orders: list, eval_of: dict, calib_of: dict,
                 fraction_of) -> dict:
    """Curve records of one kind from the evaluated removals (eval_of: Removal -> per-window
    evaluation NLL [W]; calib_of: Removal -> calibration perplexity)."""
    ks = list(range(1, k_max + 1))
    windows = lambda removals: [np.asarray(eval_of[r], dtype=float).tolist() for r in removals]
    out = {}
    for method, removals in chosen.items():
        out[f"{kind}/{method}"] = Curve(
            kind, method, ks, [sorted(getattr(r, kind)) for r in removals], [fraction_of(r) for r in removals],
            [ppl(eval_of[r]) for r in removals], [calib_of.get(r) for r in removals],
            eval_window_nll=windows(removals))
    if rand_orders:
        median, low, high, picked = [], [], [], []
        for k in ks:
            sets = [Removal.of(**{kind: order[:k]}) for order in rand_orders]
            values = np.array([ppl(eval_of[r]) for r in sets])
            pick = int(np.argsort(values, kind="stable")[(len(values) - 1) // 2])
            median.append(float(values[pick]))
            picked.append(sets[pick])
            lo, hi = np.percentile(values, BAND)
            low.append(float(lo))
            high.append(float(hi))
        removed = [sorted(getattr(r, kind)) for r in picked]
        out[f"{kind}/random"] = Curve(kind, "random", ks, removed, [fraction_of(r) for r in picked], median, None,
                                      low, high, windows(picked))
    return out


def fraction_function(model, seq_len: int):
    costs = component_costs(model, seq_len)
    return lambda removal: removed_fractions(costs, removal)[0]


def point_plan(model, result: PruningCurves, kind: Kind, method: str, k: int):
    """The pruning plan of one curve point: its removal, how it was chosen, and its
    perplexity on the evaluation windows (with the calibration windows' next to it)."""

    curve = result.curve(kind, method)
    i = curve.k.index(k)
    split = result.split
    calibration = None
    if curve.calib_ppl and curve.calib_ppl[i] is not None:
        calibration = {"corpus_sha256": split["calibration_corpus_sha256"], "n_windows": split["n_calibration_windows"],
                       "perplexity_full": result.full_ppl["calibration"], "perplexity_pruned": curve.calib_ppl[i]}
    evaluation = evaluation_section(
        corpus_sha256=split["evaluation_corpus_sha256"], seq_len=result.corpus["seq_len"],
        perplexity_full=result.full_ppl["evaluation"], perplexity_pruned=curve.eval_ppl[i],
        n_windows=split["n_evaluation_windows"], windows="evaluation", eval_spec=split["eval"], calibration=calibration)
    parameters = {"k": k, "kind": kind, "corpus": result.corpus["id"], "seq_len": result.corpus["seq_len"],
                  "max_windows": result.corpus["max_windows"], "eval": split["eval"]}
    if method == "random":
        parameters["seeds"] = result.seeds
    return make_plan(model, curve.removal(k), method, parameters, evaluation)
