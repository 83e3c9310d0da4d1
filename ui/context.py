"""The session's current model, corpus and settings, and cached computations on them.

Pages call `require()` to get the Context the sidebar built; heavy results come from
`analysis_for()` (everything but the logit lens), `lens_for()` (the lens, its own pass)
and `removal_for()`, which go through the shared disk cache, so a reopened app (or
another session) shows them at once. The removal sweep runs as a background job
(analysis/core/jobs.py), so it survives page changes and reloads. A Context may instead hold
an opened report.json (no model, no corpus text): the same calls then return the
report's results, `page()` says where the view comes from, and `needs_model()` stands
in for views that need the model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import streamlit as st

from analysis.core import jobs, store
from analysis.data.corpus import Corpus, CorpusError, plural
from analysis.data.evaluation import Split, part_windows, windows_for
from analysis.measure.lens import LensResult, window_grid
from analysis.measure.pipeline import Analysis, analyse
from analysis.measure.sparsity import token_density as density
from analysis.model.loading import LoadedModel
from analysis.reporting.report import OpenedReport
from ui import internals


@dataclass(frozen=True)
class Context:
    """The sidebar's choices. `split` says which windows calibrate (every analysis page,
    preset and method works on those: `part`) and which evaluate (evaluation.Split)."""

    model: LoadedModel | None
    corpus: Corpus | None
    seq_len: int
    max_windows: int | None
    report: OpenedReport | None = None  # set (and model, corpus None) when the view comes from a file
    split: Split | None = None

    @property
    def part(self) -> str:
        return self.split.calibration_part if self.split is not None else "all"

    @property
    def key(self) -> tuple:
        if self.report is not None:
            return ("report", self.report.sha256)
        return (self.model.fingerprint, self.corpus.sha256, self.seq_len, self.max_windows, self.part)

    @classmethod
    def of_report(cls, report: OpenedReport) -> "Context":
        corpus = report.analysis.corpus
        return cls(None, None, int(corpus["seq_len"]), corpus.get("max_windows"), report)


def plain(text: str) -> str:
    """Escape Markdown, so text from a link or an input (model names, unknown keys) shows literally."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


_SHARED = store.LRU(64, name="ui.context.shared")  # windows, lens grids, token densities: shared by every session


def shared(key: tuple, compute):
    value = _SHARED.get(key)
    if value is None:
        value = compute()
        _SHARED.put(key, value)
    return value


def corpus_windows(model, corpus: Corpus, seq_len: int, max_windows: int | None):
    """Every window of a corpus [n_windows, T] (tokenised once, shared by all sessions)."""
    return shared(("windows", model.fingerprint, corpus.sha256, seq_len, max_windows),
                  lambda: windows_for(model, corpus, seq_len, max_windows))


def windows(ctx: Context):
    """The context's calibration windows [n_windows, T]: what the analysis pages read."""
    return part_windows(corpus_windows(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows), ctx.part)


def lens_grid(ctx: Context, window: int, site: str) -> dict:
    """`lens.window_grid` of one corpus window at `site`, memoised for all sessions."""
    return shared(("lens_grid", window, site) + ctx.key, lambda: window_grid(ctx.model, windows(ctx)[window], site=site))


def token_density(ctx: Context, window: int, eps: float):
    """`sparsity.token_density` of one corpus window, memoised for all sessions."""
    return shared(("density", window, eps) + ctx.key, lambda: density(ctx.model, windows(ctx)[window], eps))


def set_current(ctx: Context | None) -> None:
    st.session_state["_ctx"] = ctx


APP_RAN = "_app_ran"  # set by app.py on every run: this session's runs go through its navigation


def mark_app_run() -> None:
    st.session_state[APP_RAN] = True


def leave_pages_directory_mode() -> None:
    """On a fresh server Streamlit runs scripts in the old pages/-directory mode until some
    run calls st.navigation, so a deep link such as /playground runs the page file without
    app.py and its sidebar. That holds for EVERY session whose first run started before
    the switch (four tabs opened at once: issue 31), not only the first one. So switch
    the mode off and rerun whenever this session's runs have not gone through app.py yet
    (and app.py is the main script: an AppTest of a page file is its own main script);
    the rerun executes app.py, which routes to the same page."""
    outside_app = internals.main_script_name() == "app.py" and not st.session_state.get(APP_RAN)
    if internals.leave_pages_directory_mode(force=outside_app):
        st.rerun()


def require() -> Context:
    """The current context, or stop the page with a message when none is ready."""
    ctx = st.session_state.get("_ctx")
    if ctx is None:
        leave_pages_directory_mode()
        st.info("Upload a report.json in the sidebar to begin." if st.session_state.get("_from_file")
                else "Pick a model and a corpus in the sidebar to begin.")
        st.stop()
    return ctx


def file_banner(ctx: Context) -> None:
    """Say that the view is read from a report file, and of which model and corpus."""
    report = ctx.report
    model, corpus = report.analysis.model, report.analysis.corpus
    st.info(f"Read-only view from a report file (sha256 {report.sha256[:12]}...): model **{plain(model['name'])}** "
            f"(fingerprint `{model['fingerprint']}`), corpus {plain(str(corpus.get('id', '')))} "
            f"(sha256 {corpus['sha256'][:12]}...), {plural(corpus['n_windows'], 'window')} of {corpus['seq_len']} tokens. "
            "No model is loaded.", icon=":material/description:")


def needs_model(ctx: Context, what: str) -> bool:
    """True (after saying so) when `what` needs the model and the view comes from a file."""
    if ctx.report is None:
        return False
    st.info(f"{what} needs the model, and this view comes from a report file. To see it, switch the sidebar's "
            f"source to a model and load {plain(ctx.report.analysis.model['name'])}.",
            icon=":material/block:")
    return True


PASS_PERSIST = jobs.Persist("pass", save=False)  # the pass caches its own result on disk (store.cached)


def join(job: jobs.Job, label: str):
    """Wait for a shared background job with a progress bar and return its result. Every
    session that joins the job polls it, so a job that finishes or fails while a session
    waits wakes that session: it shows the result, or the error (a corpus that cannot be
    windowed, a failure, a cancellation) and stops the page; a rerun submits it again."""
    bar = st.progress(job.fraction, text=label)
    while not job.wait(timeout=0.5):
        bar.progress(job.fraction, text=f"{label} {job.status_text()}")
    bar.empty()
    what = label.rstrip(".")
    if job.state == jobs.CANCELLED:
        st.warning(f"{what}: cancelled. Reload the page to run it again.")
        st.stop()
    if job.state != jobs.DONE:
        if isinstance(job.exception, CorpusError):
            st.error(str(job.exception))
        else:
            st.error(plain(f"{what} failed: {job.error or job.status_text()}. Reload the page to try again."))
        st.stop()
    return job.result


def _memo_or_compute(memo_name: str, key: tuple, label: str, compute):
    """The session's memo of `key`, else the result of `compute(progress)` (disk cache
    inside `compute`). The computation is single-flight across sessions: it runs as a
    background job keyed by what it computes, so a second tab, another session or a
    reload joins the running pass and shows its progress instead of starting another."""
    memo = st.session_state.setdefault(memo_name, {})
    if key not in memo:
        job = jobs.submit(store.make_key(memo=memo_name, key=key), lambda job: compute(job.progress),
                          label=label.rstrip("."), lane="pass", persist=PASS_PERSIST)
        memo[key] = join(job, label)
    return memo[key]


def analysis_for(ctx: Context, eps: float = 0.01) -> Analysis:
    """The single-pass analysis for the context WITHOUT the logit lens (`lens` is None):
    session memo, then disk cache, then a lens-free pass. `lens_for` adds the lens.
    From a report file: the report's analysis."""
    if ctx.report is not None:
        return ctx.report.analysis
    return _memo_or_compute("_analysis", ctx.key + (eps,), "Running the instrumented pass (without the logit lens)...",
                            lambda update: analyse(ctx.model, ctx.corpus, ctx.seq_len, max_windows=ctx.max_windows,
                                                   eps=eps, with_lens=False, progress=update,
                                                   part=ctx.part))


def lens_for(ctx: Context) -> LensResult:
    """The logit lens and early exit over the corpus: its own pass, run after (and never
    repeating) the lens-free one, cached on disk like it. From a report file: its lens
    (None when it was written with --skip-lens)."""
    if ctx.report is not None:
        return ctx.report.analysis.lens
    return _memo_or_compute("_lens", ctx.key, "Running the logit lens over the corpus (every block read out)...",
                            lambda update: analyse(ctx.model, ctx.corpus, ctx.seq_len, max_windows=ctx.max_windows,
                                                   with_lens=True, progress=update, part=ctx.part).lens)


def model_page(title: str, caption: str, what: str) -> Context:
    """A page's title and caption, then its context; stops (saying so) when the view
    comes from a report file, since `what` needs the model."""
    st.title(title)
    st.caption(caption)
    ctx = require()
    if needs_model(ctx, what):
        st.stop()
    return ctx


def page(title: str, caption: str) -> tuple[Context, Analysis]:
    """A page's title and caption, then its context and analysis (stops with a message
    when no model or corpus is ready yet)."""
    st.title(title)
    st.caption(caption)
    ctx = require()
    if ctx.report is not None:
        file_banner(ctx)
    return ctx, analysis_for(ctx)
