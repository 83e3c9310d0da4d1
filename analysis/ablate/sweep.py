"""Measured removal cost: exact corpus perplexity with each block, attention sublayer
and MLP sublayer removed (3L numbers), and a first-order estimate of the same from one
forward and one backward pass (attribution patching: delta loss ~ -grad . activation).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from analysis.core.results import Result
from analysis.core.kinds import Kind, Part
from analysis.model import hooks
from analysis.core import store
from analysis.core.progress import Eta, format_duration
from analysis.model.removal import KINDS, Removal
from analysis.ablate.replay import PPL_KEYS, removal_nll
from analysis.measure.collect import batch_tokens_for, batches, token_nll
from analysis.data.corpus import Corpus
from analysis.data.evaluation import windows_for
from analysis.ablate.memo import playground_key, seed_evaluations

SCHEMA_VERSION = 1


def single_removals(n_layers: int):
    """(kind, layer, Removal) for every block, attention and MLP sublayer."""
    for kind in KINDS:
        for layer in range(n_layers):
            yield kind, layer, Removal.of(**{kind: [layer]})


def exact_sweep(model, windows: torch.Tensor, *, naive: bool = False, batch_tokens: int | None = None,
                progress=None, per_token: dict | None = None) -> dict:
    """Corpus perplexity for all 3L single removals, plus the full model's.

    With naive=False each removal restarts from the clean residual entering the first
    changed layer; naive=True runs one full forward with hooks per removal (reference
    and benchmark baseline). Both give identical numbers.
    """
    L = model.n_layers
    items = list(single_removals(L))
    total, done = windows.shape[0] * len(items), 0

    def step(i: int, n: int) -> None:
        nonlocal done
        done += n
        if progress:
            kind, layer, _ = items[i]
            progress(done / total, f"Removal sweep: {kind} {layer} ({done}/{total} window-removals)")

    removals = [r for _, _, r in items]

    def collect(i, offset, nll):  # {Removal: [n_windows, T-1] per-token losses}, filled batch by batch
        removal = removals[i] if i >= 0 else Removal()
        per_token.setdefault(removal, np.zeros((windows.shape[0], windows.shape[1] - 1)))
        per_token[removal][offset:offset + nll.shape[0]] = nll.double().cpu().numpy()

    full, sums, count = removal_nll(model, windows, removals, naive=naive, batch_tokens=batch_tokens,
                                    on_removal=step, on_tokens=collect if per_token is not None else None)
    ppl = np.exp(np.array(sums) / count).reshape(len(KINDS), L)
    out = {PPL_KEYS[kind]: ppl[i].tolist() for i, kind in enumerate(KINDS)}
    out["full_ppl"] = math.exp(full / count)
    return out


def _retain_grad(tensor: torch.Tensor) -> torch.Tensor:
    tensor.retain_grad()
    return tensor


def attribution_estimate(model, windows: torch.Tensor, *, batch_tokens: int | None = None) -> dict:
    """First-order estimate of every single removal's perplexity from one forward and
    one backward pass: delta NLL ~ -sum(grad * output) of the zeroed outputs."""
    L = model.n_layers
    delta = {"attn": np.zeros(L), "mlp": np.zeros(L)}
    total_nll = 0.0
    count = 0
    batch_tokens = batch_tokens or max(1, batch_tokens_for(model) // 2)  # the backward keeps more per token
    for _, chunk in batches(windows, batch_tokens):
        chunk = chunk.to(model.device)
        names = {(kind, l): hooks.sublayer_out(kind, l) for l in range(L) for kind in ("attn", "mlp")}
        with model.lock, torch.enable_grad(), hooks.capture(model, names.values(), keep=_retain_grad) as saved:
            model.bridge.zero_grad(set_to_none=True)
            logits = model.bridge(chunk, return_type="logits")
            loss = token_nll(logits, chunk).sum()
            loss.backward()
            for (kind, layer), name in names.items():
                out = saved[name]
                delta[kind][layer] -= float((out.grad.float() * out.detach().float()).sum(dtype=torch.float64))
            model.bridge.zero_grad(set_to_none=True)
        total_nll += float(loss.detach())
        count += chunk.shape[0] * (chunk.shape[1] - 1)
    ppl = lambda d: np.exp((total_nll + d) / count).tolist()
    return {"block_ppl": ppl(delta["attn"] + delta["mlp"]), "attn_ppl": ppl(delta["attn"]),
            "mlp_ppl": ppl(delta["mlp"]), "full_ppl": math.exp(total_nll / count)}


def with_eta(progress, clock=time.monotonic):
    """Wrap a progress(fraction, message) callback so the message also gives the time
    spent and the time left, from the rate measured after the first report (the first
    batch: start-up costs such as the clean forward are left out, issue 18)."""
    start, eta = clock(), Eta()

    def update(frac: float, message: str) -> None:
        now = clock()
        if frac <= 0:
            progress(frac, message)
            return
        eta.report(frac, now)
        left = eta.left(now)
        tail = f"about {format_duration(left)} left" if left is not None else "estimating time left"
        progress(frac, f"{message} - {format_duration(now - start)} elapsed, {tail}")
    return update


def rank_correlation(a, b) -> float:
    """Spearman rank correlation; nan when either side is constant (no ranking to compare)."""
    if np.ptp(np.asarray(a, dtype=float)) == 0 or np.ptp(np.asarray(b, dtype=float)) == 0:
        return float("nan")
    value = spearmanr(np.asarray(a, dtype=float), np.asarray(b, dtype=float)).statistic
    return float(value) if value == value else float("nan")


@dataclass(frozen=True)
class RemovalCost(store.Record):
    """Measured corpus perplexity with each single block, attention and MLP sublayer
    removed ([L] each), the full model's, and the first-order `estimate` of the same
    (same keys plus `spearman` rank correlations with the exact numbers)."""

    schema_version: int
    full_ppl: float
    block_ppl: list
    attn_ppl: list
    mlp_ppl: list
    estimate: dict

    @classmethod
    def from_dict(cls, data: dict) -> "RemovalCost":
        store.require_version(data, SCHEMA_VERSION, "Removal-cost")
        return super().from_dict(data)

    def ppl(self, kind: Kind) -> list:
        """Perplexity with each single `kind` ("blocks", "attn", "mlp") removed."""
        return getattr(self, PPL_KEYS[kind])

    def components(self) -> list[dict]:
        """All 3L removals with their measured perplexity, cheapest first (missing values last)."""
        rows = [{"kind": kind, "layer": l, "ppl": p} for kind in KINDS for l, p in enumerate(self.ppl(kind))]
        finite = lambda p: p is not None and p == p
        return sorted(rows, key=lambda r: (0, float(r["ppl"])) if finite(r["ppl"]) else (1, 0.0))


def predictors(block_influence, attn_score, mlp_score, removal: "RemovalCost") -> list[dict]:
    """Each redundancy score next to the measured perplexity of the removal it is meant
    to predict, with the Spearman rank correlation between the two (higher score should
    mean costlier removal, so a useful predictor has rho near +1)."""
    pairs = (("block", "Block Influence", block_influence, removal.block_ppl),
             ("attn", "attention score", attn_score, removal.attn_ppl),
             ("mlp", "MLP score", mlp_score, removal.mlp_ppl))
    return [{"kind": kind, "label": label, "score": [float(x) for x in score], "ppl": list(ppl),
             "rho": rank_correlation(score, ppl)} for kind, label, score, ppl in pairs]


REMOVAL = Result("removal", SCHEMA_VERSION, RemovalCost, lane="sweep")


def removal_key(model, corpus: Corpus, seq_len: int, max_windows: int | None, part: Part = "all") -> str:
    parts = {} if part == "all" else {"part": part}
    return store.make_key(fingerprint=model.fingerprint, corpus=corpus.sha256, seq_len=seq_len,
                          max_windows=max_windows, schema=SCHEMA_VERSION, **parts)


def removal_cost(model, corpus: Corpus, seq_len: int, *, max_windows: int | None = None,
                 use_cache: bool = True, progress=None, eta: bool = True, part: Part = "all") -> RemovalCost:
    """Exact sweep + attribution estimate with Spearman correlations (cached on disk), over
    the `part` of the corpus's windows (evaluation.part_windows). With eta=False progress
    messages carry no time estimate (a background job adds its own)."""
    if progress and eta:
        progress = with_eta(progress)
    return REMOVAL.cached(removal_key(model, corpus, seq_len, max_windows, part),
                          lambda: _measure(model, corpus, seq_len, max_windows, progress, part), use_cache)


def _measure(model, corpus: Corpus, seq_len: int, max_windows: int | None, progress, part: Part) -> RemovalCost:
    windows = windows_for(model, corpus, seq_len, max_windows, part)
    per_token: dict = {}
    exact = exact_sweep(model, windows, progress=progress, per_token=per_token)
    seed_evaluations(playground_key(model, corpus, seq_len, max_windows, part), per_token)
    if progress:
        progress(1.0, "First-order estimate: one forward and one backward pass...")
    estimate = attribution_estimate(model, windows)
    estimate["spearman"] = {
        key: rank_correlation(exact[key], estimate[key]) for key in ("block_ppl", "attn_ppl", "mlp_ppl")
    }
    estimate["spearman"]["all"] = rank_correlation(
        sum((exact[k] for k in ("block_ppl", "attn_ppl", "mlp_ppl")), []),
        sum((estimate[k] for k in ("block_ppl", "attn_ppl", "mlp_ppl")), []),
    )
    return RemovalCost(SCHEMA_VERSION, exact["full_ppl"], exact["block_ppl"], exact["attn_ppl"],
                         exact["mlp_ppl"], estimate)
