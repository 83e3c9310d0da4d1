"""Top-k next tokens and greedy continuation of a prompt with removals applied.

Decoding runs through the Hugging Face model the bridge wraps, unwrapped (`unwrapped.py`:
the same parameters, the removed sublayers' outputs zeroed), with the model's own KV cache
(and therefore its own masks and positions).
Results are memoised per (model, prompt, removal, length) and shared by all sessions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.core import store
from analysis.model.removal import Removal, RemovalHooks
from analysis.model.unwrapped import unwrapped

MAX_NEW_TOKENS = 200
MEMO_SIZE = 64


@dataclass(frozen=True)
class PromptResult:
    top: list  # [(token_id, probability)] of the next token after the prompt, best first
    generated: list  # greedy continuation token ids (stops after an end-of-sequence token)


def prompt_tokens(model, prompt: str, max_new: int = 0) -> torch.Tensor:
    """[1, T] token ids: BOS (when the model has one) + the prompt, fitted to the context."""
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if model.bos_token_id is not None:
        ids = [model.bos_token_id] + ids
    if not ids:
        raise ValueError("Enter a prompt: this model has no BOS token to start from.")
    room = max(1, model.n_ctx - max_new)
    return torch.tensor([ids[-room:]], dtype=torch.long)


def eos_ids(model) -> set:
    eos = getattr(model.hf_model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def stream_prompt(model, tokens: torch.Tensor, removal: Removal, max_new: int, k: int = 5):
    """Yield the top-k next tokens [(token_id, probability)] first, then the greedy
    continuation of `tokens` with `removal` applied, one token id at a time (stops after
    an end-of-sequence token).

    Decodes through the HF model the bridge wraps (`decode_step`), with the model's own
    KV cache (and so its own masks and positions); the lock is held per step, so other
    sessions can use the model in between.
    """
    from transformers import DynamicCache

    if not 0 <= max_new <= MAX_NEW_TOKENS:
        raise ValueError(f"generation length must be 0..{MAX_NEW_TOKENS}")
    hf = model.hf_model
    cache = DynamicCache(config=hf.config)
    step_input, eos = tokens.to(model.device), eos_ids(model)
    forward = decode_step(model, removal)
    for step in range(max(1, max_new)):
        with model.lock, torch.inference_mode():
            logits = forward(step_input, past_key_values=cache, use_cache=True).logits[0, -1].float()
        if step == 0:
            probs = torch.softmax(logits, -1)
            values, ids = probs.topk(min(k, probs.numel()))
            yield [(int(i), float(p)) for i, p in zip(ids, values)]
        if max_new == 0:
            return
        next_id = int(logits.argmax())
        yield next_id
        if next_id in eos:
            return
        step_input = torch.tensor([[next_id]], device=model.device)


def decode_step(model, removal: Removal):
    """forward(input_ids, **kwargs) of the model with `removal` applied: the unwrapped HF
    model (`unwrapped.py`: the bridge's per-call overhead is 1.6x a bare `generate` when
    decoding token by token), or the bridge with its zeroing hooks when the model is
    offloaded by Accelerate. Callers hold the model's lock."""
    decoder = unwrapped(model)
    if decoder is not None:
        return lambda *args, **kwargs: decoder(removal, *args, **kwargs)
    hooks = RemovalHooks(model.n_layers)
    hooks.set(removal)

    def forward(*args, **kwargs):
        with model.bridge.hooks(fwd_hooks=hooks.fwd_hooks()):
            return model.hf_model(*args, **kwargs)
    return forward


def run_prompt(model, tokens: torch.Tensor, removal: Removal, max_new: int, k: int = 5) -> PromptResult:
    """Top-k next tokens and the whole greedy continuation (see `stream_prompt`)."""
    stream = stream_prompt(model, tokens, removal, max_new, k)
    top = next(stream)
    return PromptResult(top, list(stream))


_PROMPTS = store.LRU(MEMO_SIZE, name="playground.prompts.texts")


def prompt_key(model, prompt: str, removal: Removal, max_new: int) -> tuple:
    return (model.fingerprint, model.device, model.dtype, prompt, removal, max_new)


def cached_prompt(model, prompt: str, removal: Removal, max_new: int) -> PromptResult | None:
    """The memoised result (shared by all sessions), or None when not generated yet."""
    return _PROMPTS.get(prompt_key(model, prompt, removal, max_new))


def remember_prompt(model, prompt: str, removal: Removal, max_new: int, result: PromptResult) -> None:
    _PROMPTS.put(prompt_key(model, prompt, removal, max_new), result)


def prompt_result(model, prompt: str, removal: Removal, max_new: int) -> PromptResult:
    """`run_prompt` memoised per (model, prompt, removal, length), shared by all sessions."""
    result = cached_prompt(model, prompt, removal, max_new)
    if result is None:
        result = run_prompt(model, prompt_tokens(model, prompt, max_new), removal, max_new)
        remember_prompt(model, prompt, removal, max_new, result)
    return result


def token_text(tokenizer, token_id: int) -> str:
    """A single token as a quoted Python string literal, so spaces and newlines show."""
    return repr(tokenizer.decode([token_id]))


