"""Compute (or load) the pruning curves and the dynamic-depth oracle for one model,
corpus and calibration/evaluation split, with progress and time left.

Order of work: the instrumented pass and the exact single-removal sweep over the
calibration windows (both cached, shared with the analysis pages and presets), the
iterative greedy order per kind (cached, seeded with the sweep as its first step), then
every distinct removal set on the evaluation windows (and the deterministic ones on the
calibration windows) with `curves.window_nll`, the early-exit readouts of the evaluation
windows, and the oracle. The result is cached on disk under the model fingerprint, both
corpora, the split, the settings and the schema version.
"""
from __future__ import annotations

import math
import time

import numpy as np

from analysis.core.results import Result
from analysis.core import store
from analysis.data.evaluation import Split, split_windows_of
from analysis.measure.pipeline import analyse
from analysis.search import curves as cv
from analysis.model.removal import Removal
from analysis.search.dynamic_depth import dynamic_depth, exit_nll, skip_patterns
from analysis.search.greedy import greedy_order
from analysis.ablate.sweep import removal_cost, with_eta
from analysis.measure.collect import batch_tokens_for


CURVES = Result("curves", cv.SCHEMA_VERSION, cv.PruningCurves, lane="sweep")


def curves_key(model, split: Split, seq_len: int, max_windows, seeds: int, tolerance: float, kinds,
               k_max: int | None = None) -> str:
    """The cache key of a run; the kinds in their canonical order (`--kinds mlp,blocks` is
    the run of blocks and mlp), k_max only when below L-1."""
    extra = {} if k_max is None or k_max >= model.n_layers - 1 else {"k_max": int(k_max)}
    kinds = [k for k in cv.KINDS if k in set(kinds)]
    return store.make_key(fingerprint=model.fingerprint, split=split.info(), seq_len=seq_len, max_windows=max_windows,
                          seeds=seeds, tolerance=tolerance, kinds=kinds, schema=cv.SCHEMA_VERSION, **extra)


def covering_keys(model, split: Split, seq_len: int, max_windows, seeds: int, tolerance: float, kinds,
                  k_max: int | None = None) -> list[str]:
    """The keys of every run whose curves include those of `kinds` up to `k_max`: the run
    itself first, then runs of more kinds or a larger k_max (fewest extra kinds, then
    smallest k_max, first). The windows, seeds and tolerance are the same in all."""
    wanted = set(kinds)
    L = model.n_layers
    k_low = L - 1 if k_max is None else min(int(k_max), L - 1)
    supersets = sorted((s for s in _subsets(cv.KINDS) if wanted <= set(s)), key=len)
    return [curves_key(model, split, seq_len, max_windows, seeds, tolerance, s, k)
            for s in supersets for k in range(k_low, L)]


def _subsets(items) -> list[tuple]:
    return [tuple(x for i, x in enumerate(items) if mask >> i & 1) for mask in range(1, 1 << len(items))]


def cached_curves(model, split: Split, seq_len: int, max_windows, *, seeds: int = cv.DEFAULT_SEEDS,
                  tolerance: float = 0.0, kinds=cv.KINDS):
    return CURVES.load(curves_key(model, split, seq_len, max_windows, seeds, tolerance, kinds))


def pruning_curves(model, split: Split, seq_len: int, max_windows: int | None = None, *,
                   seeds: int = cv.DEFAULT_SEEDS, tolerance: float = 0.0, kinds=cv.KINDS, progress=None,
                   use_cache: bool = True, eta: bool = True, k_max: int | None = None) -> cv.PruningCurves:
    """Every curve for k = 1..k_max (default L-1), the greedy orders and the oracle
    (cached on disk). With eta=False progress messages carry no time estimate (a
    background job adds its own)."""
    if not split.available:
        raise ValueError(f"pruning curves need evaluation windows: {split.notice}")
    if seeds < 5:
        raise ValueError("the random baseline needs at least 5 seeds")
    if unknown := set(kinds) - set(cv.KINDS):
        raise ValueError(f"unknown kinds {sorted(unknown)}; choose from {', '.join(cv.KINDS)}")
    if k_max is not None and not 1 <= k_max <= model.n_layers - 1:
        raise ValueError(f"k_max must be 1..{model.n_layers - 1} (the model has {model.n_layers} layers)")
    key = curves_key(model, split, seq_len, max_windows, seeds, tolerance, kinds, k_max)
    return CURVES.cached(key, lambda: _compute(model, split, seq_len, max_windows, seeds, tolerance, kinds, progress,
                                               eta, k_max), use_cache)


RUN_OVERHEAD_TOKENS = 128  # what a forward of one batch costs beyond its tokens (see run_cost)


def run_cost(model, n_windows: int, seq_len: int, batch_tokens: int | None = None) -> float:
    """The cost of one full forward of `n_windows` windows, in tokens: each batch (of the
    memory budget's size) costs its tokens plus a fixed RUN_OVERHEAD_TOKENS. On the
    default model on the 2-core CPU (load about 10), 4 removals of `window_nll` took
    21.8 s on 1 window of 16 tokens, 24.1 s on 4 and 44.4 s on 16 (215 tokens' worth
    of fixed cost per batch), and in a second run 31 s on 1 window and 67 s on 4 (25
    tokens' worth): noisy, but far from proportional to the windows. Counting windows
    alone made the evaluation of 1 window 4x cheaper than the calibration of 4 (seq_len
    16, max_windows 5), so the time left during the earlier phases was too short."""
    per_batch = max(1, (batch_tokens or batch_tokens_for(model)) // seq_len)
    return math.ceil(n_windows / per_batch) * RUN_OVERHEAD_TOKENS + n_windows * seq_len


class _Phases:
    """Global progress over phases of known relative cost (in tokens, see `run_cost`)."""

    def __init__(self, progress, weights: dict, eta: bool = True) -> None:
        self.progress = with_eta(progress) if progress and eta else progress
        self.weights, self.done = weights, 0.0
        self.total = sum(weights.values())

    def part(self, name: str):
        start, weight = self.done, self.weights[name]
        self.done += weight

        def update(frac: float, message: str) -> None:
            if self.progress:
                self.progress(min(1.0, (start + weight * min(1.0, frac)) / self.total), message)
        return update


def _compute(model, split: Split, seq_len: int, max_windows, seeds: int, tolerance: float, kinds, progress,
             eta: bool = True, k_max: int | None = None):
    """The whole curves computation: the analysis and sweep on the calibration windows,
    the greedy orders, every selection's evaluation, the dynamic-depth oracle. Long
    because its phases share one progress budget (run_cost weights) and one Eta."""
    started = time.monotonic()
    L = model.n_layers
    corpus, part = split.corpus, split.calibration_part
    calib, evals = split_windows_of(model, split, seq_len, max_windows)
    Wc, We = calib.shape[0], evals.shape[0]
    k_max = L - 1 if k_max is None else k_max
    greedy_steps = sum(L - s for s in range(1, k_max))
    n_sets = len(kinds) * 6 * k_max + seeds * len(kinds) * k_max + 2 * L
    cal, ev = run_cost(model, Wc, seq_len), run_cost(model, We, seq_len)
    phases = _Phases(progress, {"analysis": cal, "sweep": 3 * L * 0.6 * cal + 3 * cal,
                                **{f"greedy {k}": greedy_steps * 0.4 * cal for k in kinds},
                                "calibration": len(kinds) * 4 * k_max * 0.6 * cal, "evaluation": n_sets * 0.6 * ev,
                                "exits": 2 * ev}, eta)
    analysis = analyse(model, corpus, seq_len, max_windows=max_windows, with_lens=False, part=part,
                       progress=phases.part("analysis"))
    cost = removal_cost(model, corpus, seq_len, max_windows=max_windows, part=part, progress=phases.part("sweep"),
                        eta=False)  # one time left, the whole run's (_Phases)
    n_tokens = Wc * (calib.shape[1] - 1)
    chosen, greedy, rand = {}, {}, {}
    for kind in kinds:
        initial = [math.log(p) * n_tokens for p in cost.ppl(kind)]
        result = greedy_order(model, corpus, seq_len, max_windows, part, kind, k_max, initial=initial,
                              progress=phases.part(f"greedy {kind}"))
        greedy[kind] = {"order": result.order[:k_max], "calib_ppl": result.perplexities()[:k_max],
                        "batches_measured": result.batches_measured, "batches_naive": result.batches_naive,
                        "batches_bounded": result.batches_bounded, "suffix_blocks": result.suffix_blocks,
                        "suffix_blocks_restart": result.suffix_blocks_restart}
        chosen[kind] = cv.selections(kind, L, k_max, similarity=analysis.similarity, sublayers=analysis.sublayers,
                                     removal_cost=cost, greedy_order=result.order)
        rand[kind] = cv.random_orders(L, seeds)
    calib_sets = {r for kind in kinds for m, rs in chosen[kind].items() if m != "iterative_greedy" for r in rs}
    calib_sets = sorted(calib_sets, key=_order)
    full_c, values_c = cv.window_nll(model, calib, calib_sets, phases.part("calibration"))
    calib_of = {r: cv.ppl(values_c[:, i]) for i, r in enumerate(calib_sets)}
    for kind in kinds:
        calib_of.update({Removal.of(**{kind: greedy[kind]["order"][:k]}): p
                         for k, p in enumerate(greedy[kind]["calib_ppl"], start=1)})
    skip_sets = _skip_sets(L, greedy.get("blocks", {}).get("order", []), chosen.get("blocks", {}))
    eval_sets = {r for kind in kinds for rs in chosen[kind].values() for r in rs}
    eval_sets |= {Removal.of(**{kind: o[:k]}) for kind in kinds for o in rand[kind] for k in range(1, k_max + 1)}
    eval_sets |= {Removal.of(blocks=s) for s in skip_sets if s}
    eval_sets = sorted(eval_sets, key=_order)
    full_e, values_e = cv.window_nll(model, evals, eval_sets, phases.part("evaluation"))
    eval_of = {r: values_e[:, i] for i, r in enumerate(eval_sets)}
    column = {r: i for i, r in enumerate(eval_sets)}
    exit_values = exit_nll(model, evals)
    phases.part("exits")(1.0, "Early-exit readouts of the evaluation windows")
    skip_values = np.stack([full_e if not s else values_e[:, column[Removal.of(blocks=s)]] for s in skip_sets], 1)
    fraction_of = cv.fraction_function(model, seq_len)
    curves = {}
    for kind in kinds:
        curves |= cv.build_curves(kind, k_max, chosen[kind], rand[kind], eval_of, calib_of, fraction_of)
    split_info = split.info(Wc, We) | {"n_evaluation_tokens": int(We * (evals.shape[1] - 1))}
    return cv.PruningCurves(
        schema_version=cv.SCHEMA_VERSION,
        model={"name": model.name, "n_layers": L, "fingerprint": model.fingerprint},
        corpus={"id": corpus.corpus_id, "sha256": corpus.sha256, "seq_len": seq_len, "max_windows": max_windows},
        split=split_info, full_ppl={"calibration": cv.ppl(full_c), "evaluation": cv.ppl(full_e)}, seeds=seeds,
        curves=curves, greedy=greedy,
        depth_inputs={"skip_sets": [sorted(s) for s in skip_sets], "skip_values": skip_values.tolist(),
                      "exit_values": exit_values.tolist(), "full": full_e.tolist()},
        dynamic_depth=dynamic_depth(skip_sets, skip_values, exit_values, full_e, L, tolerance),
        seconds=time.monotonic() - started)


def _order(removal: Removal):
    return tuple((k, tuple(sorted(getattr(removal, k)))) for k in ("blocks", "attn", "mlp"))


def _skip_sets(n_layers: int, greedy_blocks: list, block_choices: dict) -> list[frozenset]:
    """Skipping configurations: every prefix of the greedy block order (from the empty
    set), the best contiguous block for every n, skip-every-p-th patterns; distinct."""
    sets = [frozenset(greedy_blocks[:k]) for k in range(len(greedy_blocks) + 1)]
    sets += [frozenset(r.blocks) for r in block_choices.get("best_contiguous_block", [])]
    sets += skip_patterns(n_layers)
    return list(dict.fromkeys(s for s in sets if len(s) < n_layers))


def recompute_depth(curves: cv.PruningCurves, tolerance: float):
    """The oracle at another tolerance from the stored per-window values (no model run)."""
    inputs = curves.depth_inputs
    return dynamic_depth([frozenset(s) for s in inputs["skip_sets"]], np.asarray(inputs["skip_values"], dtype=float),
                         np.asarray(inputs["exit_values"], dtype=float), np.asarray(inputs["full"], dtype=float),
                         curves.model["n_layers"], tolerance)

