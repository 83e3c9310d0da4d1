"""The one place that knows the model's hook names and how to read the residual out.

Hook names (TransformerBridge, Llama-style and every family it maps to them):
`blocks.l.hook_resid_pre` (h_l, the input of block l), `blocks.l.hook_resid_mid` (between
attention and MLP; absent for parallel attention/MLP), `blocks.l.hook_resid_post`,
`blocks.l.hook_attn_out`, `blocks.l.hook_mlp_out` (what each sublayer adds to the
residual) and `blocks.l.mlp.hook_post` (the activation that enters the MLP's output
projection). `capture(...)` records any of them during a forward; `readout(model, resid)`
turns residual vectors into logits exactly as the model's own output does; `log_softmax_kl`
and `entropy` are the two distribution statistics the logit lens and its window grid use.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from jaxtyping import Float
from torch import Tensor
from analysis.core.kinds import Kind


def resid_pre(l: int) -> str:
    return f"blocks.{l}.hook_resid_pre"


def resid_mid(l: int) -> str:
    return f"blocks.{l}.hook_resid_mid"


def resid_post(l: int) -> str:
    return f"blocks.{l}.hook_resid_post"


def sublayer_out(kind: Kind, l: int) -> str:
    """`kind` is "attn" or "mlp": what that sublayer of block l adds to the residual."""
    return f"blocks.{l}.hook_{kind}_out"


def mlp_post(l: int) -> str:
    return f"blocks.{l}.mlp.hook_post"


REQUIRED = (resid_pre(0), resid_post(0), sublayer_out("attn", 0), sublayer_out("mlp", 0), mlp_post(0))


def residual_stream(n_layers: int) -> list[str]:
    """Hook names of h_0..h_L: each block's input, then the last block's output."""
    return [resid_pre(l) for l in range(n_layers)] + [resid_post(n_layers - 1)]


@contextmanager
def capture(model, names: Iterable[str], *, keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
            extra: Iterable[tuple[str, Callable]] = ()) -> Iterator[dict]:
    """Record the tensors at `names` during every forward inside the block.

    Yields a dict name -> tensor (detached, or `keep(tensor)`), overwritten by each
    forward; clear it to release a batch. `extra` are further (name, hook) pairs that
    run in the same context (in-hook reducers, removal hooks). The bridge removes every
    hook on exit, also on error. Hold the model's lock around the forwards.
    """
    got: dict = {}

    def hook_for(name: str):
        def hook(tensor, hook):
            got[name] = keep(tensor) if keep else tensor.detach()
            return tensor
        return hook

    fwd = [(name, hook_for(name)) for name in dict.fromkeys(names)] + list(extra)
    with model.bridge.hooks(fwd_hooks=fwd):
        try:
            yield got
        finally:
            got.clear()


def final_modules(model) -> tuple:
    """(final norm, unembedding, post-unembedding logit transform or None): the HF modules
    the bridge wraps."""
    bridge = model.bridge
    norm = getattr(bridge.ln_final, "original_component", None) or bridge.ln_final
    head = getattr(bridge.unembed, "original_component", None) or bridge.unembed
    return norm, head, getattr(getattr(bridge, "adapter", None), "apply_output_logits_transform", None)


def final_norm(model, resid: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_model"]:
    """The final norm applied afresh to residual vectors (the input of `unembed`)."""
    return final_modules(model)[0](resid)


def readout(model, resid: Float[Tensor, "*rows d_model"], *,
            out: Float[Tensor, "rows vocab"] | None = None) -> Float[Tensor, "*rows vocab"]:
    """Logits [..., V] of residual vectors [..., d]: the final norm applied afresh,
    the unembedding, then the architecture's own post-unembedding transform (Gemma's
    final logit soft-capping, Cohere's logit scale, ...) exactly as the model applies it.

    Runs the HF modules the bridge wraps (no hook points, no copies). With `out` (a
    [rows, V] buffer, resid [rows, d]) a linear unembedding writes into it, so a loop over
    layers reuses one buffer instead of allocating [rows, V] each time."""
    return unembed(model, final_norm(model, resid), out=out)


def unembed(model, normed: Float[Tensor, "*rows d_model"], *,
            out: Float[Tensor, "rows vocab"] | None = None) -> Float[Tensor, "*rows vocab"]:
    """`readout` after its final norm: the unembedding and the logit transform."""
    _, head, transform = final_modules(model)
    if out is not None and isinstance(head, torch.nn.Linear) and normed.dim() == 2 and out.dtype == normed.dtype:
        if head.bias is not None and bool(head.bias.any()):  # the bridge's zero bias: skip addmm's copy of it
            logits = torch.addmm(head.bias, normed, head.weight.t(), out=out)
        else:
            logits = torch.mm(normed, head.weight.t(), out=out)
    else:
        logits = head(normed)
    return transform(logits) if transform is not None else logits


def kl(logp_p: Float[Tensor, "*rows vocab"], logp_q: Float[Tensor, "*rows vocab"]) -> Float[Tensor, "*rows"]:
    """KL(p || q) over the last axis from log-probabilities."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


def entropy(logp: Float[Tensor, "*rows vocab"]) -> Float[Tensor, "*rows"]:
    """Entropy over the last axis from log-probabilities."""
    return -(logp.exp() * logp).sum(-1)
