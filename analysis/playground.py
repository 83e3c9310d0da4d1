"""The live layer playground: any set of removals, evaluated fast, next to the full model.

A `Playground` holds, per (model, corpus, seq_len, max_windows), the clean residuals of
every corpus window (`ablation.clean_states` per batch, kept on the CPU) and the full
model's per-token losses, built once. A removal is evaluated with
`ablation.suffix_logits`, restarting from the residual entering the first changed layer
(DESIGN.md section 5), and its per-token losses are memoised (LRU). When the residuals
would exceed a memory budget, the streams between attention and MLP are dropped first
and then only every s-th layer's residual is kept; a removal then restarts from the
nearest kept layer at or before its first change, which gives the same numbers.

Also here: top-k next tokens and greedy continuation of a prompt with removals
(zeroing hooks on the HF model the bridge wraps, with its KV cache), and how many
parameters and per-token FLOPs a removal takes away, counted from the real layer shapes.
"""
from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from analysis.ablation import (KINDS, CleanStates, Removal, RemovalHooks, clean_states, run_blocks,
                               suffix_logits)
from analysis.hooks import readout
from analysis.collect import batches, token_nll
from analysis.corpus import make_windows

MAX_NEW_TOKENS = 200
CLEAN_BUDGET_BYTES = 2 * 1024 ** 3
MEMO_SIZE = 64
KIND_WORDS = {"blocks": "blocks", "attn": "attention sublayers", "mlp": "MLP sublayers"}


@dataclass(frozen=True)
class Evaluation:
    """Per-token next-token loss [n_windows, T-1] of the corpus under one removal."""

    removal: Removal
    nll: np.ndarray

    @property
    def perplexity(self) -> float:
        return math.exp(float(self.nll.mean()))


class Playground:
    """Clean residuals of the corpus windows, built once, and memoised evaluations."""

    def __init__(self, model, windows: torch.Tensor, *, batch_tokens: int = 2048,
                 budget_bytes: int = CLEAN_BUDGET_BYTES, memo_size: int = MEMO_SIZE) -> None:
        self.model = model
        self.windows = windows.cpu()
        self.batch_tokens = batch_tokens
        self.budget_bytes = budget_bytes
        self.memo_size = memo_size
        self.states: list[CleanStates] = []
        self.full: Evaluation | None = None
        self.stride = 1
        self.keep_mid = not model.parallel_attn_mlp
        self._memo: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _plan_storage(self) -> None:
        W, T = self.windows.shape
        L = self.model.n_layers
        per_layer = W * T * self.model.d_model * next(self.model.hf_model.parameters()).element_size()
        if self.keep_mid and (2 * L + 1) * per_layer > self.budget_bytes:
            self.keep_mid = False
        if (L + 1) * per_layer > self.budget_bytes:
            self.stride = math.ceil((L + 1) * per_layer / max(1, self.budget_bytes))

    def build(self, progress=None) -> "Playground":
        """One clean forward per batch, keeping the residuals on the CPU (idempotent)."""
        with self._lock:
            if self.full is not None:
                return self
            self._plan_storage()
            model, total = self.model, self.windows.shape[0]
            parts = []
            for offset, chunk in batches(self.windows, self.batch_tokens):
                tokens = chunk.to(model.device)
                with model.lock:
                    clean = clean_states(model, tokens)
                parts.append(token_nll(clean.logits, tokens).cpu().numpy())
                resid = [t.cpu() if l % self.stride == 0 else None for l, t in enumerate(clean.resid)]
                mid = [t.cpu() if self.keep_mid and t is not None else None for t in clean.mid]
                self.states.append(CleanStates(chunk, resid, mid, None, clean.inputs))
                del clean
                if progress:
                    done = min(total, offset + chunk.shape[0])
                    progress(done / total, f"Keeping the clean residuals: {done}/{total} windows")
            self.full = Evaluation(Removal(), np.concatenate(parts).astype(np.float64))
        return self

    def evaluate(self, removal: Removal, memo: bool = True) -> Evaluation:
        """Per-token losses with `removal` applied (the full model's when nothing is removed)."""
        if self.full is None:
            self.build()
        if removal.is_empty():
            return self.full
        with self._lock:
            if memo and removal in self._memo:
                self._memo.move_to_end(removal)
                return self._memo[removal]
        parts = [self._batch_nll(state, removal) for state in self.states]
        result = Evaluation(removal, np.concatenate(parts).astype(np.float64))
        if memo:
            with self._lock:
                self._memo[removal] = result
                while len(self._memo) > self.memo_size:
                    self._memo.popitem(last=False)
        return result

    def _batch_nll(self, state: CleanStates, removal: Removal) -> np.ndarray:
        model, device = self.model, self.model.device
        k = removal.first_layer()
        attn_zero, mlp_zero = removal.zeroed()
        mid_path = k not in removal.blocks and k in mlp_zero and k not in attn_zero and not model.parallel_attn_mlp
        resid = [None] * len(state.resid)
        mid = [None] * len(state.mid)
        if state.resid[k] is not None:
            resid[k] = state.resid[k].to(device)
        if mid_path and state.mid[k] is not None:
            mid[k] = state.mid[k].to(device)
        tokens = state.tokens.to(device)
        hooks = RemovalHooks(model.n_layers)
        with model.lock, model.bridge.hooks(fwd_hooks=hooks.fwd_hooks()):
            if resid[k] is not None and (not mid_path or mid[k] is not None):
                logits = suffix_logits(model, CleanStates(tokens, resid, mid, None, state.inputs), removal, hooks)
            else:  # restart from the nearest kept residual at or before layer k
                start = max(l for l in range(k + 1) if state.resid[l] is not None)
                hooks.set(removal)
                with torch.inference_mode():
                    h = state.resid[start].to(device)
                    logits = readout(model, run_blocks(model, h, start, state.inputs, skip=removal.blocks))
            nll = token_nll(logits, tokens)
        return nll.cpu().numpy()


_PLAYGROUNDS: OrderedDict = OrderedDict()
_REGISTRY_LOCK = threading.Lock()
KEEP_PLAYGROUNDS = 2


def get_playground(model, corpus, seq_len: int, max_windows: int | None = None, progress=None) -> Playground:
    """The shared, built playground for (model, corpus, seq_len, max_windows)."""
    key = (model.fingerprint, model.device, model.dtype, corpus.sha256, seq_len, max_windows)
    with _REGISTRY_LOCK:
        playground = _PLAYGROUNDS.get(key)
        if playground is None:
            windows = make_windows(model.tokenizer, corpus.text, seq_len, model.n_ctx, max_windows)
            playground = _PLAYGROUNDS[key] = Playground(model, windows)
        _PLAYGROUNDS.move_to_end(key)
        while len(_PLAYGROUNDS) > KEEP_PLAYGROUNDS:
            _PLAYGROUNDS.popitem(last=False)
    return playground.build(progress)


def describe(removal: Removal, n_layers: int) -> str:
    """What a removal means, in words."""
    if removal.is_empty():
        return "Nothing removed: this is the full model."
    if len(removal.blocks) == n_layers:
        return (f"All {n_layers} blocks removed: the prediction is the unembedding of the token embeddings "
                "(final norm, then unembedding; no block runs).")
    parts = [f"{KIND_WORDS[kind]} {', '.join(map(str, sorted(getattr(removal, kind))))}"
             for kind in KINDS if getattr(removal, kind)]
    return "Removed " + "; ".join(parts) + "."


def changed_percent(full: float, pruned: float) -> float:
    return 100.0 * (pruned - full) / full


# ---- prompts: next tokens and greedy continuation --------------------------------------

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


def _eos_ids(model) -> set:
    eos = getattr(model.hf_model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def run_prompt(model, tokens: torch.Tensor, removal: Removal, max_new: int, k: int = 5) -> PromptResult:
    """Top-k next tokens and a greedy continuation of `tokens` with `removal` applied.

    Decodes through the HF model the bridge wraps, so the bridge's zeroing hooks apply,
    with the model's own KV cache; the lock is held per step, so other sessions can use
    the model in between.
    """
    from transformers import DynamicCache

    if not 0 <= max_new <= MAX_NEW_TOKENS:
        raise ValueError(f"generation length must be 0..{MAX_NEW_TOKENS}")
    hf, bridge = model.hf_model, model.bridge
    hooks = RemovalHooks(model.n_layers)
    hooks.set(removal)
    cache = DynamicCache(config=hf.config)
    step_input, top, generated, eos = tokens.to(model.device), [], [], _eos_ids(model)
    for step in range(max(1, max_new)):
        with model.lock, torch.inference_mode(), bridge.hooks(fwd_hooks=hooks.fwd_hooks()):
            logits = hf(step_input, past_key_values=cache, use_cache=True).logits[0, -1].float()
        if step == 0:
            probs = torch.softmax(logits, -1)
            values, ids = probs.topk(min(k, probs.numel()))
            top = [(int(i), float(p)) for i, p in zip(ids, values)]
        if max_new == 0:
            break
        next_id = int(logits.argmax())
        generated.append(next_id)
        if next_id in eos:
            break
        step_input = torch.tensor([[next_id]], device=model.device)
    return PromptResult(top, generated)


_PROMPTS: OrderedDict = OrderedDict()
_PROMPTS_LOCK = threading.Lock()


def prompt_result(model, prompt: str, removal: Removal, max_new: int) -> PromptResult:
    """`run_prompt` memoised per (model, prompt, removal, length), shared by all sessions."""
    key = (model.fingerprint, model.device, model.dtype, prompt, removal, max_new)
    with _PROMPTS_LOCK:
        if key in _PROMPTS:
            _PROMPTS.move_to_end(key)
            return _PROMPTS[key]
    result = run_prompt(model, prompt_tokens(model, prompt, max_new), removal, max_new)
    with _PROMPTS_LOCK:
        _PROMPTS[key] = result
        while len(_PROMPTS) > MEMO_SIZE:
            _PROMPTS.popitem(last=False)
    return result


def token_text(tokenizer, token_id: int) -> str:
    """A single token as a quoted Python string literal, so spaces and newlines show."""
    return repr(tokenizer.decode([token_id]))


# ---- what a removal saves ------------------------------------------------------------

@dataclass(frozen=True)
class ComponentCosts:
    """Parameter counts per layer and forward FLOPs per token (2 per multiply-add).

    attn FLOPs = 2 x (attention weight-matrix entries) + 4 x context x n_heads x d_head
    (scores and weighted sum over `context` keys); MLP FLOPs = 2 x (MLP weight-matrix
    entries); plus the unembedding, 2 x d_model x d_vocab. Norms and the embedding
    lookup count as parameters, not FLOPs.
    """

    total_params: int
    attn_params: list
    mlp_params: list
    norm_params: list
    attn_flops: list
    mlp_flops: list
    other_flops: float

    @property
    def total_flops(self) -> float:
        return float(sum(self.attn_flops) + sum(self.mlp_flops) + self.other_flops)


def _count(module) -> tuple[int, int]:
    """(all parameters, weight-matrix entries) of a module, each tensor counted once."""
    seen, params, matrix = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        matrix += p.numel() if p.dim() >= 2 else 0
    return params, matrix


def component_costs(model, context: int) -> ComponentCosts:
    """Per-layer costs from the model's real layer shapes, attention over `context` tokens."""
    cfg = model.bridge.cfg
    attn_p, mlp_p, norm_p, attn_f, mlp_f = [], [], [], [], []
    for block in model.bridge.blocks:
        (a, a_mat), (m, m_mat), (b, _) = _count(block.attn), _count(block.mlp), _count(block)
        attn_p.append(a)
        mlp_p.append(m)
        norm_p.append(b - a - m)
        attn_f.append(2 * a_mat + 4 * context * int(cfg.n_heads) * int(cfg.d_head))
        mlp_f.append(2 * m_mat)
    unembed = model.hf_model.get_output_embeddings().weight
    return ComponentCosts(model.n_params, attn_p, mlp_p, norm_p, attn_f, mlp_f, 2.0 * unembed.numel())


def removed_fractions(costs: ComponentCosts, removal: Removal) -> tuple[float, float]:
    """(fraction of parameters, fraction of per-token FLOPs) that `removal` takes away.

    A removed block saves its attention, MLP and norms; a removed attention or MLP
    sublayer of a kept block saves its own parameters and FLOPs.
    """
    attn, mlp = removal.zeroed()
    params = (sum(costs.attn_params[l] for l in attn) + sum(costs.mlp_params[l] for l in mlp)
              + sum(costs.norm_params[l] for l in removal.blocks))
    flops = sum(costs.attn_flops[l] for l in attn) + sum(costs.mlp_flops[l] for l in mlp)
    return params / costs.total_params, flops / costs.total_flops


# ---- link and toggle helpers ---------------------------------------------------------

def link_values(removal: Removal) -> dict:
    return {"rm_blocks": sorted(removal.blocks), "rm_attn": sorted(removal.attn), "rm_mlp": sorted(removal.mlp)}


# ---- benchmark -----------------------------------------------------------------------

def bench_toggles(model, windows: torch.Tensor, full_every: int = 6, seed: int = 0) -> tuple[float, float]:
    """(median seconds of a single toggle from a warm playground, over every one of the 3L
    single removals in a random order; median seconds of one full bridge forward + loss
    over the same windows, timed after every `full_every`-th toggle so that a change in
    machine load hits both sides alike). Timing is printed, never tested."""
    playground = Playground(model, windows).build()
    L = model.n_layers
    singles = [Removal.of(**{kind: [l]}) for kind in KINDS for l in range(L)]
    random.Random(seed).shuffle(singles)

    def full_forward() -> None:
        for _, chunk in batches(windows, playground.batch_tokens):
            with model.lock, torch.inference_mode():
                token_nll(model.bridge(chunk.to(model.device), return_type="logits"), chunk)

    playground.evaluate(singles[-1], memo=False)  # warm-up
    full_forward()
    toggles, full = [], []
    for i, removal in enumerate(singles):
        start = time.perf_counter()
        playground.evaluate(removal, memo=False)
        toggles.append(time.perf_counter() - start)
        if i % full_every == 0:
            start = time.perf_counter()
            full_forward()
            full.append(time.perf_counter() - start)
    return statistics.median(toggles), statistics.median(full)
