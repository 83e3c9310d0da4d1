"""A tiny random-init Llama-style model and a byte-level tokenizer, built locally."""
from __future__ import annotations

from pathlib import Path

import torch

TEXT = (
    "The cat sat on the mat. A dog barked at the moon while the river ran past the old mill. "
    "def add(a, b):\n    return a + b\n\nALICE: Where are you going?\nBOB: To the market, then home.\n"
    "| planet | moons |\n| Mars | 2 |\n| Earth | 1 |\n"
) * 6


def build_tiny_model(directory: Path, n_layers: int = 4, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so layers differ visibly
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.save_pretrained(directory)
    return directory


def build_tiny_parallel_model(directory: Path, n_layers: int = 3, seed: int = 0) -> Path:
    """A tiny random GPT-NeoX with parallel attention and MLP (x + attn(ln1 x) + mlp(ln2 x)),
    sharing the tiny byte-level tokenizer."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    build_tiny_model(directory, n_layers=1, seed=seed)  # writes the tokenizer (the weights are replaced)
    fast = PreTrainedTokenizerFast.from_pretrained(directory)
    config = GPTNeoXConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
        num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.25, use_parallel_residual=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    GPTNeoXForCausalLM(config).save_pretrained(directory)
    return directory
