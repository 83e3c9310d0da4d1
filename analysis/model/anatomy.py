"""Model anatomy: where a Hugging Face decoder keeps its layers, and each layer's
attention and MLP output projections (their names differ per family). Used by the
unwrapped decoder, `plans.apply` (the checkpoint writer), MergeKit export and healing.
"""
from __future__ import annotations

import torch
from analysis.core.kinds import Kind

LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
ATTN_OUT = ("o_proj", "out_proj", "c_proj", "dense", "wo")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
MLP_OUT = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "fc_out")


def _get(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def decoder_layers(hf, n_layers: int) -> tuple[torch.nn.Module, str, torch.nn.ModuleList]:
    """(parent module, attribute name, ModuleList) holding the decoder layers."""
    for path in LAYER_LISTS:
        layers = _get(hf, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) == n_layers:
            parent, _, attr = path.rpartition(".")
            return _get(hf, parent), attr, layers
    for name, module in hf.named_modules():  # any other architecture: the first list of n_layers modules
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and name:
            parent, _, attr = name.rpartition(".")
            return (_get(hf, parent) if parent else hf), attr, module
    raise ValueError(f"could not find the {n_layers} decoder layers in {type(hf).__name__}")


def _is_projection(module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def plain(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module a TransformerBridge component wraps (itself if none)."""
    while isinstance(getattr(module, "original_component", None), torch.nn.Module):
        module = module.original_component
    return module


def plain_parameters(module: torch.nn.Module, prefix: str = ""):
    """(name, parameter) under `module` with Hugging Face names, also inside a booted
    bridge (which wraps the HF modules it maps): yields what `named_parameters` of the
    unwrapped model would."""
    module = plain(module)
    for name, param in module._parameters.items():
        if param is not None:
            yield prefix + name, param
    for name, child in module._modules.items():
        if child is not None and name != "_original_component":
            yield from plain_parameters(child, f"{prefix}{name}.")


def sublayer_name(layer: torch.nn.Module, kind: Kind) -> str:
    """The attribute of a decoder layer holding its attention (`kind` "attn") or MLP sublayer."""
    names = ATTN_NAMES if kind == "attn" else MLP_NAMES
    name = next((n for n in names if isinstance(getattr(layer, n, None), torch.nn.Module)), None)
    if name is None:
        raise ValueError(f"could not find the {kind} sublayer in {type(layer).__name__}")
    return name


def output_params(layer: torch.nn.Module, kind: Kind, hidden: int) -> list[tuple[str, torch.nn.Parameter]]:
    """(name relative to the layer, parameter) of everything that writes the attention
    or MLP output into the residual stream: the output projection's weight and bias
    (`o_proj`, `c_proj`, `dense`, `down_proj`, `dense_4h_to_h`, ...); for a mixture of
    experts every expert's down projection (a stacked 3-D parameter or one per expert)
    and any shared expert's. Zeroing them all makes the sublayer's output exactly zero."""
    layer = plain(layer)
    outs = ATTN_OUT if kind == "attn" else MLP_OUT
    sub_name = sublayer_name(layer, kind)
    params = list(plain_parameters(getattr(layer, sub_name), sub_name + "."))
    found = [(n, p) for n, p in params if set(n.split(".")[1:]) & set(outs)]
    if found:
        return found
    linears = [(n, m) for n, m in plain(getattr(layer, sub_name)).named_modules()
               if _is_projection(m) and hidden in tuple(m.weight.shape)]
    if not linears:
        raise ValueError(f"could not find the output projection of {type(plain(getattr(layer, sub_name))).__name__}")
    name, proj = linears[-1]
    return [(f"{sub_name}.{name}.{leaf}", p) for leaf, p in proj.named_parameters(recurse=False)]
