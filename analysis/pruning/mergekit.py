"""A pruning plan as a MergeKit passthrough config that builds the same smaller model
outside Layer Lab."""
from __future__ import annotations

import json

from analysis.pruning.plan import PruningPlan, kept_ranges


def mergekit_yaml(plan: PruningPlan, source_model: str, *, dtype: str = "float32",
                  attn_filter: str = "o_proj", mlp_filter: str = "down_proj") -> str:
    """A MergeKit passthrough config building the pruned model from `source_model`.

    Each slice is a contiguous range of kept blocks, layer_range [start, end). A kept
    block with a zeroed sublayer gets a one-layer slice of its own whose output
    projection is scaled by 0 (passthrough's `scale` parameter with a tensor-name
    filter; `attn_filter` / `mlp_filter` name the projections, Llama-style by default).
    """
    blocks = set(plan.remove["blocks"])
    zero_attn = {l for l in plan.remove["attn"] if l not in blocks}
    zero_mlp = {l for l in plan.remove["mlp"] if l not in blocks}
    special = zero_attn | zero_mlp
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
        f"# removed blocks: {removed}; zeroed attention: {sorted(zero_attn) or 'none'}; "
        f"zeroed MLP: {sorted(zero_mlp) or 'none'}",
        "# build with: mergekit-yaml this.yaml OUT_DIR",
        "slices:",
    ]
    for start, end in slices:
        lines += ["  - sources:", f"      - model: {model_ref}", f"        layer_range: [{start}, {end}]"]
        filters = ([attn_filter] if start in zero_attn and end == start + 1 else []) + \
                  ([mlp_filter] if start in zero_mlp and end == start + 1 else [])
        if filters:
            lines += ["        parameters:", "          scale:"]
            lines += [f"            - filter: {json.dumps(f)}\n              value: 0.0" for f in filters]
            lines += ["            - value: 1.0"]
    lines += ["merge_method: passthrough", f"dtype: {dtype}", ""]
    return "\n".join(lines)
