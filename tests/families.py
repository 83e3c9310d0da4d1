"""Tiny random-weight models of real architecture families, built from local configs.

Each family gets its distinctive feature at a size the test windows (64 tokens)
exercise: a sliding window shorter than the window, grouped-query attention, qkv biases,
q/k norms, sandwich norms and soft-capping, tied embeddings, fused qkv / gate_up
projections, LayerNorm with biases and Conv1D, learned positions, parallel residual,
norms after the sublayers, top-k routing over several experts. All are 4 layers of
width 64 with the default model's tokenizer (vocabulary 49,152), so the corpus protocol
is the real one. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

COMMON = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
ALTERNATING = ["sliding_attention", "full_attention"] * 2

# family -> (AutoConfig model_type, config overrides, an example hub name)
FAMILIES: dict[str, tuple[str, dict, str]] = {
    "llama": ("llama", dict(), "HuggingFaceTB/SmolLM2-135M"),
    "mistral": ("mistral", dict(sliding_window=24), "mistralai/Mistral-7B-v0.1"),
    "qwen2": ("qwen2", dict(use_sliding_window=True, sliding_window=24, max_window_layers=2),
              "Qwen/Qwen2.5-0.5B"),
    "qwen3": ("qwen3", dict(head_dim=16), "Qwen/Qwen3-0.6B"),
    "gemma2": ("gemma2", dict(sliding_window=24, head_dim=16, final_logit_softcapping=5.0,
                              attn_logit_softcapping=20.0, tie_word_embeddings=True), "google/gemma-2-2b"),
    "gemma3_text": ("gemma3_text", dict(sliding_window=24, head_dim=16, layer_types=ALTERNATING,
                                        tie_word_embeddings=True), "google/gemma-3-1b-pt"),
    "phi3": ("phi3", dict(), "microsoft/Phi-3-mini-4k-instruct"),
    "gpt2": ("gpt2", dict(num_key_value_heads=None, n_embd=64, n_layer=4, n_head=4, n_inner=128, n_positions=256,
                          activation_function="gelu_new"), "openai-community/gpt2"),
    "gpt_neox": ("gpt_neox", dict(num_key_value_heads=None, rotary_pct=0.25, use_parallel_residual=True),
                 "EleutherAI/pythia-160m"),
    "olmo2": ("olmo2", dict(), "allenai/OLMo-2-0425-1B"),
    "mixtral": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2), "mistralai/Mixtral-8x7B-v0.1"),
    "qwen2_moe": ("qwen2_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                                    shared_expert_intermediate_size=128), "Qwen/Qwen1.5-MoE-A2.7B"),
    "olmoe": ("olmoe", dict(num_experts=4, num_experts_per_tok=2), "allenai/OLMoE-1B-7B-0924"),
}

# Architectures TransformerLens 4.3's bridge cannot boot: loading them must give one clear message.
UNSUPPORTED: dict[str, tuple[str, dict, str]] = {
    "biogpt": ("biogpt", dict(num_key_value_heads=None), "microsoft/biogpt"),
}


def default_tokenizer():
    from transformers import AutoTokenizer

    from analysis.model.sources import resolve_source
    path, _ = resolve_source("default")
    return AutoTokenizer.from_pretrained(path)


def family_config(family: str, tokenizer):
    from transformers import AutoConfig

    model_type, overrides, _ = (FAMILIES | UNSUPPORTED)[family]
    kwargs = COMMON | overrides | dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.eos_token_id)
    return AutoConfig.for_model(model_type, **{k: v for k, v in kwargs.items() if v is not None})


def build_family(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a tiny random `family` model with the default tokenizer into `directory`."""
    from transformers import AutoModelForCausalLM

    tokenizer = default_tokenizer()
    config = family_config(family, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger than the default init, so that layers differ visibly
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                p.normal_(0, 0.08)
            elif p.dim() == 1 and "bias" in name:
                p.normal_(0, 0.02)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
