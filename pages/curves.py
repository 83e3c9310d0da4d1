"""Pruning curves: which selection method keeps perplexity lowest as more is removed,
judged on windows the methods never saw, and the per-sequence dynamic-depth oracle.

Widgets -> analysis.search.curves_run (cached; computed on request as a background job,
ui/results.start_curves) -> analysis.reporting.figures.curves -> st.*. A clicked point (or the method / k
pickers) opens the playground with exactly that removal or downloads it as a plan.
"""
import pandas as pd
import streamlit as st

from analysis.core.kinds import Kind
from analysis.data import evaluation
from analysis.core import jobs
from analysis.reporting.figures import curves as figs
from analysis.search import curves as cv
from analysis.search import curves_run
from ui import context, results, tasks_panel, toggles, urlstate
from ui import jobs as jobs_ui
from ui.context import plain

ctx = context.model_page("Pruning curves", "For k = 1..L-1 removed blocks (or attention / MLP sublayers), each "
                         "method picks what to remove on the calibration windows; the curve is the perplexity of its "
                         "choice on the evaluation windows.",
                         "Pruning curves")
split = results.split_for(ctx)
if not split.available:
    st.warning(plain(split.notice) + " Pruning curves need evaluation windows.")
    st.stop()
st.caption(f"Choices: {split.calibration_label()}. Curves: {split.evaluation_label()}.")
L = ctx.model.n_layers
pick = st.columns([3, 1])
chosen_kinds = pick[0].multiselect("Kinds", cv.KINDS, default=list(cv.KINDS), format_func=cv.KIND_TITLES.get,
                                   key="curves_kinds", help="Which removals the curves are for: whole blocks, "
                                   "attention or MLP sublayers. Fewer kinds take less time.")
k_max = int(pick[1].number_input("k up to", 1, L - 1, L - 1, key="curves_k_max",
                                 help="Curves for k = 1..this many removed; a smaller k saves most of the greedy's work."))
if not chosen_kinds:
    st.warning("Pick at least one kind of removal.")
    st.stop()
job = results.curves_job(ctx, split, chosen_kinds, k_max)
if job is None or job.state != jobs.DONE:
    if job is not None and not job.done:
        jobs_ui.watch(job)
        st.stop()
    if job is not None and job.state == jobs.FAILED:
        st.error(plain(f"The last run failed: {job.error}"))
    kinds_cli = ",".join(chosen_kinds) + ("" if k_max == L - 1 else f" --k-max {k_max}")
    st.info(f"Not computed yet for this model, corpus, split, kinds and k. It runs the instrumented pass, the exact "
            f"sweep of all {3 * L} single removals and the exact iterative greedy order of each kind chosen on the "
            "calibration windows, then several hundred removal sets on the evaluation windows: minutes on a GPU, "
            "up to an hour or more on a small CPU. It runs in the background: change page or reload meanwhile. "
            f"`python -m analysis curves --kinds {kinds_cli}` computes the same (and this page then reads it, as it "
            "reads a run of more kinds or a larger k).")
    if st.button("Compute pruning curves", key="curves_run"):
        jobs_ui.start(lambda: results.start_curves(ctx, split, chosen_kinds, k_max))
    st.stop()
result = job.result


def open_in_playground(kind: Kind, method: str, k: int, c: cv.PruningCurves) -> None:
    """Switch to the playground with exactly this point's removals, on the evaluation windows."""
    removal = c.curve(kind, method).removal(k)
    toggles.set_toggles(ctx.model.fingerprint, removal, {"name": method, "parameters": {"k": k, "kind": kind}})
    st.session_state["pg_show_on"] = "evaluation"
    urlstate.set_view(**removal_link(removal), show_on="evaluation")
    st.switch_page("pages/playground.py")


def removal_link(removal) -> dict:
    return {key: sorted(getattr(removal, kind)) for key, kind in (("rm_blocks", "blocks"), ("rm_attn", "attn"),
                                                                  ("rm_mlp", "mlp"))}


def chosen_point(kind: Kind, c: cv.PruningCurves):
    """(method, k) from the pickers. A click on a point of the chart opens the playground
    with that point's removals (and sets the pickers to it for when you come back)."""
    event = st.session_state.get(f"curves_chart_{kind}")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else []
    data = points[0].get("customdata") if points else None
    if data and data != st.session_state.get(f"_curves_click_{kind}"):
        st.session_state[f"_curves_click_{kind}"] = data
        st.session_state[f"curves_method_{kind}"], st.session_state[f"curves_k_{kind}"] = data[0], int(data[1])
        open_in_playground(kind, data[0], int(data[1]), c)
    methods = cv.methods_for(kind)
    k_max = len(c.curve(kind, methods[0]).k)
    cols = st.columns(2)
    method = cols[0].selectbox("Method", methods, key=f"curves_method_{kind}")
    k = int(cols[1].number_input("k removed", 1, k_max, min(3, k_max), key=f"curves_k_{kind}"))
    return method, k


def show_point(kind: Kind, method: str, k: int, c: cv.PruningCurves) -> None:
    curve = c.curve(kind, method)
    i = curve.k.index(k)
    calib = curve.calib_ppl[i] if curve.calib_ppl else None
    st.markdown(f"**{method}, k = {k}**: removes {kind} {', '.join(map(str, curve.removed[i]))} "
                f"({100 * curve.param_fraction[i]:.1f}% of the parameters).")
    m = st.columns(3)
    m[0].metric("Evaluation perplexity", f"{curve.eval_ppl[i]:.3f}",
                delta=f"{100 * (curve.eval_ppl[i] / c.full_ppl['evaluation'] - 1):+.1f}% vs full", delta_color="inverse")
    m[1].metric("Calibration perplexity", "-" if calib is None else f"{calib:.3f}",
                help="On the windows the method chose on (in-sample, optimistic).")
    m[2].metric("Full model (evaluation)", f"{c.full_ppl['evaluation']:.3f}")
    if curve.eval_window_nll:
        iv = evaluation.evaluation_intervals(c.depth_inputs["full"], curve.eval_window_nll[i])
        st.caption(f"95% intervals over the {len(curve.eval_window_nll[i])} evaluation windows: evaluation perplexity "
                   f"{iv['pruned'].text()}, change vs full {iv['delta'].text('{:+.1%}')} (paired by window), full "
                   f"model {iv['full'].text()}.")
    b = st.columns(3)
    link = removal_link(curve.removal(k))
    b[0].link_button("Open in the playground (new tab)", urlstate.share_url("playground", **link, show_on="evaluation"))
    if b[1].button("Open in the playground here", key=f"curves_open_{kind}"):
        open_in_playground(kind, method, k, c)
    plan = cv.point_plan(ctx.model, c, kind, method, k).to_json()
    b[2].download_button("Download this point as a pruning plan", plan, file_name=f"plan-{method}-{k}.json",
                         mime="application/json", on_click="ignore", key=f"curves_plan_{kind}")
    with st.expander("This point's pruning plan (JSON)"):
        st.code(plan, language="json")


def show_kind(kind: Kind, c: cv.PruningCurves) -> None:
    calib = st.toggle("Also show calibration perplexity (dotted)", key=f"curves_calib_{kind}")
    lines = [c.curve(kind, m).to_dict() for m in cv.methods_for(kind)]
    st.plotly_chart(figs.pruning_curves(lines, c.full_ppl["evaluation"], kind, calib, c.full_ppl["calibration"]),
                    key=f"curves_chart_{kind}", on_select="rerun", selection_mode="points")
    st.caption("Click a point to pick it below. Random: the lower median of "
               f"{c.seeds} seeds' evaluation perplexity with the 10-90% band.")
    rows = []
    for k in (3, 6, 9):
        if k <= len(c.curve(kind, cv.methods_for(kind)[0]).k):
            best = c.winners(kind, k)
            rows.append({"k": k, "best method": best[0]["method"], "evaluation ppl": round(best[0]["eval_ppl"], 3),
                         "calibration ppl": best[0]["calib_ppl"] and round(best[0]["calib_ppl"], 3),
                         "runner-up": best[1]["method"], "runner-up evaluation ppl": round(best[1]["eval_ppl"], 3)})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    method, k = chosen_point(kind, c)
    show_point(kind, method, k, c)
    with st.expander("Task accuracy along the curves (lm-eval)"):
        tasks_panel.curves_panel(ctx.model, c, kind, key=f"curves_tasks_{kind}")


if few := evaluation.too_few_evaluation(result.split["n_evaluation_windows"], result.split["n_evaluation_tokens"]):
    st.warning(few)
kinds = [k for k in result.kinds() if k in chosen_kinds]
stored_k = len(result.curve(kinds[0], cv.methods_for(kinds[0])[0]).k)
if result.kinds() != kinds or stored_k != k_max:
    st.caption(f"From a stored run of {', '.join(result.kinds())} up to k = {stored_k}, which covers this choice.")
for tab, kind in zip(st.tabs([cv.KIND_TITLES[k] for k in kinds]), kinds):
    with tab:
        show_kind(kind, result)
g = result.greedy.get("blocks")
if g:
    st.caption(f"Iterative greedy (blocks) measured {g['batches_measured']} candidate-batches of the "
               f"{g['batches_naive']} a full re-measurement at every step would (prefix reuse and branch and bound).")

st.header("Per-sequence dynamic-depth oracle")
st.caption("Each evaluation window picks one configuration (an early exit after block d, or a set of skipped blocks: "
           "prefixes of the iterative greedy order, the best contiguous block for every n, skip every p-th block) "
           "so that the mean fraction of blocks run is smallest while the mean NLL stays at most the full model's "
           "(+ tolerance): an exact multiple-choice knapsack (Glavas et al., arXiv 2410.20022).")
tolerance = st.select_slider("Tolerance (nats of mean NLL)", [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5], value=0.0,
                             key="curves_tolerance")
depth = curves_run.recompute_depth(result, tolerance)
fmt = lambda f: "none meets the budget" if f is None else f"{100 * f:.1f}%"
d = st.columns(3)
d[0].metric("Layer skipping: mean fraction of blocks", fmt(depth.skipping.mean_fraction))
d[1].metric("Early exit: mean fraction of blocks", fmt(depth.early_exit.mean_fraction))
d[2].metric("Paper: skipping on OPT-1.3B", f"{100 * depth.paper_skip_fraction:.1f}%")
st.info(depth.note)
st.caption("Every position of a window uses the window's configuration, so attention reads keys and values computed "
           "the same way; values are teacher-forced mean next-token NLL on the evaluation windows.")
if depth.skipping.window_config or depth.early_exit.window_config:
    st.plotly_chart(figs.oracle_fractions(depth.skipping.window_fraction or None,
                                          depth.early_exit.window_fraction or None, depth.n_layers))
if depth.skipping.window_config and depth.early_exit.window_config:
    st.dataframe(pd.DataFrame({"window": range(depth.n_windows), "skipping": depth.skipping.window_config,
                               "skipping NLL": depth.skipping.window_nll, "early exit": depth.early_exit.window_config,
                               "early-exit NLL": depth.early_exit.window_nll,
                               "full NLL": result.depth_inputs["full"]}), hide_index=True)
