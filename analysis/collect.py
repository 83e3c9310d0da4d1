"""The one instrumented forward pass that every analysis reads from.

Windows are pushed through the TransformerBridge in batches with hooks on the residual
stream (`blocks.l.hook_resid_pre/mid/post`), the sublayer outputs and the MLP hidden
activation (`blocks.l.mlp.hook_post`). Reducers fold each batch into running
statistics as it streams past, so memory grows with layers x width (and a fixed-size
sample for CKA), never with corpus length. Corpus perplexity comes out of the same pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from analysis.loading import LoadedModel

Progress = Callable[[float, str], None]


@dataclass
class Batch:
    """What the hooks captured for one batch of windows (all on the model's device)."""

    tokens: torch.Tensor  # [B, T]
    first_repr: int  # 1 when a BOS is prepended, else 0
    resid: list  # L+1 tensors [B, T, d]: h_0..h_L (h_L = output of the last block)
    resid_mid: list  # L tensors [B, T, d] (None entries for parallel attn/MLP)
    logits: torch.Tensor | None = None  # [B, T, V]
    window_offset: int = 0  # index of this batch's first window in the corpus


class Reducer(Protocol):
    def hooks(self, model: LoadedModel, batch_ref: dict) -> list[tuple[str, Callable]]: ...
    def update(self, model: LoadedModel, batch: Batch) -> None: ...
    def result(self) -> dict: ...


class Perplexity:
    """Running sum of next-token cross-entropy over every predicted position."""

    def __init__(self) -> None:
        self.nll_sum = 0.0
        self.n_predicted = 0
        self.per_window: list[float] = []

    def hooks(self, model, batch_ref):
        return []

    def update(self, model, batch: Batch) -> None:
        nll = token_nll(batch.logits, batch.tokens)  # [B, T-1]
        self.nll_sum += float(nll.double().sum())
        self.n_predicted += nll.numel()
        self.per_window.extend(nll.double().mean(dim=1).tolist())

    def result(self) -> dict:
        return {
            "perplexity": math.exp(self.nll_sum / max(1, self.n_predicted)),
            "nll_sum": self.nll_sum,
            "n_predicted_tokens": self.n_predicted,
        }


def token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy [B, T-1] of logits [B, T, V] against tokens [B, T]."""
    logits = logits[:, :-1].float()  # logsumexp - gold logit: one read, no [B, T, V] log-probs
    return torch.logsumexp(logits, dim=-1) - logits.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def batches(windows: torch.Tensor, batch_tokens: int):
    """Split windows into batches of about `batch_tokens` tokens: yields (offset, batch)."""
    per = max(1, batch_tokens // windows.shape[1])
    for start in range(0, windows.shape[0], per):
        yield start, windows[start:start + per]


def run_pass(model: LoadedModel, windows: torch.Tensor, reducers: list, *,
             batch_tokens: int = 2048, progress: Progress | None = None) -> None:
    """Run the instrumented pass once over `windows`, feeding every reducer.

    Holds the model's lock for each batch's forward; hooks are removed on exit even on
    error (the bridge's `hooks` context manager resets them).
    """
    L = model.n_layers
    first_repr = 1 if model.bos_token_id is not None and bool((windows[:, 0] == model.bos_token_id).all()) else 0
    has_mid = not model.parallel_attn_mlp
    ref: dict = {}

    def keep(slot: str, idx: int):
        def hook(tensor, hook):
            ref[slot][idx] = tensor.detach()
            return tensor
        return hook

    fwd = [(f"blocks.{l}.hook_resid_pre", keep("resid", l)) for l in range(L)]
    fwd.append((f"blocks.{L - 1}.hook_resid_post", keep("resid", L)))
    if has_mid:
        fwd += [(f"blocks.{l}.hook_resid_mid", keep("mid", l)) for l in range(L)]
    for reducer in reducers:
        fwd += reducer.hooks(model, ref)
    total = windows.shape[0]
    bridge = model.bridge
    for offset, chunk in batches(windows, batch_tokens):
        ref.clear()
        ref.update(resid=[None] * (L + 1), mid=[None] * L, first_repr=first_repr)
        chunk = chunk.to(model.device)
        with model.lock, torch.inference_mode(), bridge.hooks(fwd_hooks=fwd):
            logits = bridge(chunk, return_type="logits")
            batch = Batch(chunk, first_repr, ref["resid"], ref["mid"], logits, offset)
            for reducer in reducers:
                reducer.update(model, batch)
        if progress:
            done = min(total, offset + chunk.shape[0])
            progress(done / total, f"Instrumented pass: {done}/{total} windows")
    ref.clear()
