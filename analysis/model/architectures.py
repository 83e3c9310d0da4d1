"""The architecture families Layer Lab verifies, what removing a sublayer means in each,
and the load-time check that a booted model gives what the analyses assume.

`FAMILIES` is the list the README's "Supported architectures" table and the test matrix
(tests/arch/test_matrix.py) cover. `structure(bridge)` reads from the booted bridge
how a block is built (parallel residual, norms after the sublayers, routed experts), and
`removal_notes` says in words what "attention removed" / "MLP removed" then means
(DESIGN.md section 3). `check_model` runs a few tokens and refuses a model whose hooks
do not give what the analyses read (the readout after the last block must equal the
model's own logits; the MLP activation must be d_mlp wide).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.model import hooks


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple  # transformers `config.model_type` values of this family
    example: str  # a hub name of a real model of the family
    note: str = ""  # what is special about removal or sparsity in it


FAMILIES = (
    Family("Llama", ("llama",), "HuggingFaceTB/SmolLM2-135M", "the default model's family"),
    Family("Mistral", ("mistral",), "mistralai/Mistral-7B-v0.1", "sliding-window attention, grouped-query attention"),
    Family("Qwen2 / Qwen2.5", ("qwen2",), "Qwen/Qwen2.5-0.5B", "q/k/v biases; sliding window on upper layers"),
    Family("Qwen3", ("qwen3",), "Qwen/Qwen3-0.6B", "q/k norms"),
    Family("Gemma-2", ("gemma2",), "google/gemma-2-2b",
           "sandwich norms: a removed sublayer's normed output is zero; logit soft-capping; eager attention only"),
    Family("Gemma-3 (text)", ("gemma3_text",), "google/gemma-3-1b-pt", "sandwich norms; local/global layers"),
    Family("Phi-3", ("phi3",), "microsoft/Phi-3-mini-4k-instruct", "fused qkv and gate_up projections"),
    Family("GPT-2", ("gpt2",), "openai-community/gpt2",
           "LayerNorm with biases, Conv1D, learned positions; GELU MLP"),
    Family("GPT-NeoX / Pythia", ("gpt_neox",), "EleutherAI/pythia-160m",
           "parallel residual: attention and MLP read the same input"),
    Family("OLMo-2", ("olmo2",), "allenai/OLMo-2-0425-1B", "norms after the sublayers (post-norm)"),
    Family("Mixtral", ("mixtral",), "mistralai/Mixtral-8x7B-v0.1",
           "mixture of experts: the MLP is the routed mixture; no sparsity"),
    Family("Qwen2-MoE", ("qwen2_moe",), "Qwen/Qwen1.5-MoE-A2.7B",
           "mixture of experts plus a shared expert: the MLP is both; no sparsity"),
    Family("OLMoE", ("olmoe",), "allenai/OLMoE-1B-7B-0924",
           "mixture of experts (64 experts, 8 per token), q/k norms: the MLP is the routed mixture; no sparsity"),
)


def supported_text() -> str:
    return ", ".join(f.name for f in FAMILIES)


def family_of(model_type: str) -> Family | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


class UnsupportedModel(Exception):
    """The booted model does not give what the analyses read; the message says why."""


@dataclass(frozen=True)
class Structure:
    """How a block is built, as the bridge maps it."""

    parallel: bool  # attention and MLP read the same input stream (no resid_mid)
    norms: str  # "pre" (norm feeds each sublayer), "post" (norm after each), "sandwich" (both)
    moe: bool  # the MLP is a routed mixture of experts


def structure(bridge) -> Structure:
    block = bridge.blocks[0]
    names = {name for name, _ in block.named_children()}
    has_pre, has_post = {"ln1", "ln2"} & names, {"ln1_post", "ln2_post"} & names
    norms = "sandwich" if has_pre and has_post else ("post" if has_post else "pre")
    mlp = getattr(block, "mlp", None)
    moe = type(mlp).__name__ == "MoEBridge" and not getattr(mlp, "bound_dense", False)
    return Structure(bool(getattr(bridge.cfg, "parallel_attn_mlp", False)), norms, moe)


PARALLEL_NOTE = ("Parallel residual: attention and MLP both read the block's input and add to it; removing one "
                 "leaves the other's input unchanged (there is no stream between them).")
POST_NORM_NOTE = ("Norms after the sublayers: removing attention or MLP zeroes the normed output that is added to "
                  "the residual (the same as zeroing its output projection: the norm of zero is zero).")
SANDWICH_NOTE = ("Sandwich norms: removing attention or MLP zeroes its post-normed output (the same as zeroing its "
                 "output projection: the norm of zero is zero).")
MOE_NOTE = ("Mixture of experts: 'the MLP' is the routed expert mixture (plus any shared expert); removing it zeroes "
            "the whole mixture, the same as zeroing every expert's down projection.")
MOE_SPARSITY_NOTE = ("Activation sparsity is not measured for mixture-of-experts MLPs: the activation entering a down "
                     "projection exists per expert and only for the tokens routed to it, so one fraction per layer "
                     "over all positions is not defined.")


def removal_notes(shape: Structure) -> list[str]:
    """What removing a sublayer means in this architecture (DESIGN.md section 3), one
    sentence each; empty for a plain pre-norm sequential block."""
    notes = [PARALLEL_NOTE] if shape.parallel else []
    notes += {"post": [POST_NORM_NOTE], "sandwich": [SANDWICH_NOTE]}.get(shape.norms, [])
    return notes + ([MOE_NOTE] if shape.moe else [])


def notes_for(model) -> list[str]:
    """`removal_notes` of a loaded model."""
    return removal_notes(structure(model.bridge))


def check_model(model, tokens: torch.Tensor) -> None:
    """Raise UnsupportedModel unless the bridge of `model` (a LoadedModel) has every hook
    the analyses read, its MLP activation is d_mlp wide (dense MLPs) and
    `hooks.readout` of the last block's output equals the model's own logits on
    `tokens` [1, T]."""
    missing = [name for name in hooks.REQUIRED if name not in model.bridge.hook_dict]
    if missing:
        raise UnsupportedModel(f"it lacks the hook {missing[0]}")
    last, act = hooks.resid_post(model.n_layers - 1), hooks.mlp_post(0)
    with torch.inference_mode(), hooks.capture(model, [last, act]) as got:
        logits = model.bridge(tokens.to(model.device), return_type="logits").float()
        width = got[act].shape[-1]
        lens = hooks.readout(model, got[last]).float()
    if not model.moe and width != model.d_mlp:
        raise UnsupportedModel(f"its MLP activation hook is {width} wide, not d_mlp = {model.d_mlp}")
    tol = 1e-4 if model.dtype == "float32" else 2e-2
    scale = float(logits.abs().max().clamp_min(1.0))
    if not bool(torch.isfinite(logits).all()) or float((lens - logits).abs().max()) > tol * scale:
        raise UnsupportedModel("the logit-lens readout after the last block does not equal the model's logits "
                               "(its final norm, unembedding or output transform is not the one Layer Lab applies)")
