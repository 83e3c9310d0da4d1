"""The live layer playground: any set of removals, evaluated fast, next to the full model.

A `Playground` holds, per (model, corpus, seq_len, max_windows), the clean residuals of
every corpus window (`replay.clean_states` per group of windows, kept on the CPU) and the
full model's per-token losses, built once. A removal is evaluated group by group,
restarting from the residual entering the first changed layer (`replay.restart_point`,
DESIGN.md section 5), and its per-token losses are memoised (LRU); the groups and the
running estimate are `progressive.py`'s. When the residuals
would exceed a memory budget, the streams between attention and MLP are dropped first
and then only every s-th layer's residual is kept; a removal then restarts from the
nearest kept layer at or before its first change, which gives the same numbers.

Prompts and generation live in `prompts.py`, parameter and FLOP counting in `costs.py`.
"""
from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import torch

from analysis.core.kinds import Part
from analysis.core import store
from analysis.model.removal import KINDS, Removal, RemovalHooks
from analysis.ablate.replay import CleanStates, clean_states, removal_context, restart_point, run_blocks
from analysis.model.hooks import readout
from analysis.measure.collect import batch_tokens_for, token_nll
from analysis.data.evaluation import windows_for
from analysis.ablate.memo import EVALUATIONS, Evaluation, playground_key
from analysis.ablate.progressive import Progressive, Scheduler, group_windows

CLEAN_BUDGET_BYTES = 2 * 1024 ** 3
MEMO_SIZE = 64
SAMPLE_WINDOWS = 4  # the stratified sample every removal is evaluated on first: the first estimate
STREAMS_KEPT = 2  # removals whose residual streams are kept, for a toggle that adds a later layer to them
READOUT_WINDOWS = 4  # windows read out at a time: the step of the estimate within a group, and of preemption
KIND_WORDS = {"blocks": "blocks", "attn": "attention sublayers", "mlp": "MLP sublayers"}
_SERIALS = itertools.count(1)


class Playground:
    """Clean residuals of the corpus windows, built once, and memoised evaluations.

    The windows sit in groups (`progressive.group_windows`): a stratified sample of
    `sample_size` windows first, then the rest in groups of about `batch_tokens` tokens.
    Every group is one forward with the arguments (masks, positions) the model built for
    it, so a window's losses do not depend on which group it is in."""

    def __init__(self, model, windows: torch.Tensor, *, batch_tokens: int | None = None,
                 budget_bytes: int = CLEAN_BUDGET_BYTES, memo_size: int = MEMO_SIZE, key: tuple | None = None,
                 sample_size: int | None = None) -> None:
        self.model = model
        self.windows = windows.cpu()
        self.batch_tokens = batch_tokens or batch_tokens_for(model)
        self.budget_bytes = budget_bytes
        self.memo_size = memo_size
        group = max(1, self.batch_tokens // self.windows.shape[1])
        self.groups = group_windows(key, self.windows.shape[0], sample_size or min(SAMPLE_WINDOWS, group), group)
        self.states: list[CleanStates] = []  # per group
        self.full: Evaluation | None = None
        self.window_loss: np.ndarray | None = None  # the full model's mean NLL per window
        self.stride = 1
        self.keep_mid = not model.parallel_attn_mlp
        self.key = key  # with a key, evaluations go to the memo shared by all sessions (and the sweep)
        self._memo = EVALUATIONS if key is not None else store.LRU(memo_size)
        # (removal, group) -> {layer: residual entering it}: the streams of the removals evaluated last
        self._streams = store.LRU(STREAMS_KEPT * len(self.groups))
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
        """One clean forward per group, keeping the residuals on the CPU (idempotent).
        Atomic: the states and the full model's losses appear together at the end, so a
        build that stops half-way (an error, a cancelled job) leaves the playground
        unbuilt, and the next build starts from nothing, not from its leftovers."""
        with self._lock:
            if self.full is not None:
                return self
            self._plan_storage()
            model, total = self.model, self.windows.shape[0]
            nll, states, done = None, [], 0
            for windows in self.groups:
                chunk = self.windows[windows]
                tokens = chunk.to(model.device)
                with model.lock:
                    clean = clean_states(model, tokens)
                part = token_nll(clean.logits, tokens).cpu().numpy().astype(np.float64)
                if nll is None:
                    nll = np.zeros((total, part.shape[1]), dtype=np.float64)
                nll[windows] = part
                resid = [t.cpu() if l % self.stride == 0 else None for l, t in enumerate(clean.resid)]
                mid = [t.cpu() if self.keep_mid and t is not None else None for t in clean.mid]
                states.append(CleanStates(chunk, resid, mid, None, clean.inputs))
                del clean
                done += len(windows)
                if progress:
                    progress(done / total, f"Keeping the clean residuals: {done}/{total} windows")
            self.states = states
            self.window_loss = nll.mean(axis=1)
            self.full = Evaluation(Removal(), nll)
        return self

    def remember(self, removal: Removal, nll: np.ndarray) -> Evaluation:
        result = Evaluation(removal, np.asarray(nll, dtype=np.float64))
        self._memo.put((self.key, removal), result)
        return result

    def request(self, removal: Removal, owner=None):
        """A `progressive.Progressive` for `removal` (complete at once when memoised):
        the caller reads its running estimate while a worker fills it in, group by group."""
        self.build()
        done = self.full if removal.is_empty() else self._memo.get((self.key, removal))
        if done is not None:
            job = Progressive(removal, self.windows.shape[0])
            job.add(slice(None), done.nll)
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
            job = Progressive(removal, self.windows.shape[0])
            for group in range(len(self.groups)):
                self.group_nll(group, removal, job.add)
            result = Evaluation(removal, job.nll())
            if memo:
                self.remember(removal, result.nll)
        return result

    def group_nll(self, group: int, removal: Removal, add, done: np.ndarray | None = None, check=None) -> None:
        """Per-token losses of group `group`'s windows under `removal`, passed to
        add(window indices, nll [n, T-1]) a few windows at a time (READOUT_WINDOWS), the
        windows marked in `done` skipped. `check()` runs before each block and each
        chunk's readout and may raise to stop (the chunks already added stay)."""
        windows = self.groups[group]
        rows = np.arange(len(windows)) if done is None else np.flatnonzero(~done[windows])
        if rows.size == 0:
            return
        state, model, device = self.states[group], self.model, self.model.device
        hooks = RemovalHooks(model.n_layers)
        with model.lock, removal_context(model, state.inputs, hooks), torch.inference_mode():
            hooks.set(removal)
            start, h, stream = self._restart(group, removal)
            kept: dict = {}
            h = run_blocks(model, h.to(device), start, state.inputs, removal, check=check, keep=kept,
                           keep_every=self.stride)
            self._keep_stream(removal, group, stream | kept)
            tokens = state.tokens.to(device)
            for chunk in np.array_split(rows, math.ceil(rows.size / READOUT_WINDOWS)):
                if check is not None:
                    check()
                index = torch.as_tensor(chunk, device=h.device)
                nll = token_nll(readout(model, h[index]), tokens[index])
                add(windows[chunk], nll.cpu().numpy())

    def _keep_stream(self, removal: Removal, group: int, stream: dict) -> None:
        """Keep a removal's residual stream of one group on the CPU, like the clean residuals."""
        self._streams.put((removal, group), {layer: t.cpu() for layer, t in stream.items()})

    def _restart(self, group: int, removal: Removal) -> tuple[int, torch.Tensor, dict]:
        """(first block to run, the residual entering it, {layer: residual entering it} of
        `removal` up to that block) for group `group`: from the clean residual entering the
        removal's first changed layer (`replay.restart_point`; or the nearest kept one
        before it), or, when later, from the stream of a removal evaluated just before
        that agrees with this one up to some layer (a toggle that adds a layer after the
        ones already removed then runs only the blocks from that layer on)."""
        state, model = self.states[group], self.model
        k = removal.first_layer()
        attn_zero, mlp_zero = removal.zeroed()
        mid_path = k not in removal.blocks and k in mlp_zero and k not in attn_zero and not model.parallel_attn_mlp
        if state.resid[k] is not None and (not mid_path or state.mid[k] is not None):
            start, h = restart_point(model, state, removal, k)
        else:  # restart from the nearest kept residual at or before layer k
            start = max(l for l in range(k + 1) if state.resid[l] is not None)
            h = state.resid[start]
        best = (start, h, {l: r for l, r in enumerate(state.resid[:start]) if r is not None} | {start: h})
        for (other, g), stream in self._streams.items():
            agree = other.first_difference(removal)  # both run the same blocks before this layer
            if g != group or agree is None:
                continue
            at = max((l for l in stream if best[0] < l <= agree), default=None)
            if at is not None:
                best = (at, stream[at], {l: r for l, r in stream.items() if l <= at})
        return best


KEEP_PLAYGROUNDS = 2
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
        return Playground(model, windows, key=key)

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
