"""Tiny random-weight models of real architecture families, built from local configs.

Each family gets its distinctive feature at a size the test windows exercise (a sliding
window shorter than the window, grouped-query attention, biases, tied embeddings,
soft-capping, parallel residual, MoE routing). All use the default model's tokenizer
(vocabulary 49,152), so the corpus protocol is the real one. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

COMMON = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

# family -> (AutoConfig model_type, config overrides)
FAMILIES: dict[str, tuple[str, dict]] = {
    "mistral": ("mistral", dict(sliding_window=24)),
    "gemma2": ("gemma2", dict(sliding_window=24, head_dim=16, final_logit_softcapping=5.0,
                              attn_logit_softcapping=20.0, tie_word_embeddings=True)),
}


def default_tokenizer():
    from transformers import AutoTokenizer

    from analysis.loading import resolve_source
    path, _ = resolve_source("default")
    return AutoTokenizer.from_pretrained(path)


def build_family(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a tiny random `family` model with the default tokenizer into `directory`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = FAMILIES[family]
    tokenizer = default_tokenizer()
    config = AutoConfig.for_model(model_type, **(COMMON | overrides | dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id)))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger than the default init, so that layers differ visibly
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name:
                p.normal_(0, 0.08)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
