"""Background jobs in the UI: the sidebar's jobs area (every page) and a page's panel for
one job. Both are fragments that refresh on a timer while work is under way, so progress
and time left move without rerunning the page; a page's panel reruns the page once its
job has finished, to show the result.
"""
from __future__ import annotations

import time

import streamlit as st

from analysis.core import jobs

REFRESH_SECONDS = 1.0
SHOW_FINISHED_SECONDS = 120  # finished jobs stay listed this long (so a failure is seen)
PAGE_LANES = ("pass", "playground")  # a page waits on these and shows their outcome itself


def _listed() -> list[jobs.Job]:
    now = time.time()
    recent = [j for j in jobs.REGISTRY.recent()  # a finished pass or playground build is on its page already
              if j.done and not j.from_disk and j.lane not in PAGE_LANES and now - (j.finished or now) < SHOW_FINISHED_SECONDS]
    return jobs.REGISTRY.active() + recent


def _cancel(job_id: str) -> None:
    job = jobs.REGISTRY.get(job_id)
    if job is not None:
        job.cancel()


def _job_row(job: jobs.Job, where: str) -> None:
    st.markdown(f"**{job.label}**")
    if job.state == jobs.RUNNING:
        st.progress(job.fraction, text=job.status_text())
    elif job.state == jobs.FAILED:
        st.error(job.status_text())
    else:
        st.caption(job.status_text())
    if not job.done:
        st.button("Cancel", key=f"{where}_cancel_{job.id}", on_click=_cancel, args=(job.id,),
                  help="Stops the job for every session waiting on it; nothing half-written is kept.")


def _area() -> None:
    listed = _listed()
    if not listed:
        return
    st.subheader("Background jobs")
    for job in listed:
        _job_row(job, "sidebar")


def sidebar_area() -> None:
    """The jobs area at the bottom of the sidebar: refreshed every REFRESH_SECONDS while a
    job is queued or running, drawn once otherwise."""
    active = bool(jobs.REGISTRY.active())
    with st.sidebar:
        st.fragment(_area, run_every=REFRESH_SECONDS if active else None)()


def start(submit) -> None:
    """Start a job from a button press, then rerun at once: the sidebar's jobs area was drawn
    before the press was handled, and the rerun lists the job there (refreshing) while the
    page shows its panel."""
    submit()
    st.rerun()


def watch(job: jobs.Job, extra=None) -> None:
    """A page's panel for `job` (progress, time left, Cancel; `extra(job)` draws more, e.g.
    a live loss curve). Reruns the page when the job finishes."""
    job_id = job.id

    def panel() -> None:
        current = jobs.REGISTRY.get(job_id) or job
        if current.done:
            st.rerun()
        _job_row(current, "page")
        if extra is not None:
            extra(current)
    st.fragment(panel, run_every=REFRESH_SECONDS)()
