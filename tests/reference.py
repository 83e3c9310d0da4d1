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


def plain_model(directory):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


@torch.no_grad()
def residuals(hf, windows: torch.Tensor) -> torch.Tensor:
    """h_0..h_L [L+1, W, T, d]: each decoder layer's input, plus the last layer's output."""
    layers = hf.model.layers
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


def without_layers(hf, layers: set):
    """A deep copy of the model with decoder layers physically deleted."""
    model = copy.deepcopy(hf)
    kept = [l for i, l in enumerate(model.model.layers) if i not in layers]
    model.model.layers = torch.nn.ModuleList(kept)
    for i, layer in enumerate(kept):
        layer.self_attn.layer_idx = i
    model.config.num_hidden_layers = len(kept)
    return model


def with_zeroed(hf, attn: set = (), mlp: set = ()):
    """A deep copy with attention / MLP output projections of the given layers zeroed."""
    model = copy.deepcopy(hf)
    with torch.no_grad():
        for i in attn:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
        for i in mlp:
            model.model.layers[i].mlp.down_proj.weight.zero_()
    return model
