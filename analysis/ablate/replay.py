"""Removing blocks and sublayers, and what it costs (DESIGN.md sections 3 and 5).

Block l removed: its output equals its input (attention and MLP outputs zeroed);
attention l removed: `blocks.l.hook_attn_out` is zero; MLP l removed:
`blocks.l.hook_mlp_out` is zero. Removing something at layer k changes nothing before
k, so `suffix_logits` restarts from the clean residual entering the first changed layer
instead of recomputing the prefix. `naive_logits` is the plain full forward with the
same hooks, kept as the reference the fast path must equal.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.measure.collect import batch_tokens_for, batches, instrumented, token_nll
from analysis.model import hooks
from analysis.model.removal import Removal, RemovalHooks
from analysis.model.hooks import readout
from analysis.model import unwrapped as decoders  # looked up at call time (tests force the bridge path)

PPL_KEYS = {"blocks": "block_ppl", "attn": "attn_ppl", "mlp": "mlp_ppl"}  # kind -> RemovalCost field


@dataclass(frozen=True)
class BlockInputs:
    """What the model's own forward passed to each block besides the hidden states.

    Captured per layer during a clean forward (forward pre-hooks on the bridge's
    blocks), so a block run on its own gets exactly the attention mask the model built
    for that layer (causal, sliding window, per-layer local/global type), the position
    ids and rotary embeddings, and any other per-layer argument. Cache objects are
    dropped: a replayed block must not write into a KV cache. The tensors are the
    model's own, shared between layers where the model shares them.
    """

    args: tuple  # per layer: positional arguments after hidden_states
    kwargs: tuple  # per layer: keyword arguments
    decoder: object = None  # the unwrapped model whose layers were called (None: the bridge's blocks)

    def for_layer(self, layer: int) -> tuple[tuple, dict]:
        return self.args[layer], self.kwargs[layer]


def replayed_layers(model, decoder) -> list:
    """The decoder-layer modules a forward on `decoder` (the unwrapped model, or None:
    the bridge) calls, in order."""
    return list(decoder.layers) if decoder is not None else list(model.bridge.blocks)


def _replayable(value):
    from transformers.cache_utils import Cache
    return None if isinstance(value, Cache) else value


class _BlockInputRecorder:
    """Forward pre-hooks on every decoder layer `run`'s forward calls (the unwrapped
    model's or the bridge's blocks) that record its call arguments."""

    def __init__(self, model, run) -> None:
        self.model = model
        self.run = run
        self.args: list = [None] * model.n_layers
        self.kwargs: list = [None] * model.n_layers
        self._handles: list = []

    def _hook(self, layer: int):
        def hook(module, args, kwargs):
            kw = {k: _replayable(v) for k, v in kwargs.items() if k != "hidden_states"}
            if "use_cache" in kw:
                kw["use_cache"] = False
            self.args[layer] = tuple(_replayable(a) for a in args[1:])
            self.kwargs[layer] = kw
        return hook

    def __enter__(self) -> "_BlockInputRecorder":
        self._handles = [block.register_forward_pre_hook(self._hook(l), with_kwargs=True)
                         for l, block in enumerate(replayed_layers(self.model, self.run.decoder))]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def inputs(self) -> BlockInputs:
        if any(kw is None for kw in self.kwargs):
            raise RuntimeError("the forward did not call every block; cannot replay blocks on their own")
        return BlockInputs(tuple(self.args), tuple(self.kwargs), self.run.decoder)


def run_blocks(model, resid: Float[Tensor, "batch pos d_model"], start: int, inputs: BlockInputs,
               removal: Removal | None = None, *, keep: dict | None = None,
               keep_every: int = 1, check=None) -> Float[Tensor, "batch pos d_model"]:
    """Run blocks start..L-1 on `resid` (the residual entering block `start`), each with
    the arguments the model's own forward gave it, on the modules that forward called.
    Removed blocks are not computed (their output is their input). Removed attention and
    MLP sublayers: on the unwrapped model the decoder's switch zeroes them here; on the
    bridge the caller runs this inside a RemovalHooks context set to `removal`.
    `keep` (a dict) receives the residual entering each later layer l > start with
    l % keep_every == 0 (the tensors the run makes anyway, not copies). `check()` is
    called before each block and may raise to stop the run (the playground's preemption)."""
    removal = removal or Removal()
    decoder = inputs.decoder
    if decoder is not None:
        decoder.removal = removal
    try:
        for layer, block in enumerate(replayed_layers(model, decoder)[start:], start=start):
            if keep is not None and layer > start and layer % keep_every == 0:
                keep[layer] = resid
            if layer in removal.blocks:
                continue
            if check is not None:
                check()
            args, kwargs = inputs.for_layer(layer)
            out = block(resid, *args, **kwargs)
            resid = out[0] if isinstance(out, tuple) else out
    finally:
        if decoder is not None:
            decoder.removal = Removal()
    return resid


def removal_context(model, inputs: BlockInputs, hooks: "RemovalHooks"):
    """What `run_blocks` needs around it to zero removed sublayers: the bridge's zeroing
    hooks when it replays the bridge's blocks, nothing on the unwrapped model (its
    decoder's switch zeroes). Registering the bridge's 2L hooks costs ~10 ms, once per
    removal of a sweep and once per batch of a toggle."""
    return model.bridge.hooks(fwd_hooks=hooks.fwd_hooks()) if inputs.decoder is None else nullcontext()


@contextmanager
def capture_blocks(model, inputs: BlockInputs, names: list, removal_hooks: "RemovalHooks"):
    """A dict filled with the tensors at the hook `names` while `run_blocks` runs on the
    modules `inputs` recorded (the bridge's hooks, with `removal_hooks` active, or the
    same places on the unwrapped model)."""
    if inputs.decoder is None:
        with hooks.capture(model, names, extra=removal_hooks.fwd_hooks()) as got:
            yield got
        return
    got: dict = {}
    with inputs.decoder.capture(inputs.decoder.sites(model.bridge, names), got, names):
        try:
            yield got
        finally:
            got.clear()


@dataclass
class CleanStates:
    """Residuals of the unmodified model for one batch: h_0..h_L and resid_mid_l, plus
    the per-block arguments its forward built (masks, positions)."""

    tokens: torch.Tensor
    resid: list
    mid: list
    logits: torch.Tensor | None
    inputs: BlockInputs | None = None


def clean_states(model, tokens: Int[Tensor, "batch pos"]) -> CleanStates:
    """One unmodified forward keeping every residual (call with the model lock held)."""
    L = model.n_layers
    names = hooks.residual_stream(L) + ([] if model.parallel_attn_mlp else [hooks.resid_mid(l) for l in range(L)])
    with torch.inference_mode(), instrumented(model, names) as run, _BlockInputRecorder(model, run) as recorder:
        logits = run.forward(tokens)
        resid = [run.got[n] for n in hooks.residual_stream(L)]
        mid = [run.got.get(hooks.resid_mid(l)) for l in range(L)]
    return CleanStates(tokens, resid, mid, logits, recorder.inputs())


def restart_point(model, clean: CleanStates, removal: Removal, first: int) -> tuple[int, torch.Tensor]:
    """(first block to run, the residual it starts from) for `removal`, given states in
    `clean` that are valid up to layer `first` (its resid[first] and mid[first]): after a
    removed block `first` or a removed MLP `first` the next block starts from h_first or
    resid_mid_first directly; otherwise block `first` runs (with its attention zeroed)."""
    attn_zero, mlp_zero = removal.zeroed()
    if first in removal.blocks:
        return first + 1, clean.resid[first]
    if first in mlp_zero and first not in attn_zero and not model.parallel_attn_mlp:
        return first + 1, clean.mid[first]
    return first, clean.resid[first]


def suffix_logits(model, clean: CleanStates, removal: Removal, hooks: RemovalHooks,
                  first: int | None = None) -> torch.Tensor:
    """Logits with `removal` applied, re-using the clean prefix.

    Must run inside `removal_context(model, clean.inputs, hooks)` with the lock held (a
    removal of whole blocks only needs no hooks: removed blocks are skipped).
    The restart point is the first changed layer k (`restart_point`). `first` overrides
    k when `clean` already holds the stream with the removal's changes before `first`
    applied (iterative greedy keeps the stream of the removals chosen so far).
    """
    k = removal.first_layer() if first is None else first
    if k is None:
        return clean.logits
    hooks.set(removal)
    start, resid = restart_point(model, clean, removal, k)
    with torch.inference_mode():
        if start < model.n_layers:
            resid = run_blocks(model, resid, start, clean.inputs, removal)
        return readout(model, resid)


def naive_logits(model, tokens: torch.Tensor, removal: Removal) -> torch.Tensor:
    """Reference: a full forward with `removal` applied (call with the lock held), on the
    modules the fast path replays: the unwrapped model with its zeroing switch, or the
    bridge with zeroing hooks."""
    decoder = decoders.unwrapped(model)
    if decoder is not None:
        with torch.inference_mode():
            return decoder(removal, tokens, use_cache=False).logits
    hooks = RemovalHooks(model.n_layers)
    hooks.set(removal)
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=hooks.fwd_hooks()):
        return model.bridge(tokens, return_type="logits")


def removal_nll(model, windows: torch.Tensor, removals: list, *, naive: bool = False, batch_tokens: int | None = None,
                on_removal=None, on_tokens=None) -> tuple[float, list, int]:
    """(full-model NLL sum, NLL sum per removal, predicted tokens) over `windows`.

    One clean forward per batch; each removal then restarts from the clean residual
    entering its first changed layer (naive=True: one full hooked forward per removal,
    the reference). on_removal(index, n_windows) is called after each removal of a batch;
    on_tokens(index, window_offset, nll [B, T-1]) receives its per-token losses (index -1:
    the full model). The model's lock is taken per removal, not per batch, so another
    session's short request waits for one removal at most.
    """
    hooks = RemovalHooks(model.n_layers)
    full, sums, count = 0.0, [0.0] * len(removals), 0
    for offset, chunk in batches(windows, batch_tokens or batch_tokens_for(model)):
        chunk = chunk.to(model.device)
        with model.lock:
            clean = clean_states(model, chunk)
        nll = token_nll(clean.logits, chunk)
        full += float(nll.double().sum())
        if on_tokens:
            on_tokens(-1, offset, nll)
        for i, removal in enumerate(removals):
            with model.lock, (nullcontext() if naive else removal_context(model, clean.inputs, hooks)):
                logits = naive_logits(model, chunk, removal) if naive else suffix_logits(model, clean, removal, hooks)
                hooks.set(Removal())
            nll = token_nll(logits, chunk)
            del logits
            sums[i] += float(nll.double().sum())
            if on_tokens:
                on_tokens(i, offset, nll)
            if on_removal:
                on_removal(i, chunk.shape[0])
        del clean
        count += chunk.shape[0] * (chunk.shape[1] - 1)
    return full, sums, count
