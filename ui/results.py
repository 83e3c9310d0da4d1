"""Results the pages ask for beyond the analysis pass, each computed once per server as
a background job that every session joins (core.jobs), and read back from the disk
cache: the removal sweep, the logit lens when already computed, the shared playground,
the greedy orders, the pruning curves, a plan's evaluation and the split's windows.
Each goes through its result's one description (core.results.Result: sweep.REMOVAL,
pipeline.LENS, curves_run.CURVES)."""
from __future__ import annotations

import streamlit as st

from analysis.core import jobs, store
from analysis.core.kinds import Kind, ShowOn
from analysis.data.evaluation import EvalSpec, resolve, split_windows_of
from analysis.measure.lens import LensResult
from analysis.measure.pipeline import LENS, lens_key
from analysis.ablate.sweep import REMOVAL, RemovalCost, removal_cost, removal_key
from analysis.playground.live import memoized, shared_playground
from analysis.plans.schema import calibration_numbers, plan_evaluation as evaluation_of
from analysis.search import curves as cv
from analysis.search.curves_run import CURVES, covering_keys, curves_key, pruning_curves
from analysis.search.greedy import cached_greedy
from ui import jobs as jobs_ui
from ui.context import Context, corpus_windows, join


def removal_job(ctx: Context) -> jobs.Job | None:
    """The removal sweep's job for the context: running, queued, or finished (memory or disk)."""
    return REMOVAL.lookup(removal_key(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part))


def start_removal(ctx: Context) -> jobs.Job:
    """Start (or join) the sweep as a background job: it survives page changes and reloads."""
    model, corpus, seq_len, max_windows, part = ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part
    return REMOVAL.submit(removal_key(model, corpus, seq_len, max_windows, part),
                          lambda job: removal_cost(model, corpus, seq_len, max_windows=max_windows, use_cache=False,
                                                   progress=job.progress, eta=False, part=part),
                          label=f"Removal sweep ({3 * model.n_layers} removals)")


def removal_for(ctx: Context, run: bool = False) -> RemovalCost | None:
    """The measured removal costs once the sweep has finished (this server or the disk
    cache), else None; with run=True a missing sweep is started as a background job.
    From a report file: the report's (None when it was written with --skip-removal)."""
    if ctx.report is not None:
        return ctx.report.removal
    job = removal_job(ctx)
    if job is not None and job.state == jobs.DONE:
        return job.result
    if run and (job is None or job.state in (jobs.FAILED, jobs.CANCELLED)):
        start_removal(ctx)
    return None


def removal_on_request(ctx: Context, removal: RemovalCost | None, key: str, explanation: str) -> RemovalCost | None:
    """`removal` when already measured. Otherwise the sweep's progress while it runs (as a
    background job; the page reruns when it is done), or the explanation and a button that
    starts it (after a failure, with the reason)."""
    if removal is not None:
        return removal
    if ctx.report is not None:
        st.info("The measured removal cost is not in this report (it was written with --skip-removal).")
        return None
    job = removal_job(ctx)
    if job is not None and not job.done:
        jobs_ui.watch(job)
        return None
    if job is not None and job.state == jobs.FAILED:
        st.error(f"The removal sweep failed: {job.error}")
    st.info(explanation)
    if st.button("Measure removal cost (exact sweep, takes minutes)", key=key,
                 help="Runs in the background: you may change page or reload meanwhile."):
        jobs_ui.start(lambda: start_removal(ctx))
    return None


def lens_if_ready(ctx: Context) -> LensResult | None:
    """The logit lens when it is already computed (session memo or disk cache), else None;
    never runs it (the report downloads use it)."""
    if ctx.report is not None:
        return ctx.report.analysis.lens
    if ctx.key in st.session_state.get("_lens", {}):
        return st.session_state["_lens"][ctx.key]
    return LENS.load(lens_key(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part))


def window_source(ctx: Context, show_on: ShowOn) -> tuple:
    """(corpus, part) of the windows the playground shows: the calibration windows, or the
    evaluation windows of the split (held out, or another corpus)."""
    if show_on == "evaluation" and ctx.split is not None and ctx.split.available:
        return ctx.split.eval_corpus, ctx.split.eval_part
    return ctx.corpus, ctx.part


PLAYGROUND_PERSIST = jobs.Persist("playground", save=False)  # the built playground lives in memory only


def playground_for(ctx: Context, show_on: ShowOn):
    """The shared playground of the windows shown, built once as a background job that
    every session joins (lane "playground"): a session that stops or reruns while the
    clean residuals are kept does not stop the build, and every waiting session is woken
    when it finishes or fails."""
    corpus, part = window_source(ctx, show_on)
    pg = shared_playground(ctx.model, corpus, ctx.seq_len, ctx.max_windows, part=part)
    if pg.full is None:
        job = jobs.submit(store.make_key(memo="playground", key=pg.key, serial=pg.serial),
                          lambda job: pg.build(job.progress) and None, label="Keeping the clean residuals",
                          lane="playground", persist=PLAYGROUND_PERSIST)
        join(job, "Keeping the clean residuals of the corpus...")
    return pg


def greedy_for(ctx: Context, kind: Kind = "blocks"):
    """The stored iterative greedy order over the calibration windows, or None."""
    result = cached_greedy(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part, kind)
    return result.order if result is not None else None


def plan_evaluation(ctx: Context, removal, show_on: ShowOn, full, pruned) -> dict:
    """A plan's evaluation from the numbers shown (`show_on` windows), with the other
    window set's numbers when they are already measured (no extra work)."""

    calibration = None
    if ctx.split is not None and ctx.split.available and show_on == "evaluation":
        known = memoized(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows, ctx.part, removal)
        if known is not None:
            calibration = calibration_numbers(ctx.corpus, known[0].nll.shape[0], known[0].perplexity,
                                              known[1].perplexity)
    return evaluation_of(ctx.corpus, ctx.split, ctx.seq_len, ctx.max_windows, show_on, full.perplexity,
                         pruned.perplexity, full.nll.shape[0], calibration)


def split_for(ctx: Context):
    """The context's calibration / evaluation split (the sidebar's "Evaluate on"; without
    one, every 5th window held out; evaluation.resolve says why when there are too few)."""
    if ctx.split is not None:
        return ctx.split
    return resolve(EvalSpec(), ctx.corpus, corpus_windows(ctx.model, ctx.corpus, ctx.seq_len, ctx.max_windows).shape[0])


def curves_job(ctx: Context, split, kinds=None, k_max: int | None = None) -> jobs.Job | None:
    """The pruning curves' job for the context and split (default seeds, tolerance 0) of
    `kinds` (default all) up to k_max (default L-1): a finished run that covers them (this
    one, or one of more kinds or a larger k_max, as the CLI may have stored), else this
    run's job while it is queued, running, failed or cancelled, else None."""
    keys = covering_keys(ctx.model, split, ctx.seq_len, ctx.max_windows, cv.DEFAULT_SEEDS, 0.0, kinds or cv.KINDS,
                         k_max)
    found = [CURVES.lookup(key) for key in keys]
    done = [job for job in found if job is not None and job.state == jobs.DONE]
    return done[0] if done else found[0]


def start_curves(ctx: Context, split, kinds=None, k_max: int | None = None) -> jobs.Job:
    """Start (or join) the pruning curves of `kinds` (default all) up to k_max (default
    L-1) as a background job (lane "sweep": one at a time)."""
    model, seq_len, max_windows, kinds = ctx.model, ctx.seq_len, ctx.max_windows, list(kinds or cv.KINDS)
    key = curves_key(model, split, seq_len, max_windows, cv.DEFAULT_SEEDS, 0.0, kinds, k_max)
    up_to = "" if k_max is None or k_max >= model.n_layers - 1 else f", k up to {k_max}"
    return CURVES.submit(key, lambda job: pruning_curves(model, split, seq_len, max_windows, kinds=kinds, k_max=k_max,
                                                         progress=job.progress, use_cache=False, eta=False),
                         label=f"Pruning curves ({', '.join(kinds)}{up_to})")


def curves_if_ready(ctx: Context):
    """The finished pruning curves (this server or the disk cache), else None; never runs them."""
    if ctx.report is not None:
        return None
    split = split_for(ctx)
    if not split.available:
        return None
    job = curves_job(ctx, split)
    return job.result if job is not None and job.state == jobs.DONE else None


def split_info(ctx: Context) -> dict | None:
    """The calibration/evaluation split as report.json's `evaluation` (window counts included)."""
    if ctx.report is not None or ctx.split is None:
        return None
    calibration, evaluation = split_windows_of(ctx.model, ctx.split, ctx.seq_len, ctx.max_windows)
    return ctx.split.info(calibration.shape[0], None if evaluation is None else evaluation.shape[0])
