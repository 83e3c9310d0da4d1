"""A pruning plan as a MergeKit passthrough config that builds the same smaller model
outside Layer Lab.

MergeKit scales a tensor by a parameter whose `filter` is a substring of the tensor's
name in the checkpoint, so a zeroed sublayer needs filters that match exactly the
checkpoint tensors `apply` zeroes, and nothing else of the layer. `checkpoint_filters`
finds them from the model itself: `anatomy.output_params` names the parameters in memory,
transformers' own reverse weight conversion (the one `save_pretrained` applies, e.g. a
stacked expert tensor back to one tensor per expert) maps them to checkpoint names, and
the shortest dotted suffix of each that no other tensor of the layer contains becomes
the filter (`.o_proj.`, `.attn.c_proj.`, `.w2.` for Mixtral's experts, ...).
"""
from __future__ import annotations

import json
import re

import torch

from analysis.core.kinds import Kind
from analysis.model.anatomy import decoder_layers, output_params, plain_parameters

from analysis.plans.schema import PruningPlan, kept_ranges

LEAVES = ("weight", "bias")


def _checkpoint_names(hf, tensors: dict[str, torch.Size], targets: set) -> tuple[set, set]:
    """(checkpoint names written from `targets`, all checkpoint names) of the in-memory
    parameters `tensors` {name: shape}: each parameter is a constant 0/1 mask pushed
    through transformers' reverse conversion, so a split or renamed tensor keeps its mark."""
    masks = {n: torch.tensor(int(n in targets), dtype=torch.uint8).expand(shape) for n, shape in tensors.items()}
    try:
        from transformers.core_model_loading import revert_weight_conversion
        saved = revert_weight_conversion(hf, masks)
    except ImportError:  # a transformers without conversions saves the in-memory names
        saved = masks
    return {n for n, t in saved.items() if bool(t.any())}, set(saved)


def _filter(name: str, others: list[str]) -> str:
    """The shortest component-bounded suffix of `name`'s module path that no name in
    `others` contains (so the filter reaches this tensor, never another of the layer)."""
    parts = name.split(".")
    module = parts[:-1] if parts[-1] in LEAVES else parts
    tail = "." if len(module) < len(parts) else ""
    for start in range(len(module) - 1, -1, -1):
        candidate = "." + ".".join(module[start:]) + tail
        if not any(candidate in "." + other for other in others):
            return candidate
    raise ValueError(f"no MergeKit filter singles out {name}")


def checkpoint_filters(hf, n_layers: int, layer: int, kind: Kind) -> list[str]:
    """MergeKit filters matching exactly the checkpoint tensors of `layer` that
    `apply` zeroes to remove its `kind` ("attn" or "mlp") sublayer."""
    _, _, layers = decoder_layers(hf, n_layers)
    hidden = int(getattr(hf.config, "hidden_size", 0) or 0)
    prefix = next(n for n, m in hf.named_modules() if m is layers[layer]).replace("_original_component.", "") + "."
    tensors = {prefix + n: p.shape for n, p in plain_parameters(layers[layer])}
    targets = {prefix + n for n, _ in output_params(layers[layer], kind, hidden)}
    zeroed, every = _checkpoint_names(hf, tensors, targets)
    rel = lambda n: re.sub(rf"^.*?\.{layer}\.", "", n, count=1)
    others = [rel(n) for n in every - zeroed]
    return sorted({_filter(rel(n), others) for n in zeroed})


def mergekit_yaml(plan: PruningPlan, source_model: str, hf, *, dtype: str = "float32",
                  weights: str | None = None) -> str:
    """A MergeKit passthrough config building the pruned model from `source_model`
    (`hf`: the model the plan was made on, for its tensor names; `weights`: what the
    measured model's weights were when not what `source_model` names, written as a
    comment, e.g. the default model's dequantised GGUF, see sources.weights_note).

    Each slice is a contiguous range of kept blocks, layer_range [start, end). A kept
    block with a zeroed sublayer gets a one-layer slice of its own whose output
    projection tensors are scaled by 0 (passthrough's `scale` parameter with the
    `checkpoint_filters` of that layer).
    """
    blocks = set(plan.remove["blocks"])
    zero = {"attn": {l for l in plan.remove["attn"] if l not in blocks},
            "mlp": {l for l in plan.remove["mlp"] if l not in blocks}}
    special = zero["attn"] | zero["mlp"]
    slices: list[tuple[int, int]] = []
    for start, end in kept_ranges(plan):
        cut = start
        for l in range(start, end):
            if l in special:
                if cut < l:
                    slices.append((cut, l))
                slices.append((l, l + 1))
                cut = l + 1
        if cut < end:
            slices.append((cut, end))
    model_ref = json.dumps(source_model)
    removed = ", ".join(map(str, sorted(blocks))) or "none"
    lines = [
        f"# Layer Lab pruning plan for {plan.model['name']} ({plan.n_layers} layers) -> "
        f"{plan.n_layers - len(blocks)} layers",
        f"# removed blocks: {removed}; zeroed attention: {sorted(zero['attn']) or 'none'}; "
        f"zeroed MLP: {sorted(zero['mlp']) or 'none'}",
        f"# model: {model_ref}" + (f"; the plan was measured on weights {weights}" if weights else ""),
        "# build with: mergekit-yaml this.yaml OUT_DIR (another copy of the model: python -m analysis plan/apply "
        "--mergekit-model REF, or edit every `model:` below)",
        "slices:",
    ]
    for start, end in slices:
        lines += ["  - sources:", f"      - model: {model_ref}", f"        layer_range: [{start}, {end}]"]
        filters = [f for kind in ("attn", "mlp") if end == start + 1 and start in zero[kind]
                   for f in checkpoint_filters(hf, plan.n_layers, start, kind)]
        if filters:
            lines += ["        parameters:", "          scale:"]
            lines += [f"            - filter: {json.dumps(f)}\n              value: 0.0" for f in filters]
            lines += ["            - value: 1.0"]
    lines += ["merge_method: passthrough", f"dtype: {dtype}", ""]
    return "\n".join(lines)


# Top-level keys of a passthrough config that do not change which layers it keeps.
HARMLESS_KEYS = ("slices", "merge_method", "dtype", "out_dtype", "tokenizer_source", "tokenizer", "chat_template",
                 "base_model")


def read_passthrough(text: str) -> tuple[str, list[tuple[int, int]]]:
    """(source model, kept [start, end) ranges) of a MergeKit passthrough config that
    only drops layers of one model (PruneMe's output, or Layer Lab's own export without
    zeroed sublayers). Anything else raises ValueError saying why it is not a drop."""
    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML ({str(err).splitlines()[0][:120]})") from err
    if not isinstance(config, dict):
        raise ValueError("a MergeKit config is a YAML mapping with 'slices' and 'merge_method'")
    method = config.get("merge_method")
    if method != "passthrough":
        raise ValueError(f"merge_method {str(method)[:40]!r} merges weights; only a passthrough config that drops "
                         "layers of one model can become a plan")
    extra = sorted(str(k) for k in config if k not in HARMLESS_KEYS)
    if extra:
        raise ValueError(f"top-level {', '.join(extra)[:80]} would change the weights; only dropping layers can "
                         "become a plan")
    slices = config.get("slices")
    if not isinstance(slices, list) or not slices:
        raise ValueError("the config has no 'slices' list (a passthrough drop lists the kept layer ranges)")
    models, ranges = set(), []
    for i, piece in enumerate(slices, start=1):
        sources = piece.get("sources") if isinstance(piece, dict) else None
        if not isinstance(sources, list) or len(sources) != 1 or not isinstance(sources[0], dict):
            raise ValueError(f"slice {i} must have exactly one source (several sources merge layers)")
        source = sources[0]
        if piece.get("parameters") or source.get("parameters") or set(piece) - {"sources"}:
            raise ValueError(f"slice {i} has parameters (scale, weight, ...): only dropping layers can become a "
                             "plan (a Layer Lab export with zeroed sublayers: import its JSON plan instead)")
        span = source.get("layer_range")
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                   for x in span) and 0 <= span[0] < span[1]):
            raise ValueError(f"slice {i} needs layer_range: [start, end) with 0 <= start < end, not {span!r:.40}")
        if not isinstance(source.get("model"), str):
            raise ValueError(f"slice {i} names no model")
        models.add(source["model"])
        if ranges and span[0] < ranges[-1][1]:
            raise ValueError(f"slice {i} (layers {span[0]}..{span[1] - 1}) repeats or reorders layers; a plan can "
                             "only drop them")
        ranges.append((span[0], span[1]))
    if len(models) > 1:
        raise ValueError(f"the slices come from {len(models)} models ({', '.join(sorted(models))[:120]}); a plan "
                         "drops layers of one model")
    if config.get("base_model") not in (None, *models):
        raise ValueError("base_model names another model than the slices")
    return models.pop(), ranges


def dropped_blocks(ranges: list[tuple[int, int]], n_layers: int) -> list[int]:
    """The blocks of an n_layers model that no kept range covers (ValueError when a range
    goes past the model's last layer)."""
    if ranges[-1][1] > n_layers:
        raise ValueError(f"layer_range [{ranges[-1][0]}, {ranges[-1][1]}) goes past the model's {n_layers} layers")
    kept = {l for start, end in ranges for l in range(start, end)}
    return [l for l in range(n_layers) if l not in kept]
