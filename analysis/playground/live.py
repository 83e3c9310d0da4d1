"""The live layer playground: any set of removals, evaluated fast, next to the full model.

A `Playground` holds, per (model, corpus, seq_len, max_windows), the clean residuals of
every corpus window (`ablation.clean_states` per batch, kept on the CPU) and the full
model's per-token losses, built once. A removal is evaluated with
`ablation.suffix_logits`, restarting from the residual entering the first changed layer
(DESIGN.md section 5), and its per-token losses are memoised (LRU). When the residuals
would exceed a memory budget, the streams between attention and MLP are dropped first
and then only every s-th layer's residual is kept; a removal then restarts from the
nearest kept layer at or before its first change, which gives the same numbers.

Prompts and generation live in `prompts.py`, parameter and FLOP counting in `costs.py`.
"""
from __future__ import annotations

import itertools
import math
import random
import statistics
import threading
import time

import numpy as np
import torch

from analysis.core.kinds import Part
from analysis.core import store
from analysis.model.removal import KINDS, Removal, RemovalHooks
from analysis.ablate.replay import CleanStates, clean_states, removal_context, run_blocks, suffix_logits
from analysis.model.hooks import readout
from analysis.measure.collect import batch_tokens_for, batches, token_nll
from analysis.data.evaluation import windows_for
from analysis.ablate.memo import EVALUATIONS, Evaluation, playground_key
from analysis.ablate.progressive import Progressive, Scheduler

CLEAN_BUDGET_BYTES = 2 * 1024 ** 3
MEMO_SIZE = 64
KIND_WORDS = {"blocks": "blocks", "attn": "attention sublayers", "mlp": "MLP sublayers"}
_SERIALS = itertools.count(1)


class Playground:
    """Clean residuals of the corpus windows, built once, and memoised evaluations."""

    def __init__(self, model, windows: torch.Tensor, *, batch_tokens: int | None = None,
                 budget_bytes: int = CLEAN_BUDGET_BYTES, memo_size: int = MEMO_SIZE, key: tuple | None = None) -> None:
        self.model = model
        self.windows = windows.cpu()
        self.batch_tokens = batch_tokens or batch_tokens_for(model)
        self.budget_bytes = budget_bytes
        self.memo_size = memo_size
        self.states: list[CleanStates] = []
        self.full: Evaluation | None = None
        self.stride = 1
        self.keep_mid = not model.parallel_attn_mlp
        self.key = key  # with a key, evaluations go to the memo shared by all sessions (and the sweep)
        self._memo = EVALUATIONS if key is not None else store.LRU(memo_size)
        self._lock = threading.Lock()
        self._scheduler = None
        self.serial = next(_SERIALS)  # names this object's build job (a rebuilt playground gets a new one)

    def _plan_storage(self) -> None:
        W, T = self.windows.shape
        L = self.model.n_layers
        per_layer = W * T * self.model.d_model * next(self.model.hf_model.parameters()).element_size()
        if self.keep_mid and (2 * L + 1) * per_layer > self.budget_bytes:
            self.keep_mid = False
        if (L + 1) * per_layer > self.budget_bytes:
            self.stride = math.ceil((L + 1) * per_layer / max(1, self.budget_bytes))

    def build(self, progress=None) -> "Playground":
        """One clean forward per batch, keeping the residuals on the CPU (idempotent).
        Atomic: the states and the full model's losses appear together at the end, so a
        build that stops half-way (an error, a cancelled job) leaves the playground
        unbuilt, and the next build starts from nothing, not from its leftovers."""
        with self._lock:
            if self.full is not None:
                return self
            self._plan_storage()
            model, total = self.model, self.windows.shape[0]
            parts, states = [], []
            for offset, chunk in batches(self.windows, self.batch_tokens):
                tokens = chunk.to(model.device)
                with model.lock:
                    clean = clean_states(model, tokens)
                parts.append(token_nll(clean.logits, tokens).cpu().numpy())
                resid = [t.cpu() if l % self.stride == 0 else None for l, t in enumerate(clean.resid)]
                mid = [t.cpu() if self.keep_mid and t is not None else None for t in clean.mid]
                states.append(CleanStates(chunk, resid, mid, None, clean.inputs))
                del clean
                if progress:
                    done = min(total, offset + chunk.shape[0])
                    progress(done / total, f"Keeping the clean residuals: {done}/{total} windows")
            self.states = states
            self.full = Evaluation(Removal(), np.concatenate(parts).astype(np.float64))
        return self

    def remember(self, removal: Removal, nll: np.ndarray) -> Evaluation:
        result = Evaluation(removal, np.asarray(nll, dtype=np.float64))
        self._memo.put((self.key, removal), result)
        return result

    def request(self, removal: Removal, owner=None):
        """A `progressive.Progressive` for `removal` (complete at once when memoised):
        the caller reads its running estimate while a worker fills it in, batch by batch."""
        self.build()
        done = self.full if removal.is_empty() else self._memo.get((self.key, removal))
        if done is not None:
            job = Progressive(removal, 1, self.windows.shape[0])
            job.add(0, done.nll)
            return job
        with self._lock:
            if self._scheduler is None:
                self._scheduler = Scheduler(self)
        return self._scheduler.request(removal, owner)

    def evaluate(self, removal: Removal, memo: bool = True) -> Evaluation:
        """Per-token losses with `removal` applied (the full model's when nothing is removed)."""
        if self.full is None:
            self.build()
        if removal.is_empty():
            return self.full
        result = self._memo.get((self.key, removal)) if memo else None
        if result is None:
            parts = [self._batch_nll(state, removal) for state in self.states]
            result = Evaluation(removal, np.concatenate(parts).astype(np.float64))
            if memo:
                self.remember(removal, result.nll)
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
        with model.lock, removal_context(model, state.inputs, hooks):
            if resid[k] is not None and (not mid_path or mid[k] is not None):
                logits = suffix_logits(model, CleanStates(tokens, resid, mid, None, state.inputs), removal, hooks)
            else:  # restart from the nearest kept residual at or before layer k
                start = max(l for l in range(k + 1) if state.resid[l] is not None)
                hooks.set(removal)
                with torch.inference_mode():
                    h = state.resid[start].to(device)
                    logits = readout(model, run_blocks(model, h, start, state.inputs, removal))
            nll = token_nll(logits, tokens)
        return nll.cpu().numpy()


KEEP_PLAYGROUNDS = 2
PROGRESS_WINDOWS = 2  # windows per clean-state batch of a shared playground: the step of a progressive estimate
_PLAYGROUNDS = store.LRU(KEEP_PLAYGROUNDS, name="playground.live.playgrounds")


def memoized(model, corpus, seq_len: int, max_windows: int | None, part: Part, removal: Removal):
    """(full, pruned) Evaluations of `removal` when that playground exists and has it
    memoised; None otherwise (nothing is computed)."""
    key = playground_key(model, corpus, seq_len, max_windows, part)
    playground = _PLAYGROUNDS.get(key)
    if playground is None or playground.full is None:
        return None
    pruned = playground.full if removal.is_empty() else EVALUATIONS.get((key, removal))
    return None if pruned is None else (playground.full, pruned)


def shared_playground(model, corpus, seq_len: int, max_windows: int | None = None, part: Part = "all") -> Playground:
    """The playground shared by every session for (model, corpus, seq_len, max_windows)
    over the `part` of the corpus's windows (evaluation.part_windows), built or not: the
    app builds it once as a background job that every session joins (ui/context)."""
    key = playground_key(model, corpus, seq_len, max_windows, part)

    def create() -> Playground:
        windows = windows_for(model, corpus, seq_len, max_windows, part)
        return Playground(model, windows, key=key, batch_tokens=PROGRESS_WINDOWS * windows.shape[1])

    return _PLAYGROUNDS.get_or_create(key, create)


def get_playground(model, corpus, seq_len: int, max_windows: int | None = None, progress=None,
                   part: Part = "all") -> Playground:
    """`shared_playground`, built here (in the caller's thread) when it is not yet."""
    return shared_playground(model, corpus, seq_len, max_windows, part).build(progress)


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
