"""The compare page's two sides. Each is the current view (the sidebar's model and
corpus, or its report file), a stored report, or another model (a hub name or a local
directory such as the checkpoint `apply` wrote) analysed on the current corpus and
settings. Each side also gives its link value: `current`, a stored report's sha256, or
the model name when a link may carry it (otherwise a stored snapshot of its analysis)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from analysis.reporting import report as reports
from analysis.reporting.compare import Side
from analysis.model.sources import ModelLoadError
from analysis.model.loading import get_model
from analysis.plans.apply import checkpoint_plan
from ui import context, links, report_source, results
from ui.context import plain

CURRENT, REPORT, MODEL = "Current view", "Stored report", "Another model"
KINDS = (CURRENT, REPORT, MODEL)
MAX_LISTED = 50


@dataclass(frozen=True)
class Picked:
    """A chosen side, its link value, and the live context behind it (None for a report)."""

    side: Side
    link: str
    ctx: context.Context | None = None

    def with_lens(self, run: bool) -> Side:
        """The side with its logit lens: the report's, one already computed, or (run=True)
        computed now; without it when none is ready and run is False."""
        if self.side.analysis.lens is not None or self.ctx is None:
            return self.side
        lens = results.lens_if_ready(self.ctx) if not run else context.lens_for(self.ctx)
        return replace(self.side, analysis=replace(self.side.analysis, lens=lens)) if lens is not None else self.side


def seed() -> None:
    """Widget defaults from the link's cmp_a / cmp_b, once per session."""
    context.leave_pages_directory_mode()  # a deep link on a fresh server: run app.py's navigation first
    if st.session_state.get("_cmp_seeded"):
        return
    st.session_state["_cmp_seeded"] = True
    values = st.session_state.get("_link", {})
    for letter, key in zip("AB", links.COMPARE_KEYS):
        value = values.get(key)
        if value is None:
            continue
        if value == links.CURRENT:
            st.session_state[f"cmp_kind_{letter}"] = CURRENT
        elif links.is_sha(value):
            st.session_state[f"cmp_kind_{letter}"] = REPORT
            st.session_state[f"cmp_report_{letter}"] = value
        else:
            st.session_state[f"cmp_kind_{letter}"] = MODEL
            st.session_state[f"cmp_model_{letter}"] = value


def _short(name: str) -> str:
    tail = str(name).rstrip("/").split("/")[-1]
    return tail if len(tail) <= 28 else tail[:27] + "…"


def _title(sha: str) -> str:
    try:
        return f"{report_source.opened(sha).title} · {sha[:8]}"
    except reports.ReportError:
        return f"unreadable report {sha[:8]}"


def _current(col, letter: str):
    ctx = st.session_state.get("_ctx")
    if ctx is None:
        col.info("Nothing is open yet: pick a model and corpus, or a report file, in the sidebar.")
        return None
    analysis = context.analysis_for(ctx)
    plan = ctx.report.plan if ctx.report is not None else checkpoint_plan(ctx.model.source_dir)
    return Picked(Side(f"{letter}: {_short(analysis.model['name'])}", analysis, plan), links.CURRENT, ctx)


def _on_upload(letter: str) -> None:
    upload = st.session_state.get(f"cmp_upload_{letter}")
    if upload is None:
        return
    try:
        st.session_state[f"cmp_report_{letter}"] = report_source.store_upload(upload.getvalue())
    except reports.ReportError as err:
        st.session_state[f"_cmp_error_{letter}"] = str(err)


def _stored(col, letter: str):
    shas = reports.stored_reports()[:MAX_LISTED]
    chosen = st.session_state.get(f"cmp_report_{letter}")
    if chosen and chosen not in shas:
        shas.insert(0, chosen)
    col.file_uploader("Add a report.json", type=["json"], key=f"cmp_upload_{letter}", on_change=_on_upload,
                      args=(letter,))
    if message := st.session_state.pop(f"_cmp_error_{letter}", None):
        col.error(plain(message))
    if not shas:
        col.info("No report is stored on this server yet: upload one.")
        return None
    sha = col.selectbox("Report", shas, key=f"cmp_report_{letter}", format_func=_title)
    try:
        report = report_source.opened(sha)
    except reports.ReportError as err:
        col.error(plain(str(err)))
        return None
    return Picked(Side(f"{letter}: {_short(report.analysis.model['name'])}", report.analysis, report.plan), sha)


def _snapshot(analysis, plan) -> str:
    """sha256 of a stored report of `analysis` (for links that cannot name the model)."""
    memo = st.session_state.setdefault("_cmp_snapshots", {})
    key = (analysis.model["fingerprint"], analysis.corpus["sha256"], analysis.corpus["seq_len"],
           analysis.corpus["n_windows"])
    if key not in memo:
        raw = reports.report_bytes(reports.build_report(analysis, eps=analysis.eps, plan=plan))
        memo[key] = reports.store_report(raw).sha256
    return memo[key]


def _model(col, letter: str):
    spec = col.text_input("Hub name or local directory (e.g. the checkpoint `apply` wrote)",
                          key=f"cmp_model_{letter}").strip()
    ctx = st.session_state.get("_ctx")
    if not spec:
        col.info("Type a model to analyse it on the current corpus and settings.")
        return None
    if ctx is None or ctx.report is not None:
        col.info("Another model is analysed on the current corpus: switch the sidebar's source to a model and corpus.")
        return None
    with col, st.spinner(f"Loading {plain(spec)}..."):
        try:
            model = get_model(spec, ctx.model.device, ctx.model.dtype)
        except ModelLoadError as err:
            col.error(plain(str(err)))
            return None
    side_ctx = context.Context(model, ctx.corpus, ctx.seq_len, ctx.max_windows)
    with col:
        analysis = context.analysis_for(side_ctx)
    plan = checkpoint_plan(model.source_dir)
    name, problem = links.clean_value("model", spec)
    link = name if name is not None and problem is None else _snapshot(analysis, plan)
    return Picked(Side(f"{letter}: {_short(model.name)}", analysis, plan), link, side_ctx)


def pick(col, letter: str, default: str) -> Picked | None:
    """The side chosen in column `col` (None until one is ready)."""
    if f"cmp_kind_{letter}" not in st.session_state:
        st.session_state[f"cmp_kind_{letter}"] = default
    col.subheader(f"Side {letter}")
    kind = col.radio(f"Side {letter}", KINDS, key=f"cmp_kind_{letter}", horizontal=True, label_visibility="collapsed")
    return {CURRENT: _current, REPORT: _stored, MODEL: _model}[kind](col, letter)
