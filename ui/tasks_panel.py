"""The "Tasks" panel: task accuracy by lm-eval for the full model and a removal, run as a
background job (progress, Cancel), then the scores side by side with lm-eval's standard
errors and the items that flip between the two. Used by the playground (the current
toggles) and the healing page."""
from __future__ import annotations

import hashlib

import streamlit as st

from analysis.core import jobs, settings
from analysis.model.removal import Removal
from analysis.tasks import engine, files, scores, suite
from ui import jobs as job_ui
from ui.context import plain

SHOWN_FLIPS = 50
DEFAULT_LIMIT = 100


def _uploaded_file(upload) -> str | None:
    """The uploaded task file saved by content under the cache (None when there is none)."""
    if upload is None:
        return None
    data = upload.getvalue()
    if len(data) > files.MAX_FILE_BYTES:
        raise files.TaskFileError(f"task file {upload.name} is {len(data) / 1e6:.1f} MB; the limit is "
                                  f"{files.MAX_FILE_BYTES / 1e6:.0f} MB")
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = "".join(c if c.isalnum() else "_" for c in upload.name.rsplit(".", 1)[0])[:40] or "tasks"
    path = settings.cache_dir() / "task-uploads" / digest / f"{stem}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(path)


def choices(key: str):
    """(task names, task files, limit) chosen in the panel, or None with the problem shown."""
    names = st.multiselect("Offline tasks", list(suite.TASKS), default=list(suite.TASKS), key=f"{key}_names",
                           help="Written for Layer Lab (README, Tasks). Any lm-eval task name works where its dataset "
                                "can be reached: add it below.")
    other = st.text_input("More lm-eval task names (comma-separated)", key=f"{key}_other",
                          help="Needs the task's dataset (the Hugging Face hub); offline it says so.")
    upload = st.file_uploader("Your own task file (JSONL: question / choices / answer, or prompt / target)",
                              type=["jsonl", "json", "txt"], key=f"{key}_upload")
    limit = st.number_input("Items per task (0: all)", 0, files.MAX_ITEMS, DEFAULT_LIMIT, key=f"{key}_limit",
                            help="lm-eval's --limit: the first N items of each task.")
    try:
        path = _uploaded_file(upload)
        taskset = engine.resolve_tasks(list(names) + [n for n in other.split(",") if n.strip()],
                                       [path] if path else [])
    except (engine.TaskError, files.TaskFileError) as err:
        st.error(plain(str(err)))
        return None
    return taskset, int(limit) or None


def _table(comparison: scores.TaskComparison) -> list[dict]:
    rows = []
    for name, full in comparison.full.items():
        for metric in full.metrics:
            row = {"task": name, "metric": metric, "items": full.n}
            sides = {"full": full, "pruned": comparison.pruned[name]} | (
                {"healed": comparison.healed[name]} if name in comparison.healed else {})
            for side, score in sides.items():
                m = score.metrics[metric]
                row[side] = round(m["value"], 4)
                row[f"± ({side})"] = None if m["stderr"] is None else round(m["stderr"], 4)
            rows.append(row)
    return rows


def show_comparison(comparison: scores.TaskComparison, key: str = "tasks") -> None:
    """Scores side by side, then per task the items that flip from full to pruned."""
    st.dataframe(_table(comparison), hide_index=True, key=f"{key}_scores")
    for name, full in comparison.full.items():
        changed = scores.flips(full, comparison.pruned[name])
        down = sum(f.direction == "right to wrong" for f in changed)
        st.markdown(f"**{name}**: {down} items right → wrong, {len(changed) - down} wrong → right (full → pruned)")
        if not changed:
            continue
        shown = "log-likelihood per choice" if full.output_type == "multiple_choice" else "output"
        st.dataframe([{"item": f.doc_id, "change": f.direction, "prompt": f.prompt[-160:], "target": f.target,
                       f"full ({shown})": _short(f.full), f"pruned ({shown})": _short(f.pruned)}
                      for f in changed[:SHOWN_FLIPS]], hide_index=True, key=f"{key}_{name}_flips")
        if len(changed) > SHOWN_FLIPS:
            st.caption(f"The first {SHOWN_FLIPS} of {len(changed)}; the CLI's tasks.json lists all.")


def _short(value) -> str:
    if isinstance(value, list):
        return ", ".join(f"{v:.3f}" for v in value)
    return repr(value)


def _removal_words(removal: Removal) -> str:
    """The removal in a few words (the page states it in full elsewhere)."""
    parts = [f"{kind} {', '.join(map(str, sorted(getattr(removal, kind))))}" for kind in ("blocks", "attn", "mlp")
             if getattr(removal, kind)]
    return "; ".join(parts) if parts else "nothing removed"


def panel(model, removal: Removal, key: str = "pg_tasks", healed: engine.Healed | None = None) -> None:
    """The panel for `removal`, and the healed checkpoint when given."""
    st.caption(f"lm-eval runs the full model and the removal ({_removal_words(removal)})"
               + (" and the healed checkpoint" if healed else "")
               + " in the background, batch by batch between other work; each task's result is cached.")
    chosen = choices(key)
    if chosen is None:
        return
    taskset, limit = chosen
    job = scores.COMPARISON.lookup(engine.comparison_key(model, removal, taskset, limit, None, healed))
    if job is None or job.state in (jobs.FAILED, jobs.CANCELLED):
        if job is not None and job.state == jobs.FAILED:
            st.error(plain(f"The last run failed: {job.error}"))
        if st.button("Run tasks", key=f"{key}_run"):
            job_ui.start(lambda: engine.submit_comparison(model, removal, taskset, limit=limit, healed=healed))
        return
    if not job.done:
        job_ui.watch(job)
        return
    show_comparison(job.result, key=key)


def curves_panel(model, result, kind: str, key: str) -> None:
    """Task accuracy at chosen k along each method's curve (a background job), drawn under
    the perplexity of the same points on one x axis."""
    from analysis.reporting.figures import curves as curve_figs
    from analysis.search import curve_tasks as ct

    ks = ct.chosen_ks(result, kind)
    doubled = ct.doubling_k(result, kind)
    why = (f"k = {doubled}: where the best method first doubles the full perplexity" if doubled
           else "perplexity never doubles in this range")
    st.caption(f"At k = {', '.join(map(str, ks))} ({why}), every method's removal is run on the tasks by lm-eval "
               "in the background; each (removal, task) is cached.")
    chosen = choices(key)
    if chosen is None:
        return
    taskset, limit = chosen
    job = ct.CURVE_TASKS.lookup(ct.curve_tasks_key(model, result, kind, taskset, limit))
    if job is None or job.state in (jobs.FAILED, jobs.CANCELLED):
        if job is not None and job.state == jobs.FAILED:
            st.error(plain(f"The last run failed: {job.error}"))
        if st.button("Run tasks along the curves", key=f"{key}_run"):
            job_ui.start(lambda: ct.submit_curve_tasks(model, result, kind, taskset, limit))
        return
    if not job.done:
        job_ui.watch(job)
        return
    found = job.result
    for task in taskset.names:
        st.plotly_chart(curve_figs.task_curves(found.points, found.full_ppl, found.full, task, kind),
                        key=f"{key}_{task}_fig")
