"""A report.json as the app's source: upload (stored under cache/reports/<sha256>.json),
open by link (`report=<sha256>`), and the Context the pages then read, with no model."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from analysis.reporting import report as reports
from analysis.core import settings
from ui import context, results
from ui.context import plain
from analysis.plans.apply import checkpoint_plan

MODEL, FILE = "Model and corpus", "Report file"
SOURCES = (MODEL, FILE)


def opened(sha256: str) -> reports.OpenedReport:
    """The stored report with this sha256, opened once per server (ReportError otherwise)."""
    return context.shared(("report", sha256), lambda: reports.stored_report(sha256))


def store_upload(raw: bytes) -> str:
    """Keep an uploaded report and return its sha256 (ReportError when it is not one)."""
    report = reports.store_report(raw)
    context.shared(("report", report.sha256), lambda: report)
    return report.sha256


def _on_upload() -> None:
    upload = st.session_state.get("report_upload")
    if upload is None:
        return
    try:
        st.session_state["_report_sha"] = store_upload(upload.getvalue())
    except reports.ReportError as err:
        st.session_state["_report_error"] = str(err)


def render() -> context.Context | None:
    """The sidebar's report section; the Context of the opened report, or None."""
    sb = st.sidebar
    sb.header("Report file")
    sb.file_uploader("report.json written by `python -m analysis report`", type=["json"], key="report_upload",
                     on_change=_on_upload, max_upload_size=settings.max_report_mb())
    if message := st.session_state.pop("_report_error", None):
        sb.error(plain(message))
    sha = st.session_state.get("_report_sha")
    if sha is None:
        sb.caption("No model is loaded: the pages show the report's numbers read-only.")
        return None
    try:
        report = opened(sha)
    except reports.ReportError as err:
        sb.error(plain(str(err)))  # shown on every page until another report is opened
        return None
    sb.success(f"Opened {plain(report.title)}", icon=":material/description:")
    return context.Context.of_report(report)


def report_of(ctx: context.Context) -> dict:
    """report.json of the current view: the opened file itself, or built from the
    model's analysis (with the logit lens, the removal sweep and the pruning curves when
    they have been computed, and the calibration/evaluation split)."""
    if ctx.report is not None:
        return ctx.report.data
    analysis = replace(context.analysis_for(ctx), lens=results.lens_if_ready(ctx))
    return reports.build_report(analysis, results.removal_for(ctx, run=False), eps=analysis.eps,
                                plan=checkpoint_plan(ctx.model.source_dir), split=results.split_info(ctx),
                                curves=results.curves_if_ready(ctx))


def file_stem(ctx: context.Context) -> str:
    """A file name for the view's report: layer-lab-<model>-<corpus sha256 prefix>."""
    analysis = context.analysis_for(ctx)
    model = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(analysis.model["name"]).split("/")[-1])
    return f"layer-lab-{model[:40]}-{analysis.corpus['sha256'][:8]}"

