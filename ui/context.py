"""The session's current model, corpus and settings, and cached computations on them.

Pages call `require()` to get the Context the sidebar built; heavy results come from
`analysis_for()` / `removal_for()`, which go through the shared disk cache, so a
reopened app (or another session) shows them at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from analysis import store
from analysis.corpus import Corpus, CorpusError, make_windows
from analysis.evaluation import Split, part_windows
from analysis.loading import LoadedModel
from analysis.pipeline import Analysis, analyse
from analysis.pruning.removal import RemovalCost, removal_cost


@dataclass(frozen=True)
class Context:
    """The sidebar's choices. `split` says which windows calibrate (every analysis page,
    preset and method works on those: `part`) and which evaluate (evaluation.Split)."""

    model: LoadedModel
    corpus: Corpus
    seq_len: int
    max_windows: int | None
    split: Split | None = None

    @property
    def part(self) -> str:
        return self.split.calibration_part if self.split is not None else "all"

    @property
    def key(self) -> tuple:
        return (self.model.fingerprint, self.corpus.sha256, self.seq_len, self.max_windows, self.part)


_SHARED = store.LRU(64)  # windows, lens grids, token densities: shared by every session


def _shared(key: tuple, compute):
    value = _SHARED.get(key)
    if value is None:
        value = compute()
        _SHARED.put(key, value)
    return value


def corpus_windows(model, corpus: Corpus, seq_len: int, max_windows: int | None):
    """Every window of a corpus [n_windows, T] (tokenised once, shared by all sessions)."""
    return _shared(("windows", model.fingerprint, corpus.sha256, seq_len, max_windows),
                   lambda: make_windows(model.tokenizer, corpus.text, seq_len, model.n_ctx, max_windows))


def windows(ctx: Context):
    """The context's calibration windows [n_windows, T]: what the analysis pages read."""
    return part_windows(corpus_windows(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows), ctx.part)


def lens_grid(ctx: Context, window: int, site: str) -> dict:
    """`lens.window_grid` of one corpus window at `site`, memoised for all sessions."""
    from analysis.lens import window_grid
    return _shared(("lens_grid", window, site) + ctx.key, lambda: window_grid(ctx.model, windows(ctx)[window], site=site))


def token_density(ctx: Context, window: int, eps: float):
    """`sparsity.token_density` of one corpus window, memoised for all sessions."""
    from analysis.sparsity import token_density as density
    return _shared(("density", window, eps) + ctx.key, lambda: density(ctx.model, windows(ctx)[window], eps))


def set_current(ctx: Context | None) -> None:
    st.session_state["_ctx"] = ctx


def _leave_pages_directory_mode() -> None:
    """On a fresh server Streamlit runs its very first script in the old pages/-directory
    mode (until some run calls st.navigation), so a deep link such as /playground runs
    the page file without app.py and its sidebar. Switch that mode off and rerun: the
    rerun executes app.py, which routes to the same page."""
    from streamlit.runtime.pages_manager import PagesManager
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def require() -> Context:
    """The current context, or stop the page with a message when none is ready."""
    ctx = st.session_state.get("_ctx")
    if ctx is None:
        _leave_pages_directory_mode()
        st.info("Pick a model and a corpus in the sidebar to begin.")
        st.stop()
    return ctx


def _progress_bar(label: str):
    bar = st.progress(0.0, text=label)

    def update(frac: float, message: str) -> None:
        bar.progress(min(1.0, max(0.0, frac)), text=message)
    return bar, update


def analysis_for(ctx: Context, eps: float = 0.01) -> Analysis:
    """The single-pass analysis for the context (session memo, then disk cache, then compute)."""
    memo = st.session_state.setdefault("_analysis", {})
    key = ctx.key + (eps,)
    if key not in memo:
        bar, update = _progress_bar("Running the instrumented pass...")
        try:
            memo[key] = analyse(ctx.model, ctx.corpus, ctx.seq_len, max_windows=ctx.max_windows, eps=eps,
                                progress=update, part=ctx.part)
        except CorpusError as err:
            bar.empty()
            st.error(str(err))
            st.stop()
        bar.empty()
    return memo[key]


def page(title: str, caption: str) -> tuple[Context, Analysis]:
    """A page's title and caption, then its context and analysis (stops with a message
    when no model or corpus is ready yet)."""
    st.title(title)
    st.caption(caption)
    ctx = require()
    return ctx, analysis_for(ctx)


def removal_for(ctx: Context, run: bool = True) -> RemovalCost | None:
    """The measured removal costs; None when not cached and `run` is False (the sweep takes minutes)."""
    memo = st.session_state.setdefault("_removal", {})
    if ctx.key not in memo:
        if not run and not _removal_cached(ctx):
            return None
        bar, update = _progress_bar("Measuring the cost of every removal...")
        memo[ctx.key] = removal_cost(ctx.model, ctx.corpus, ctx.seq_len, max_windows=ctx.max_windows,
                                     progress=update, part=ctx.part)
        bar.empty()
    return memo[ctx.key]


def removal_on_request(ctx: Context, removal: RemovalCost | None, key: str, explanation: str) -> RemovalCost | None:
    """`removal` when already measured; otherwise the explanation and a button that runs the
    sweep (the explanation and button disappear while it runs and once it is done)."""
    if removal is not None:
        return removal
    slot = st.empty()
    with slot.container():
        st.info(explanation)
        clicked = st.button("Measure removal cost (exact sweep, takes minutes)", key=key)
    if not clicked:
        return None
    slot.empty()
    return removal_for(ctx, run=True)


def _removal_cached(ctx: Context) -> bool:
    from analysis import store
    from analysis.pruning.removal import SCHEMA_VERSION, removal_key
    return store.load("removal", removal_key(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part),
                      SCHEMA_VERSION) is not None


def window_source(ctx: Context, show_on: str) -> tuple:
    """(corpus, part) of the windows the playground shows: the calibration windows, or the
    evaluation windows of the split (held out, or another corpus)."""
    if show_on == "evaluation" and ctx.split is not None and ctx.split.available:
        return ctx.split.eval_corpus, ctx.split.eval_part
    return ctx.corpus, ctx.part


def playground_for(ctx: Context, show_on: str, progress=None):
    from analysis.pruning.playground import get_playground
    corpus, part = window_source(ctx, show_on)
    return get_playground(ctx.model, corpus, ctx.seq_len, ctx.max_windows, progress=progress, part=part)


def greedy_for(ctx: Context, kind: str = "blocks"):
    """The stored iterative greedy order over the calibration windows, or None."""
    from analysis.pruning.greedy import cached_greedy
    result = cached_greedy(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part, kind)
    return result.order if result is not None else None


def plan_evaluation(ctx: Context, removal, show_on: str, full, pruned) -> dict:
    """A plan's evaluation from the numbers shown (`show_on` windows), with the other
    window set's numbers when they are already measured (no extra work)."""
    from analysis.pruning.plan import evaluation_section
    from analysis.pruning.playground import memoized

    split = ctx.split if ctx.split is not None and ctx.split.available else None
    corpus, part = window_source(ctx, show_on)
    calibration = None
    if split is not None and show_on == "evaluation":
        known = memoized(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part, removal)
        if known is not None:
            calibration = {"corpus_sha256": ctx.corpus.sha256, "n_windows": int(known[0].nll.shape[0]),
                           "perplexity_full": known[0].perplexity, "perplexity_pruned": known[1].perplexity}
    return evaluation_section(
        corpus_sha256=corpus.sha256, seq_len=ctx.seq_len, perplexity_full=full.perplexity,
        perplexity_pruned=pruned.perplexity, n_windows=int(full.nll.shape[0]),
        windows=show_on if split is not None else "all", eval_spec=str(ctx.split.spec) if split is not None else None,
        calibration=calibration, corpus=corpus.corpus_id, max_windows=ctx.max_windows)
