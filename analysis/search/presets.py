"""Suggested removals ("presets"): pure functions from analysis results to a Removal.

- lowest_block_influence: the k blocks with the lowest ShortGPT Block Influence
  BI_l = 1 - mean cos(h_l, h_{l+1}) (similarity `cos_all`).
- best_contiguous_block: Gromov et al.'s best block of n = k consecutive layers, the
  start l minimising the last-token angular distance d_l(k) (similarity `ang_last`).
- redundant_attention: the k attention sublayers with the lowest LLM-Drop score
  1 - mean cos(resid_pre, resid_mid) (sublayers `attn_score`).
- redundant_mlp: the k MLP sublayers with the lowest score 1 - mean cos(resid_mid,
  resid_post) (sublayers `mlp_score`).
- cheapest_measured: the k cheapest components by measured single-removal perplexity
  (RemovalCost.components(), any kind), skipping sublayers of blocks already removed.
- reverse_order: the last k blocks before the final one (L-1-k .. L-2), the
  "prune from the top" baseline.
- iterative_greedy: the first k blocks of the exact iterative greedy order
  (`greedy.iterative_greedy`: each step removes the block whose removal, on top of the
  ones already removed, costs the least calibration perplexity).

Inputs are the typed result sections (SimilarityResult, SublayerResult, RemovalCost);
a missing one is a clear ValueError. Ties go to the lower layer index.
"""
from __future__ import annotations

import numpy as np

from analysis.model.removal import Removal
from analysis.ablate.sweep import RemovalCost
from analysis.measure.similarity import SimilarityResult, best_blocks, block_influence
from analysis.measure.sublayers import SublayerResult

METHODS = ("lowest_block_influence", "best_contiguous_block", "redundant_attention", "redundant_mlp",
           "cheapest_measured", "reverse_order", "iterative_greedy")
DESCRIPTIONS = {
    "lowest_block_influence": "drop the k blocks with the lowest Block Influence (ShortGPT)",
    "best_contiguous_block": "drop the best contiguous block of k layers by angular distance (Gromov et al.)",
    "redundant_attention": "drop the k most redundant attention sublayers (LLM-Drop score)",
    "redundant_mlp": "drop the k most redundant MLP sublayers (LLM-Drop style score)",
    "cheapest_measured": "drop the k components whose single removal cost the least perplexity (measured)",
    "reverse_order": "drop the last k blocks before the final one",
    "iterative_greedy": "drop k blocks one at a time, each the cheapest given those already dropped (measured)",
}


def _array(value, name: str, method: str, needs: str, shape: tuple) -> np.ndarray:
    if value is None:
        raise ValueError(f"method {method!r} needs {needs} (run the instrumented pass first)")
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}: "
                         "the analysis is for a model with another number of layers")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains missing values; rerun the analysis")
    return arr


def _check_k(method: str, k: int, low: int, high: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, not {k!r}")
    if not low <= k <= high:
        raise ValueError(f"{method}: k = {k} is out of range; choose 0..{high} {what}")


def cheapest(rows: list[dict], k: int, n_layers: int) -> Removal:
    """Greedy: take components cheapest first until k distinct removals are chosen.

    A sublayer of a block already removed adds nothing and is skipped; a block chosen
    after one of its sublayers absorbs it; the last remaining block is never removed.
    """
    chosen = {"blocks": set(), "attn": set(), "mlp": set()}
    count = lambda: sum(len(v) for v in chosen.values())
    for row in rows:
        if count() >= k:
            break
        kind, layer = row["kind"], int(row["layer"])
        if not 0 <= layer < n_layers:
            raise ValueError(f"the removal costs are for another model (layer {layer} of {n_layers})")
        if kind == "blocks":
            if len(chosen["blocks"]) + 1 >= n_layers:
                continue
            chosen["blocks"].add(layer)
            chosen["attn"].discard(layer)
            chosen["mlp"].discard(layer)
        elif layer not in chosen["blocks"]:
            chosen[kind].add(layer)
    if count() < k:
        raise ValueError(f"cheapest_measured: only {count()} distinct components could be chosen, not {k}")
    return Removal.of(**chosen)


def suggest(method: str, k: int, n_layers: int, *, similarity: SimilarityResult | None = None,
            sublayers: SublayerResult | None = None, removal_cost: RemovalCost | None = None,
            greedy_order: list | None = None) -> Removal:
    """The removal that `method` suggests for k components of an n_layers-layer model
    (`greedy_order`: the iterative greedy block order, for iterative_greedy)."""
    L = int(n_layers)
    if L < 1:
        raise ValueError("n_layers must be positive")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("redundant_attention", "redundant_mlp"):
        _check_k(method, k, 0, L, "sublayers")
    elif method == "cheapest_measured":
        _check_k(method, k, 0, 2 * L, "components")
    else:
        _check_k(method, k, 0, L - 1, "blocks (at least one block must remain)")
    if k == 0:
        return Removal()
    if method == "lowest_block_influence":
        cos = _array(similarity and similarity.cos_all, "similarity.cos_all", method, "the layer similarity",
                     (L + 1, L + 1))
        bi = block_influence(cos)
        return Removal.of(blocks=np.argsort(bi, kind="stable")[:k].tolist())
    if method == "best_contiguous_block":
        ang = _array(similarity and similarity.ang_last, "similarity.ang_last", method, "the layer similarity",
                     (L + 1, L + 1))
        best = best_blocks(ang)[k - 1]
        return Removal.of(blocks=range(best["start"], best["start"] + k))
    if method in ("redundant_attention", "redundant_mlp"):
        kind = "attn" if method == "redundant_attention" else "mlp"
        name = f"{kind}_score"
        score = _array(sublayers and getattr(sublayers, name), f"sublayers.{name}", method, "the sublayer scores",
                       (L,))
        return Removal.of(**{kind: np.argsort(score, kind="stable")[:k].tolist()})
    if method == "iterative_greedy":
        if greedy_order is None:
            raise ValueError("method 'iterative_greedy' needs the iterative greedy order (run it first: pruning "
                             "curves page, or `python -m analysis plan --method iterative_greedy`)")
        if len(greedy_order) < k:
            raise ValueError(f"the iterative greedy order has {len(greedy_order)} steps, fewer than k = {k}")
        return Removal.of(blocks=greedy_order[:k])
    if method == "cheapest_measured":
        if removal_cost is None:
            raise ValueError("method 'cheapest_measured' needs the measured removal costs (run the removal sweep "
                             "first)")
        return cheapest(removal_cost.components(), k, L)
    return Removal.of(blocks=range(L - 1 - k, L - 1))  # reverse_order
