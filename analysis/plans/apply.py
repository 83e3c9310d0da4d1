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

from analysis.core import settings, store
from analysis.model.removal import Removal
from analysis.ablate.replay import removal_nll
from analysis.measure.collect import batches
from analysis.model.anatomy import decoder_layers, output_params
from analysis.plans.schema import PruningPlan
from analysis.plans.check import parse_plan
from analysis.core.settings import trust_remote_code

PLAN_FILE = "layer-lab-plan.json"
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
