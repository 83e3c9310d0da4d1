"""The one instrumented forward pass that every analysis reads from.

Windows are pushed through the TransformerBridge in batches with hooks on the residual
stream (`blocks.l.hook_resid_pre/mid/post`), the sublayer outputs and the MLP hidden
activation (`blocks.l.mlp.hook_post`). Reducers fold each batch into running
statistics as it streams past, so memory grows with layers x width (and a fixed-size
sample for CKA), never with corpus length. Corpus perplexity comes out of the same pass.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.model import hooks
from analysis.core import settings
from analysis.model.loading import LoadedModel
from analysis.model.removal import Removal
from analysis.model import unwrapped as decoders  # looked up at call time (tests force the bridge path)

Progress = Callable[[float, str], None]


@dataclass
class Batch:
    """What the hooks captured for one batch of windows (all on the model's device).

    Lists are indexed by layer; an entry is None when no reducer asked for that site
    (and resid_mid is all None for parallel attention/MLP architectures).
    """

    tokens: torch.Tensor  # [B, T]
    first_repr: int  # 1 when a BOS is prepended, else 0
    resid: list  # L+1 tensors [B, T, d]: h_0..h_L (h_L = output of the last block)
    resid_mid: list  # L tensors [B, T, d]
    attn_out: list  # L tensors [B, T, d]: what attention adds to the residual
    mlp_out: list  # L tensors [B, T, d]: what the MLP adds to the residual
    logits: torch.Tensor | None = None  # [B, T, V]
    window_offset: int = 0  # index of this batch's first window in the corpus


SITES = ("resid_mid", "attn_out", "mlp_out")  # optional Batch fields a reducer may ask for


class Reducer(Protocol):
    """Folds each batch into running statistics; `result()` freezes them.

    `sites` names the optional Batch fields it reads (SITES); `hooks` returns in-hook
    reducers (name, hook) pairs, used only where reducing inside the hook saves memory
    (sparsity counts the MLP activation there, so [B, T, d_mlp] x L is never kept).
    """

    sites: tuple

    def hooks(self, model: LoadedModel, first_repr: int) -> list[tuple[str, Callable]]: ...
    def update(self, model: LoadedModel, batch: Batch) -> None: ...
    def result(self): ...


class Perplexity:
    """Running sum of next-token cross-entropy over every predicted position."""

    sites = ()

    def __init__(self) -> None:
        self.nll_sum = 0.0
        self.n_predicted = 0
        self.per_window: list[float] = []

    def hooks(self, model, first_repr):
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


NLL_ROWS = {"cpu": 16}  # rows of [rows, V] per step of the log-sum-exp: on a CPU few enough to stay in
# the core's cache across its four passes (16 rows: 24 ms, 256 rows: 30 ms for [8, 128, 49152]); elsewhere
# one step per window (each step is a handful of kernel launches)


def token_nll(logits: Float[Tensor, "batch pos vocab"],
              tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token cross-entropy [B, T-1] of logits [B, T, V] against tokens [B, T]:
    log-sum-exp minus the gold logit, in float32. Without autograd the log-sum-exp runs
    over NLL_ROWS[device type] rows at a time through one reused buffer, so no [B, T, V] temporary
    (or log-probability tensor) is ever built."""
    x = logits[:, :-1]
    gold = x.gather(-1, tokens[:, 1:, None]).squeeze(-1).float()
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.logsumexp(x.float(), dim=-1) - gold
    lse = torch.empty(gold.shape, device=x.device)
    step = NLL_ROWS.get(x.device.type, x.shape[1])
    buf = torch.empty((min(step, x.shape[1]), x.shape[-1]), device=x.device)
    for b in range(x.shape[0]):
        for s in range(0, x.shape[1], step):
            rows = x[b, s:s + step]
            top = rows.amax(-1, keepdim=True).float()
            out = torch.sub(rows, top, out=buf[:rows.shape[0]])
            lse[b, s:s + rows.shape[0]] = out.exp_().sum(-1).log_().add_(top.squeeze(-1))
    return lse - gold


def activation_bytes_per_token(model: LoadedModel) -> int:
    """What one token of a batch holds while the instrumented pass (or a removal) runs:
    h_0..h_L, resid_mid and both sublayer outputs (4L+1 vectors of d_model) in the
    model's dtype, the MLP's hidden activations of one layer at a time (3 d_mlp) and
    float32 logits."""
    elem = next(model.hf_model.parameters()).element_size()
    return ((4 * model.n_layers + 1) * model.d_model + 3 * model.d_mlp) * elem + 4 * int(model.bridge.cfg.d_vocab)


def batch_tokens_for(model: LoadedModel) -> int:
    """Tokens per batch for `model` from the memory budget (settings.batch_tokens)."""
    return settings.batch_tokens(activation_bytes_per_token(model))


def batches(windows: torch.Tensor, batch_tokens: int):
    """Split windows into batches of about `batch_tokens` tokens: yields (offset, batch)."""
    per = max(1, batch_tokens // windows.shape[1])
    for start in range(0, windows.shape[0], per):
        yield start, windows[start:start + per]


def run_pass(model: LoadedModel, windows: torch.Tensor, reducers: list[Reducer], *,
             batch_tokens: int | None = None, progress: Progress | None = None, label: str = "Instrumented pass",
             bridge: bool = False) -> None:
    """Run the instrumented pass once over `windows`, feeding every reducer.

    Holds the model's lock for each batch's forward; hooks are removed on exit even on
    error. A batch's captured tensors are released before the next batch runs.
    bridge=True runs the forward through the bridge even where the unwrapped model could.
    """
    L = model.n_layers
    batch_tokens = batch_tokens or batch_tokens_for(model)
    first_repr = 1 if model.bos_token_id is not None and bool((windows[:, 0] == model.bos_token_id).all()) else 0
    wanted = {site for reducer in reducers for site in reducer.sites}
    if model.parallel_attn_mlp:
        wanted.discard("resid_mid")
    names = hooks.residual_stream(L)
    site_names = {"resid_mid": [hooks.resid_mid(l) for l in range(L)],
                  "attn_out": [hooks.sublayer_out("attn", l) for l in range(L)],
                  "mlp_out": [hooks.sublayer_out("mlp", l) for l in range(L)]}
    for site in SITES:
        if site in wanted:
            names += site_names[site]
    extra = [pair for reducer in reducers for pair in reducer.hooks(model, first_repr)]
    total = windows.shape[0]
    with instrumented(model, names, extra, bridge) as run:
        got = run.got
        for offset, chunk in batches(windows, batch_tokens):
            chunk = chunk.to(model.device)
            with model.lock, torch.inference_mode():
                logits = run.forward(chunk)
                fields = {site: [got.get(n) for n in site_names[site]] for site in SITES}
                batch = Batch(chunk, first_repr, [got[n] for n in hooks.residual_stream(L)], logits=logits,
                              window_offset=offset, **fields)
                for reducer in reducers:
                    reducer.update(model, batch)
                got.clear()
                del batch, logits, fields
            if progress:
                done = min(total, offset + chunk.shape[0])
                progress(done / total, f"{label}: {done}/{total} windows")


@dataclass
class Run:
    """An instrumented forward: `forward(tokens)` returns the logits and fills `got`;
    `decoder` is the unwrapped model it runs on (None: the bridge)."""

    got: dict
    forward: Callable
    decoder: object = None


@contextmanager
def instrumented(model: LoadedModel, names, extra=(), bridge: bool = False):
    """A `Run` whose forwards fill got with the tensors at the hook `names` and run the
    `extra` (name, hook(tensor, hook)) pairs on theirs.

    The forward runs on the model unwrapped (analysis/model/unwrapped.py: the HF
    modules the bridge wraps, the same parameters) with module hooks at the places the
    bridge's hooks fire, when every name maps to a module's input or output; that skips
    the bridge's own attention (which computes the pattern for its hooks) and its
    per-call overhead: 1.1-1.2x a bare forward through the bridge. Otherwise (or with
    bridge=True, or when the modules are offloaded) it runs on the bridge. The
    architecture matrix checks both give the same tensors. Hold the model's lock
    around the forwards."""

    extra = list(extra)
    decoder = None if bridge else decoders.unwrapped(model)
    sites = decoder.sites(model.bridge, list(names) + [name for name, _ in extra]) if decoder else None
    if sites is None:
        with hooks.capture(model, names, extra=extra) as got:
            yield Run(got, lambda tokens: model.bridge(tokens, return_type="logits"))
        return
    got: dict = {}

    def forward(tokens):
        with decoder.capture(sites, got, names, extra):
            return decoder(Removal(), tokens, use_cache=False).logits

    try:
        yield Run(got, forward, decoder)
    finally:
        got.clear()
