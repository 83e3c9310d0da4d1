"""The Hugging Face model under a TransformerBridge, without the bridge, for decoding.

Booting a bridge replaces the HF model's modules in place with bridge components (each
holding the HF module it wraps as `original_component`). Token-by-token decoding pays
their per-call overhead (hook points, the bridge's own attention) on every one of about
a dozen module calls per layer and token: 1.6x a bare `generate` on the default model.
`unwrapped(model)` is a second module tree over the *same* parameters (nothing is
copied) with every bridge component replaced by the module it wraps, so a forward is the
model's own. Removals are applied by zeroing the output of the removed attention and MLP
sublayers (a removed block: both), which is what zeroing `hook_attn_out` / `hook_mlp_out`
does on the bridge and what `apply` does by zeroing the output projections.

A model whose modules carry Accelerate offload hooks (a `device_map` with CPU or disk
offload) has no unwrapped view: the bridge materialises offloaded weights around each
call, and decoding keeps using the bridge there.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch

from analysis.pruning.ablation import Removal
from analysis.pruning.apply import decoder_layers, sublayer_name

_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of the HF module behind `module` whose children are unwrapped too;
    parameters and buffers are the originals (shared, not copied), hooks are not carried."""
    while isinstance(module._modules.get("_original_component"), torch.nn.Module):
        module = module._modules["_original_component"]
    clone = copy.copy(module)
    clone.__dict__ = dict(module.__dict__)
    for name in _HOOK_DICTS:
        if name in clone.__dict__:
            clone.__dict__[name] = OrderedDict()
    clone._modules = OrderedDict((name, None if child is None else _unwrap(child))
                                 for name, child in module._modules.items())
    return clone


class UnwrappedDecoder:
    """The unwrapped model and a removal switch read by hooks on its sublayers."""

    def __init__(self, hf: torch.nn.Module, n_layers: int) -> None:
        self.model = _unwrap(hf).eval()
        self.removal = Removal()
        _, _, layers = decoder_layers(self.model, n_layers)
        for l, layer in enumerate(layers):
            for kind in ("attn", "mlp"):
                getattr(layer, sublayer_name(layer, kind)).register_forward_hook(self._zero_if_removed(kind, l))

    def _zero_if_removed(self, kind: str, layer: int):
        def hook(_module, _args, output):
            removal = self.removal
            if layer not in removal.blocks and layer not in getattr(removal, kind):
                return None
            if isinstance(output, tuple):
                return (torch.zeros_like(output[0]),) + output[1:]
            return torch.zeros_like(output)
        return hook

    def __call__(self, removal: Removal, *args, **kwargs):
        """One forward of the unwrapped model with `removal` applied (callers hold the
        model's lock, which also guards the switch)."""
        self.removal = removal
        try:
            return self.model(*args, **kwargs)
        finally:
            self.removal = Removal()


_DECODERS: dict = {}
MAX_DECODERS = 4


def unwrapped(model) -> UnwrappedDecoder | None:
    """The model's unwrapped decoder (built once per loaded model), or None when its
    modules are offloaded by Accelerate (decode through the bridge then)."""
    hf = model.hf_model
    key = id(hf)
    cached = _DECODERS.get(key)
    if cached is not None and cached[0] is hf:
        return cached[1]
    if any(hasattr(m, "_hf_hook") for m in hf.modules()):
        decoder = None
    else:
        decoder = UnwrappedDecoder(hf, model.n_layers)
    while len(_DECODERS) >= MAX_DECODERS:  # a few loaded models at a time; don't keep dead ones alive
        _DECODERS.pop(next(iter(_DECODERS)))
    _DECODERS[key] = (hf, decoder)
    return decoder
