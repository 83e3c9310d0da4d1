"""Independent computations with plain transformers (no TransformerLens), for checking."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


# A fixed mixed-genre text (prose, code, dialogue) for the default-model integration tests.
MIXED_TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. From the top he could see "
    "the fishing boats returning, their lamps swinging like small stars above the dark water. "
    "def mean(values):\n    return sum(values) / len(values)\n"
    "MARA: Did you lock the gate?\nTOM: Twice. The goats still got out.\n"
)


def plain_model(directory, dtype=torch.float32):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()


@torch.no_grad()
def residuals(hf, windows: torch.Tensor) -> torch.Tensor:
    """h_0..h_L [L+1, W, T, d]: each decoder layer's input, plus the last layer's output."""
    _, _, layers = decoder_layers(hf)
    got = [None] * (len(layers) + 1)
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: got.__setitem__(i, (args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True))
    handles.append(layers[-1].register_forward_hook(
        lambda m, a, out: got.__setitem__(len(layers), (out[0] if isinstance(out, tuple) else out).clone())))
    try:
        hf(windows)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(got)


@torch.no_grad()
def perplexity(hf, windows: torch.Tensor) -> float:
    logits = hf(windows).logits.double()
    logp = F.log_softmax(logits[:, :-1], -1)
    nll = -logp.gather(-1, windows[:, 1:, None]).squeeze(-1)
    return float(torch.exp(nll.mean()))


@torch.no_grad()
def window_nll(hf, windows: torch.Tensor) -> list:
    """Each window's mean next-token NLL."""
    logp = F.log_softmax(hf(windows).logits.double()[:, :-1], -1)
    return (-logp.gather(-1, windows[:, 1:, None]).squeeze(-1)).mean(1).tolist()


LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers")


def decoder_layers(hf):
    """(parent module, attribute, ModuleList) of the decoder layers, for the families tested."""
    for path in LAYER_LISTS:
        parent = hf
        for part in path.split(".")[:-1]:
            parent = getattr(parent, part, None)
        layers = getattr(parent, path.split(".")[-1], None) if parent is not None else None
        if isinstance(layers, torch.nn.ModuleList):
            return parent, path.split(".")[-1], layers
    raise ValueError(f"no decoder layer list in {type(hf).__name__}")


def without_layers(hf, layers: set):
    """A deep copy of the model with decoder layers physically deleted (each kept layer
    keeps its own per-layer config, e.g. its sliding-window or full attention type)."""
    model = copy.deepcopy(hf)
    parent, attr, modules = decoder_layers(model)
    n = len(modules)
    kept = [i for i in range(n) if i not in layers]
    setattr(parent, attr, torch.nn.ModuleList([modules[i] for i in kept]))
    for new, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    model.config.num_hidden_layers = len(kept)
    types = getattr(model.config, "layer_types", None)
    if isinstance(types, list) and len(types) == n:
        model.config.layer_types = [types[i] for i in kept]
    return model


# What each family tested names the projection that writes a sublayer's output into the
# residual stream (Llama-style, GPT-2, GPT-NeoX), and for mixtures of experts every
# expert's down projection (one stacked 3-D parameter in memory) plus the shared expert's.
ATTN_OUT = ("self_attn.o_proj", "attn.c_proj", "attention.dense")
MLP_OUT = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.experts.down_proj", "mlp.shared_expert.down_proj")
MLP_IN = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h")  # dense MLPs: the module whose input is the activation


def _get(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part, None)
    return module


def _zero(layer, names) -> None:
    """Zero every one of `names` the layer has (weight and bias of a module, or a bare parameter)."""
    found = [x for x in (_get(layer, n) for n in names) if x is not None]
    if not found:
        raise ValueError(f"none of {names} in {type(layer).__name__}")
    for target in found:
        for p in ([target] if isinstance(target, torch.nn.Parameter) else [target.weight, getattr(target, "bias", None)]):
            if p is not None:
                p.zero_()


def with_zeroed(hf, attn: set = (), mlp: set = ()):
    """A deep copy with attention / MLP output projections of the given layers zeroed."""
    model = copy.deepcopy(hf)
    _, _, layers = decoder_layers(model)
    with torch.no_grad():
        for i in attn:
            _zero(layers[i], ATTN_OUT)
        for i in mlp:
            _zero(layers[i], MLP_OUT)
    return model


@torch.no_grad()
def mlp_activations(hf, windows: torch.Tensor) -> list:
    """Per layer, the input of the dense MLP's down projection [W, T, d_mlp]."""
    _, _, layers = decoder_layers(hf)
    got, handles = [None] * len(layers), []
    for i, layer in enumerate(layers):
        down = next(m for m in (_get(layer, n) for n in MLP_IN) if m is not None)
        handles.append(down.register_forward_pre_hook(lambda m, args, i=i: got.__setitem__(i, args[0].clone())))
    try:
        hf(windows)
    finally:
        for h in handles:
            h.remove()
    return got


@torch.no_grad()
def greedy(hf, prompt: torch.Tensor, max_new: int) -> list:
    """Plain greedy decoding with the model's own KV cache: the new token ids."""
    out = hf.generate(prompt, max_new_tokens=max_new, do_sample=False, min_new_tokens=max_new,
                      eos_token_id=None, pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


def modified(hf, kind: str, layers):
    """A copy of `hf` without the blocks `layers` (kind "blocks") or with those attention
    or MLP sublayers zeroed (kind "attn" / "mlp")."""
    layers = set(layers)
    if kind == "blocks":
        return without_layers(hf, layers)
    return with_zeroed(hf, **{kind: layers})


def naive_greedy(hf, windows, kind: str, steps: int):
    """Re-measure every remaining candidate with a plain model at every step."""
    chosen, ppls = [], []
    L = hf.config.num_hidden_layers
    for _ in range(steps):
        ppl, best = min((perplexity(modified(hf, kind, chosen + [c]), windows), c)
                        for c in range(L) if c not in chosen)
        chosen.append(best)
        ppls.append(ppl)
    return chosen, ppls
