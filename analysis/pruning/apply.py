"""Evaluate a pruning plan on a corpus and turn it into a real, smaller checkpoint.

`evaluate_plan` measures corpus perplexity with the removal applied through the
ablation hooks (clean prefix re-used, DESIGN.md section 5). `apply_plan` loads a plain
`transformers` copy of the source model, zeroes the output projections (weight and
bias) of removed sublayers in kept blocks, physically deletes removed blocks (config
and per-layer indices renumbered) and writes the result atomically with the tokenizer
and a copy of the plan. `measure_latency` times both checkpoints on the same windows.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from analysis import settings, store
from analysis.pruning.ablation import Removal, removal_nll
from analysis.collect import batches
from analysis.pruning.plan import PruningPlan

PLAN_FILE = "layer-lab-plan.json"
LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
ATTN_OUT = ("o_proj", "out_proj", "c_proj", "dense", "wo")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
MLP_OUT = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "fc_out")
PER_LAYER_CONFIG = ("layer_types", "no_rope_layers")


def _removal(model_layers: int, plan_or_removal) -> Removal:
    if isinstance(plan_or_removal, PruningPlan):
        if plan_or_removal.n_layers != model_layers:
            raise ValueError(f"the plan is for a {plan_or_removal.n_layers}-layer model, this model has {model_layers}")
        removal = plan_or_removal.removal()
    elif isinstance(plan_or_removal, Removal):
        removal = plan_or_removal
    else:
        raise ValueError(f"expected a PruningPlan or a Removal, not {type(plan_or_removal).__name__}")
    bad = sorted(l for kind in ("blocks", "attn", "mlp") for l in getattr(removal, kind) if not 0 <= l < model_layers)
    if bad:
        raise ValueError(f"layer indices {bad} are out of range for a {model_layers}-layer model")
    if len(removal.blocks) >= model_layers:
        raise ValueError("cannot remove every block")
    return removal


def evaluate(model, plan_or_removal, windows: torch.Tensor, batch_tokens: int | None = None) -> tuple[float, float]:
    """(full, pruned) corpus perplexity over `windows` from one clean pass per batch."""
    removal = _removal(model.n_layers, plan_or_removal)
    full, (pruned,), count = removal_nll(model, windows, [removal], batch_tokens=batch_tokens)
    return math.exp(full / count), math.exp(pruned / count)


def evaluate_plan(model, plan_or_removal, windows: torch.Tensor) -> float:
    """Corpus perplexity over `windows` with the plan's removals applied."""
    return evaluate(model, plan_or_removal, windows)[1]


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


def sublayer_name(layer: torch.nn.Module, kind: str) -> str:
    """The attribute of a decoder layer holding its attention (`kind` "attn") or MLP sublayer."""
    names = ATTN_NAMES if kind == "attn" else MLP_NAMES
    name = next((n for n in names if isinstance(getattr(layer, n, None), torch.nn.Module)), None)
    if name is None:
        raise ValueError(f"could not find the {kind} sublayer in {type(layer).__name__}")
    return name


def output_params(layer: torch.nn.Module, kind: str, hidden: int) -> list[tuple[str, torch.nn.Parameter]]:
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


def prune_model(hf, removal: Removal) -> torch.nn.Module:
    """Zero removed sublayers of kept blocks, then delete removed blocks, in place."""
    config = hf.config
    n = int(config.num_hidden_layers)
    parent, attr, layers = decoder_layers(hf, n)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    with torch.no_grad():
        for kind, indices in (("attn", removal.attn), ("mlp", removal.mlp)):
            for l in sorted(set(indices) - set(removal.blocks)):
                for _, param in output_params(layers[l], kind, hidden):
                    param.zero_()
    kept = [l for l in range(n) if l not in removal.blocks]
    setattr(parent, attr, torch.nn.ModuleList([layers[l] for l in kept]))
    for new, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    config.num_hidden_layers = len(kept)
    for key in PER_LAYER_CONFIG:
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == n:
            setattr(config, key, [values[l] for l in kept])
    return hf


def checkpoint_plan(source_dir) -> PruningPlan | None:
    """The plan a Layer Lab checkpoint was written from (its layer-lab-plan.json), or
    None for any other model directory (or a plan file that does not validate)."""
    from analysis.pruning.plan_check import parse_plan

    if source_dir is None:
        return None
    try:
        raw = (Path(source_dir) / PLAN_FILE).read_bytes()
    except OSError:
        return None
    return parse_plan(raw).plan


def _is_our_checkpoint(out: Path) -> bool:
    """An existing output may be replaced only when it is a Layer Lab checkpoint (or empty)."""
    return out.is_dir() and (not any(out.iterdir()) or (out / PLAN_FILE).is_file())


def apply_plan(plan: PruningPlan, source_dir, out_dir) -> Path:
    """Write the pruned checkpoint of `plan` applied to the model in `source_dir`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from analysis.settings import trust_remote_code

    out = Path(out_dir).expanduser().resolve()
    trust = trust_remote_code()
    config = AutoConfig.from_pretrained(source_dir, trust_remote_code=trust)
    if int(config.num_hidden_layers) != plan.n_layers:
        raise ValueError(f"the plan is for a {plan.n_layers}-layer model, {source_dir} has "
                         f"{config.num_hidden_layers} layers")
    removal = _removal(plan.n_layers, plan)
    hf = AutoModelForCausalLM.from_pretrained(source_dir, dtype="auto", trust_remote_code=trust)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, trust_remote_code=trust)
    prune_model(hf, removal)
    if out.exists() and not _is_our_checkpoint(out):
        raise ValueError(f"{out} exists and is not a Layer Lab checkpoint; choose another --out")
    with store.building_dir(out, _is_our_checkpoint) as tmp:
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / PLAN_FILE).write_text(plan.to_json(), encoding="utf-8")
    return out


def _forward_all(hf, windows: torch.Tensor) -> None:
    per_token = 4 * hf.get_output_embeddings().weight.shape[0]  # the float32 logits dominate a plain forward
    with torch.inference_mode():
        for _, chunk in batches(windows, settings.batch_tokens(per_token)):
            hf(chunk.to(hf.device), use_cache=False).logits


def time_models(models: dict, windows: torch.Tensor, repeats: int = 3) -> dict:
    """Median seconds of a forward over `windows` per named plain transformers model:
    each warmed up once, then all timed in turn `repeats` times (so a change in machine
    load hits every model alike)."""
    times = {name: [] for name in models}
    for model in models.values():
        _forward_all(model, windows)  # warm-up
    for _ in range(max(1, int(repeats))):
        for name, model in models.items():
            start = time.perf_counter()
            _forward_all(model, windows)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure_latency(source_dir, out_dir, windows: torch.Tensor, repeats: int = 3) -> dict:
    """Median forward time of the full and the pruned checkpoint over the same windows.

    Both are loaded as plain transformers models with the same dtype, warmed up once,
    then timed alternately `repeats` times on this machine.
    """
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32).eval()
    pruned = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    seconds = time_models({"full": full, "pruned": pruned}, windows, repeats)
    full_s, pruned_s = seconds["full"], seconds["pruned"]
    return {
        "full_seconds": full_s,
        "pruned_seconds": pruned_s,
        "ratio": pruned_s / full_s,
        "full_layers": int(full.config.num_hidden_layers),
        "pruned_layers": int(pruned.config.num_hidden_layers),
        "full_params": sum(p.numel() for p in full.parameters()),
        "pruned_params": sum(p.numel() for p in pruned.parameters()),
        "repeats": max(1, int(repeats)),
        "windows": list(windows.shape),
        "threads": torch.get_num_threads(),
    }
