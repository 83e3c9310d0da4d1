"""The one place that knows the model's hook names and how to read the residual out.

`readout(model, resid)` turns residual vectors into the logits the model would give if
they were the output of its last block: final norm applied afresh, unembedding, then
the architecture's own post-unembedding transform (Gemma's final logit soft-capping,
Cohere's logit scale, ...) exactly as the model's forward applies it.
"""
from __future__ import annotations

import torch


def readout(model, resid: torch.Tensor) -> torch.Tensor:
    """Logits [..., V] of residual vectors [..., d]: final norm, unembed, output transform."""
    bridge = model.bridge
    logits = bridge.unembed(bridge.ln_final(resid))
    transform = getattr(getattr(bridge, "adapter", None), "apply_output_logits_transform", None)
    return transform(logits) if transform is not None else logits
