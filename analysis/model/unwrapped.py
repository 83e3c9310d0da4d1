"""The Hugging Face model under a TransformerBridge, without the bridge.

Booting a bridge replaces the HF model's modules in place with bridge components (each
holding the HF module it wraps as `original_component`). Every call then pays their
overhead: hook points, and the bridge's own eager attention (it computes the pattern for
its hooks). Token by token that was 1.6x a bare `generate` on the default model.
`unwrapped(model)` is a second module tree over the *same* parameters (nothing is
copied) with every bridge component replaced by the module it wraps, so a forward is the
model's own. It serves decoding (`prompts`), the instrumented pass and the clean states
(`collect.instrumented`, with plain module hooks where the bridge's hooks fire:
`sites`, `capture`) and every replayed suffix of blocks (`ablation.run_blocks`).
Removals are applied by zeroing the output of the removed attention and MLP sublayers (a
removed block: both), which is what zeroing `hook_attn_out` / `hook_mlp_out` does on the
bridge and what `apply` does by zeroing the output projections.

A model whose modules carry Accelerate offload hooks (a `device_map` with CPU or disk
offload) has no unwrapped view: the bridge materialises offloaded weights around each
call, and everything keeps using the bridge there.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import contextmanager

import torch

from analysis.core.kinds import Kind
from analysis.core import caches
from analysis.model.removal import Removal
from analysis.model.anatomy import decoder_layers, sublayer_name

_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _unwrap(module: torch.nn.Module, clones: dict) -> torch.nn.Module:
    """A shallow copy of the HF module behind `module` whose children are unwrapped too;
    parameters and buffers are the originals (shared, not copied), hooks are not carried.
    `clones` maps id(HF module) -> its copy (a module reached twice is copied once)."""
    while isinstance(module._modules.get("_original_component"), torch.nn.Module):
        module = module._modules["_original_component"]
    if id(module) in clones:
        return clones[id(module)]
    clone = clones[id(module)] = copy.copy(module)
    clone.__dict__ = dict(module.__dict__)
    for name in _HOOK_DICTS:
        if name in clone.__dict__:
            clone.__dict__[name] = OrderedDict()
    clone._modules = OrderedDict((name, None if child is None else _unwrap(child, clones))
                                 for name, child in module._modules.items())
    return clone


class UnwrappedDecoder:
    """The unwrapped model and a removal switch read by hooks on its sublayers."""

    def __init__(self, hf: torch.nn.Module, n_layers: int) -> None:
        self._clones: dict = {}
        self._sites: dict = {}  # names -> sites (the bridge's hook layout does not change)
        self.model = _unwrap(hf, self._clones).eval()
        self.removal = Removal()
        _, _, layers = decoder_layers(self.model, n_layers)
        self.layers = layers
        for l, layer in enumerate(layers):
            for kind in ("attn", "mlp"):
                getattr(layer, sublayer_name(layer, kind)).register_forward_hook(self._zero_if_removed(kind, l))
        # The bridge gives the unembedding a bias of zeros; added by addmm it costs a write
        # of the whole [tokens, vocab] output (4% of a forward here). The copy's head runs
        # without it while it is zero (checked before every forward).
        self._zero_bias = None
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if isinstance(head, torch.nn.Linear) and head.bias is not None and not bool(head.bias.any()):
            where = "_parameters" if "bias" in head._parameters else "_buffers"
            own = OrderedDict(getattr(head, where))  # the copy's own dict: the original keeps its bias
            setattr(head, where, own)
            self._zero_bias = (own, own["bias"])
            own["bias"] = None

    def _zero_if_removed(self, kind: Kind, layer: int):
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
        if self._zero_bias is not None and bool(self._zero_bias[1].any()):  # someone set it: use it again
            own, bias = self._zero_bias
            own["bias"], self._zero_bias = bias, None
        try:
            return self.model(*args, **kwargs)
        finally:
            self.removal = Removal()

    def sites(self, bridge, names) -> dict | None:
        """Where each bridge hook in `names` fires on this tree: name -> (module, "in" or
        "out"), or None when one of them is not the input or output of a module the
        bridge wraps (then the bridge has to run the forward)."""
        key = tuple(names)
        if key in self._sites:
            return self._sites[key]
        self._sites[key] = found = self._find_sites(bridge, names)
        return found

    def _find_sites(self, bridge, names) -> dict | None:
        found, points = {}, bridge.hook_dict  # a property that builds the dict: read it once
        for name in names:
            point = points.get(name)
            path, _, kind = (getattr(point, "name", None) or "").rpartition(".")
            if kind not in ("hook_in", "hook_out"):
                return None
            try:
                component = bridge.get_submodule(path)
            except AttributeError:
                return None
            clone = self._clones.get(id(getattr(component, "original_component", None)))
            if clone is None:
                return None
            found[name] = (clone, kind[5:])
        return found

    @contextmanager
    def capture(self, sites: dict, got: dict, names, extra=()):
        """Fill `got` with the tensors at the hook `names` (detached) and run the `extra`
        (name, hook(tensor, hook)) pairs, the bridge's hook signature, on theirs during
        the forwards inside the block: `collect.instrumented` and `ablation.capture_blocks`."""
        store = [(name, lambda t, name=name: got.__setitem__(name, t.detach())) for name in dict.fromkeys(names)]
        observe = [(name, lambda t, fn=fn: fn(t, None)) for name, fn in extra]
        with self.hooked(sites, store + observe):
            yield got

    @contextmanager
    def hooked(self, sites: dict, hooks: list):
        """Run `hooks`, (name, fn(tensor)) pairs, on the tensors at their `sites` during
        the forwards inside the block (the first tensor a module receives, or the first
        it returns); removed on exit, also on error. Callers hold the model's lock."""
        handles = []

        def first(value):
            return value[0] if isinstance(value, (tuple, list)) else value

        def on_input(fn):
            def observe(_m, args, kwargs):
                if args:
                    return fn(args[0])
                given = kwargs.get("hidden_states")  # a module called with keywords only
                return fn(first(given if given is not None else next(iter(kwargs.values()))))
            return observe

        def on_output(fn):
            return lambda _m, _args, output: fn(first(output))

        try:
            for name, fn in hooks:
                module, kind = sites[name]
                if kind == "in":
                    handles.append(module.register_forward_pre_hook(_discard(on_input(fn)), with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(_discard(on_output(fn))))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _discard(fn):
    """A module hook that observes: whatever `fn` returns, the module's tensors are unchanged."""
    def hook(*args):
        fn(*args)
        return None
    return hook


_DECODERS: dict = caches.register("model.unwrapped.decoders", {})
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
