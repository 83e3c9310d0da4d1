"""Iterative greedy removal, exact (LLM-Drop's iterative mode; DESIGN.md section 3).

Step s removes the candidate (a block, attention or MLP sublayer not yet removed) whose
removal, on top of the s already removed, gives the lowest NLL over the windows; every
remaining candidate is re-measured at every step. Two things make this cheaper than one
full forward per candidate while choosing exactly the same candidate:

- Prefix reuse. Each batch keeps the residual stream *with the removals chosen so far
  applied* (h_l and resid_mid_l, l = 0..L). A candidate at layer c changes nothing
  before c, so it restarts from that stream at layer c (`ablation.restart_point`,
  `suffix_logits` with `first=c`, blocks replayed with the arguments the model's own
  forward gave them). After a choice the stream is recomputed from the chosen layer on.
- Branch and bound over batches. NLL is a sum of non-negative per-token terms, so a
  candidate whose NLL over some batches already exceeds the complete NLL of another
  candidate cannot win: it is dropped without measuring its other batches. Candidates
  are measured best-first (lowest mean NLL so far; the previous step's estimates order
  the first batch), batches in order of decreasing NLL of the current model, so the
  likely winner completes early and the losers exceed it soon. Ties go to the lower
  layer (a candidate is dropped only when strictly worse).
- A vocabulary bound (`bound.py`). Once a batch has one exact value, a candidate's
  suffix output is first read out on a subset of the vocabulary, which gives a lower
  bound of its NLL on that batch; if that already exceeds the best complete NLL, the
  candidate is dropped without the full unembedding (float32 models).
- Resumed suffixes. A candidate's run keeps the residual entering each later block. When
  the step chooses layer r, a candidate c < r computes exactly what it computed before up
  to block r (nothing before r changed), so at the next step it resumes from the residual
  it kept at block r instead of restarting at c. The kept tensors fit a memory budget
  (`settings.resume_bytes`); over it, every second (third, ...) layer is kept and a
  candidate resumes from the nearest kept layer at or before r.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from analysis.core.results import Result
from analysis.core.kinds import Kind, Part
from analysis.model import hooks as hook_names
from analysis.core import settings, store
from analysis.measure.collect import batch_tokens_for, batches, token_nll
from analysis.ablate import bound
from analysis.ablate.replay import CleanStates, capture_blocks, clean_states, removal_context, restart_point, run_blocks
from analysis.model.removal import Removal, RemovalHooks
from analysis.data.evaluation import windows_for

KIND_LIMIT = {"blocks": -1, "attn": 0, "mlp": 0}  # how many of the L may go: all blocks but one, every sublayer


def max_removals(kind: Kind, n_layers: int) -> int:
    return n_layers + KIND_LIMIT[kind]


SCHEMA_VERSION = 2


@dataclass
class GreedyResult(store.Record):
    """The greedy order and the exact NLL after each step, plus how much was measured."""

    kind: Kind
    order: list  # layer removed at step 1, 2, ...
    nll_sum: list  # NLL summed over all predicted tokens after each step
    n_tokens: int
    batches_measured: int = 0  # candidate-batches run (each: a suffix of blocks + readout)
    batches_naive: int = 0  # candidate-batches a full re-measurement would run
    state_blocks: int = 0  # blocks run to update the kept streams after each choice
    batches_bounded: int = 0  # candidate-batches dropped by the vocabulary bound (no full unembedding)
    suffix_blocks: int = 0  # blocks run for candidates
    suffix_blocks_restart: int = 0  # ... had every candidate restarted at its own layer

    def perplexities(self) -> list[float]:
        """Calibration perplexity after each step."""
        return [math.exp(s / self.n_tokens) for s in self.nll_sum]


class _Stream:
    """One batch: tokens, block arguments, the residual stream with the chosen removals, and
    per candidate the residuals its last run entered later blocks with."""

    def __init__(self, clean: CleanStates, nll: float) -> None:
        self.state = CleanStates(clean.tokens, list(clean.resid), list(clean.mid), None, clean.inputs)
        self.nll = nll  # NLL sum of the current model (removals so far) on this batch
        self.tokens = clean.tokens.shape[0] * (clean.tokens.shape[1] - 1)
        self.kept: dict = {}  # candidate -> {layer: residual entering that block}

    def advance(self, model, removal: Removal, first: int, hooks: RemovalHooks) -> int:
        """Recompute the stream from layer `first` on with `removal` applied; blocks run.
        Kept residuals stay valid up to block `first` for candidates before it."""
        self.kept = {c: {l: t for l, t in kept.items() if l <= first} for c, kept in self.kept.items() if c < first}
        L, state = model.n_layers, self.state
        start, resid = restart_point(model, state, removal, first)
        names = [hook_names.resid_pre(l) for l in range(start, L)]
        if not model.parallel_attn_mlp:
            names += [hook_names.resid_mid(l) for l in range(start, L)]
        hooks.set(removal)
        with torch.inference_mode(), capture_blocks(model, state.inputs, names, hooks) as got:
            out = run_blocks(model, resid, start, state.inputs, removal) if start < L else resid
            state.resid[L] = out
            for l in range(L - 1, first - 1, -1):
                if l in removal.blocks:
                    state.resid[l] = state.resid[l + 1] if l > first else state.resid[l]
                    state.mid[l] = state.resid[l]
                    continue
                if l >= start:
                    state.resid[l] = got[hook_names.resid_pre(l)]
                    if not model.parallel_attn_mlp:
                        state.mid[l] = got[hook_names.resid_mid(l)]
        return sum(1 for l in range(start, L) if l not in removal.blocks)


def _run_suffix(model, stream: _Stream, removal: Removal, c: int, hooks: RemovalHooks, keep_every: int,
                result: GreedyResult) -> torch.Tensor:
    """The final-normed residual [B, T, d] of the model with `removal` (candidate `c` added
    to the chosen ones), from the residual kept by c's last run or from the stream at c."""
    L = model.n_layers
    restart, resid = restart_point(model, stream.state, removal, c)
    kept = stream.kept.get(c) if keep_every else None
    start = max(kept) if kept else restart
    if kept:
        resid = kept[start]
    result.suffix_blocks += sum(1 for l in range(start, L) if l not in removal.blocks)
    result.suffix_blocks_restart += sum(1 for l in range(restart, L) if l not in removal.blocks)
    new = {} if keep_every else None
    with model.lock, torch.inference_mode():
        with removal_context(model, stream.state.inputs, hooks) if removal.attn or removal.mlp else nullcontext():
            hooks.set(removal)
            if start < L:
                resid = run_blocks(model, resid, start, stream.state.inputs, removal, keep=new, keep_every=keep_every)
            hooks.set(Removal())
        normed = hook_names.final_norm(model, resid)
    if new is not None:
        stream.kept[c] = {**{l: t for l, t in (kept or {}).items() if l <= start}, **new}
    return normed


def _exact(model, stream: _Stream, normed: torch.Tensor) -> tuple[float, torch.Tensor]:
    with model.lock, torch.inference_mode():
        logits = hook_names.unembed(model, normed)
    return float(token_nll(logits, stream.state.tokens).double().sum()), logits


def _streams(model, windows: torch.Tensor, batch_windows: int) -> list[_Stream]:
    streams = []
    for _, chunk in batches(windows, batch_windows * windows.shape[1]):
        chunk = chunk.to(model.device)
        with model.lock:
            clean = clean_states(model, chunk)
        streams.append(_Stream(clean, float(token_nll(clean.logits, chunk).double().sum())))
        del clean
    return streams


def _keep_every(model, streams: list[_Stream]) -> int:
    """Keep every n-th layer's residual so that all candidates' kept residuals fit
    settings.resume_bytes(); 0 (keep none) when even every 4th layer would not fit."""
    L = model.n_layers
    per_layer = sum(s.state.resid[0].numel() * s.state.resid[0].element_size() for s in streams)
    needed = per_layer * L * (L - 1) // 2
    every = max(1, -(-needed // max(1, settings.resume_bytes())))
    return every if every <= 4 else 0


def _step(model, streams, kind: Kind, chosen: list, candidates: list, prior: dict, hooks, result: GreedyResult,
          keep_every: int, use_bound: bool):
    """Branch and bound: (winner, its NLL sum, per-batch NLL of the winner, estimates)."""
    order = sorted(range(len(streams)), key=lambda b: -streams[b].nll / streams[b].tokens)
    partial = {c: 0.0 for c in candidates}  # exact NLL sums, plus the bound of the batch that dropped it
    done = {c: 0 for c in candidates}
    per_batch = {c: {} for c in candidates}
    subsets: dict = {}
    alive, best, best_total = set(candidates), None, math.inf
    seen = lambda c: sum(streams[order[i]].tokens for i in range(done[c]))

    def estimate(c):
        if done[c]:
            return partial[c] / seen(c), c
        return prior.get(c, -math.inf), c  # unmeasured without a prior: one batch first

    while alive:
        c = min(alive, key=estimate)
        b = order[done[c]]
        stream = streams[b]
        normed = _run_suffix(model, stream, Removal.of(**{kind: chosen + [c]}), c, hooks, keep_every, result)
        result.batches_measured += 1
        done[c] += 1
        if b in subsets and best_total < math.inf:
            with model.lock, torch.inference_mode():
                low = bound.exceeding(model, normed, subsets[b], best_total - partial[c])
            if low is not None:
                result.batches_bounded += 1
                partial[c] += low
                alive.discard(c)
                continue
        value, logits = _exact(model, stream, normed)
        if use_bound and b not in subsets:
            with torch.inference_mode():
                subsets[b] = bound.subsets(model, logits, stream.state.tokens)
        del logits
        partial[c] += value
        per_batch[c][b] = value
        if done[c] == len(streams):
            alive.discard(c)
            if partial[c] < best_total or (partial[c] == best_total and c < best):
                best, best_total = c, partial[c]
            alive -= {o for o in alive if partial[o] > best_total}
        elif partial[c] > best_total:
            alive.discard(c)
    estimates = {c: partial[c] / seen(c) for c in candidates if done[c]}
    return best, best_total, per_batch[best], estimates


def iterative_greedy(model, windows: torch.Tensor, kind: Kind = "blocks", steps: int | None = None, *,
                     initial: list | None = None, batch_windows: int | None = None, progress=None,
                     resume: bool = True, vocabulary_bound: bool = True) -> GreedyResult:
    """The greedy order of `kind` ("blocks", "attn" or "mlp") removals over `windows`.

    `steps` defaults to as many as may go (L-1 blocks, L sublayers). `initial`, the NLL
    sums of every single removal of this kind measured over the same windows (one
    sweep), replaces the first step's measurements. progress(fraction, message) is
    called after each step. `resume` and `vocabulary_bound` switch those two savings off
    (the result is the same either way; the tests compare).
    """
    L = model.n_layers
    steps = max_removals(kind, L) if steps is None else min(steps, max_removals(kind, L))
    if batch_windows is None:  # as many windows per batch as the memory budget allows: few, large suffix runs
        batch_windows = max(1, batch_tokens_for(model) // windows.shape[1])
    streams = _streams(model, windows, batch_windows)
    n_tokens = sum(s.tokens for s in streams)
    result = GreedyResult(kind, [], [], n_tokens)
    hooks = RemovalHooks(L)
    keep_every = _keep_every(model, streams) if resume else 0
    use_bound = vocabulary_bound and bound.usable(model)
    prior: dict = {}
    weights = [L - s for s in range(steps)]
    for step in range(steps):
        candidates = [l for l in range(L) if l not in result.order]
        result.batches_naive += len(candidates) * len(streams)
        if step == 0 and initial is not None:
            best = min(candidates, key=lambda c: (initial[c], c))
            total, per_batch = initial[best], None
            prior = {c: initial[c] / n_tokens for c in candidates}
        else:
            best, total, per_batch, prior = _step(model, streams, kind, result.order, candidates, prior, hooks, result,
                                                  keep_every, use_bound)
        result.order.append(best)
        result.nll_sum.append(total)
        removal = Removal.of(**{kind: result.order})
        for b, stream in enumerate(streams):
            with model.lock:
                result.state_blocks += stream.advance(model, removal, best, hooks)
            stream.nll = per_batch[b] if per_batch is not None else stream.nll
        hooks.set(Removal())
        if progress:
            progress(sum(weights[:step + 1]) / sum(weights),
                     f"Iterative greedy ({kind}): step {step + 1}/{steps} removed {kind} {best}")
    return result


GREEDY = Result("greedy", SCHEMA_VERSION, GreedyResult, lane="sweep")


def greedy_key(model, corpus, seq_len: int, max_windows: int | None, part: Part, kind: Kind) -> str:
    return store.make_key(fingerprint=model.fingerprint, corpus=corpus.sha256, seq_len=seq_len,
                          max_windows=max_windows, part=part, kind=kind, schema=SCHEMA_VERSION)


def cached_greedy(model, corpus, seq_len: int, max_windows: int | None, part: Part, kind: Kind) -> GreedyResult | None:
    """The stored greedy order for these windows, or None (nothing is computed)."""
    return GREEDY.load(greedy_key(model, corpus, seq_len, max_windows, part, kind))


def greedy_order(model, corpus, seq_len: int, max_windows: int | None, part: Part, kind: Kind = "blocks",
                 steps: int | None = None, *, initial: list | None = None, progress=None,
                 use_cache: bool = True) -> GreedyResult:
    """`iterative_greedy` over the `part` of the corpus's windows, stored on disk; a
    stored order with at least `steps` steps (default: all) is reused."""

    want = max_removals(kind, model.n_layers) if steps is None else min(steps, max_removals(kind, model.n_layers))
    stored = cached_greedy(model, corpus, seq_len, max_windows, part, kind) if use_cache else None
    if stored is not None and len(stored.order) >= want:
        return stored
    windows = windows_for(model, corpus, seq_len, max_windows, part)
    result = iterative_greedy(model, windows, kind, want, initial=initial, progress=progress)
    if use_cache:
        GREEDY.save(greedy_key(model, corpus, seq_len, max_windows, part, kind), result)
    return result
