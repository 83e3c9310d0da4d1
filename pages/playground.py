"""Layer playground: switch blocks, attention or MLP sublayers off and watch perplexity,
per-token loss, next-token predictions and generated text change next to the full model.

Only the fragment below reruns on a toggle; the analyses are never recomputed and every
evaluation restarts from the cached clean residual of the first changed layer. The toggle
and link state machine lives in ui/toggles.py.
"""
import numpy as np
import streamlit as st

from analysis.core.kinds import ShowOn
from analysis.model import architectures
from analysis.data.corpus import plural
from analysis.reporting.figures import playground as figs
from analysis.ablate import costs
from analysis.plans import mergekit, schema as plans, check as plan_check
from analysis.playground import live as playground, prompts
from analysis.search import presets
from analysis.model.removal import KINDS, Removal
from ui import context, internals, results, tasks_panel, toggles, urlstate
from ui.sidebar import plain

LABELS = {"blocks": "Remove blocks", "attn": "Remove attention sublayers", "mlp": "Remove MLP sublayers"}


def main() -> None:
    ctx = context.model_page("Layer playground", "Switch any block, attention or MLP sublayer off. Every change "
                             "re-evaluates the corpus from the first changed layer on (the unchanged prefix is cached), "
                             "next to the full model.", "The playground (live removals, perplexity and generation)")
    for note in architectures.notes_for(ctx.model):
        st.caption(note)
    analysis = context.analysis_for(ctx)
    removal_cost = results.removal_for(ctx, run=False)
    greedy = results.greedy_for(ctx)
    show_on = show_on_choice(ctx)
    pg = results.playground_for(ctx, show_on)
    toggles.seed_state(ctx.model.fingerprint, ctx.model.n_layers)
    for message in st.session_state.get("_pg_notices", []):
        st.warning(f"From the link: {message}")
    st.fragment(live)(ctx, pg, analysis, removal_cost, greedy, show_on)
    with st.expander("Tasks (lm-eval): does the pruned model still answer?"):
        removal = toggles.current(ctx.model.fingerprint, ctx.model.n_layers)
        tasks_panel.panel(ctx.model, removal)


def show_on_choice(ctx) -> str:
    """'calibration' or 'evaluation': which windows the perplexities below are measured on."""
    split = ctx.split
    link = st.session_state.get("_view", {}).get("show_on")
    if "pg_show_on" not in st.session_state and link in ("calibration", "evaluation"):
        st.session_state["pg_show_on"] = link
    if split is None or not split.available:
        st.session_state.pop("pg_show_on", None)
        urlstate.set_view(show_on=None)
        return "calibration"
    labels = {"calibration": split.calibration_label(), "evaluation": split.evaluation_label()}
    choice = st.radio("Show perplexity on", list(labels), format_func=labels.get, key="pg_show_on", horizontal=True,
                      help="Presets choose on the calibration windows; the evaluation windows judge the choice.")
    urlstate.set_view(show_on=choice)
    return choice


def live(ctx, pg, analysis, removal_cost, greedy, show_on) -> None:
    """The playground's fragment: toggles, then the full and pruned numbers, refined until
    exact unless a new click waits. Long because it is one fragment: everything a toggle
    changes must rerun together, and nothing outside it."""
    model = ctx.model
    L, fp = model.n_layers, model.fingerprint
    chosen = {kind: st.pills(LABELS[kind], list(range(L)), selection_mode="multi", key=toggles.toggle_key(kind, fp))
              for kind in KINDS}
    removal = Removal.of(**chosen)
    toggles.remember(fp, removal)
    job = pg.request(removal, owner=internals.session_id())  # the worker starts now, while the rest is drawn

    with st.expander("Presets from the analyses"):
        methods = [m for m in presets.METHODS if (m != "cheapest_measured" or removal_cost is not None)
                   and (m != "iterative_greedy" or greedy is not None)]
        c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
        c1.selectbox("Method", methods, key="pg_preset", format_func=lambda m: f"{m}: {presets.DESCRIPTIONS[m]}")
        c2.number_input("k", 0, 2 * L, 1, key="pg_k")
        c3.button("Apply preset", on_click=toggles.apply_preset, args=(fp, L, analysis, removal_cost, greedy))
        st.caption("Presets choose on the calibration windows."
                   + ("" if removal_cost is not None else " cheapest_measured is offered once the removal sweep is "
                      "cached (Attention vs MLP page).")
                   + ("" if greedy is not None else " iterative_greedy is offered once the pruning curves (or the "
                      "greedy order) are computed."))
        if message := st.session_state.pop("_pg_preset_error", None):
            st.error(plain(message))
    with st.expander("Import a pruning plan"):
        import_plan(model)

    picture, summary, numbers = st.empty(), st.empty(), st.empty()  # in page order; the numbers are sent first
    param_frac, flop_frac = costs.removed_fractions(costs.component_costs(model, ctx.seq_len), removal)
    label = windows_label(ctx, show_on)
    with st.spinner("Evaluating the first windows..."):
        job.wait(timeout=30)
    shown_complete = job.complete  # read before the snapshot, so a completion in between is shown later
    show_numbers(numbers, pg, job, param_frac, flop_frac, ctx.seq_len, label)
    picture.plotly_chart(figs.removal_map(removal.blocks, removal.attn, removal.mlp, L), key="pg_map")
    summary.info(playground.describe(removal, L))
    strip = st.container()

    st.subheader("Prompt")
    c1, c2 = st.columns([4, 1])
    prompt = c1.text_input("Prompt", key="pg_prompt")
    new = int(c2.number_input("Tokens to generate", 0, prompts.MAX_NEW_TOKENS, key="pg_new"))
    st.session_state["_pg_prompt"], st.session_state["_pg_new"] = prompt, new
    urlstate.set_view(**playground.link_values(removal), prompt=prompt)
    urlstate.sync("playground")
    st.subheader("Share and export")
    st.caption("Copy link: opens this page with the same model, corpus, removals and prompt.")
    st.code(urlstate.share_url("playground"), language=None, wrap_lines=True)
    export = st.container()
    generation = st.container()

    while not shown_complete:  # refine the estimate; the worker goes on when this run ends
        job.wait(windows=job.windows_done + 1, timeout=0.25)
        shown_complete = job.complete
        show_numbers(numbers, pg, job, param_frac, flop_frac, ctx.seq_len, label)
        if job.error is not None:  # shown by show_numbers; nothing more will come
            return
        if not shown_complete and internals.rerun_pending():  # a new click waits for this run: end it now
            return
    pruned = pg.evaluate(removal)  # from the memo the worker just filled
    with strip:
        loss_strip(model, pg, pg.full, pruned)
    with export:
        export_plan(ctx, removal, pg.full, pruned, show_on)
    with generation:
        show_prompt(model, prompt, removal, new)


def windows_label(ctx, show_on: ShowOn) -> str:
    split = ctx.split
    if split is None:
        return "every window of the corpus"
    return split.evaluation_label() if show_on == "evaluation" else split.calibration_label()


def show_numbers(slot, pg, job, param_frac: float, flop_frac: float, seq_len: int, label: str) -> None:
    try:
        snap = job.snapshot()
    except Exception as err:  # the evaluation failed: say so, keep the page
        slot.error(plain(f"This removal could not be evaluated: {err}"))
        return
    if snap is None:
        slot.info("Evaluating...")
        return
    full = pg.full
    with slot.container():
        cols = st.columns(4)
        cols[0].metric("Full perplexity", f"{full.perplexity:.3f}")
        # "~" and an "estimate" badge until every window is in; the exact number renders plainly
        cols[1].metric("Pruned perplexity", f"{snap.perplexity:.3f}" if snap.complete else f"~{snap.perplexity:.3f}",
                       delta=None if job.removal.is_empty()  # nothing removed: no change to colour
                       else f"{playground.changed_percent(full.perplexity, snap.perplexity):+.2f}%",
                       delta_color="inverse")
        if snap.complete:
            cols[1].badge("exact", icon=":material/check:", color="green")
        else:
            cols[1].badge(f"estimate ({snap.windows_done} of {snap.windows_total} windows)",
                          icon=":material/timelapse:", color="orange")
        cols[2].metric("Parameters removed", f"{100 * param_frac:.2f}%")
        cols[3].metric("FLOPs per token removed", f"{100 * flop_frac:.2f}%")
        st.caption(f"Corpus: {plural(pg.windows.shape[0], 'window')} ({label}), {full.nll.size} predicted tokens. Both "
                   "perplexities are measured on these windows. Pruned perplexity: "
                   f"{snap.label()} (first estimate after {job.first_seconds or 0:.2f} s"
                   + (f", exact after {job.exact_seconds:.2f} s" if job.exact_seconds is not None else "")
                   + "). FLOPs per token count the attention q/k/v/o and MLP weights, attention "
                   f"over {seq_len} tokens and the unembedding.")


def loss_strip(model, pg, full, pruned) -> None:
    window = int(st.number_input("Window for the per-token loss strip", 0, full.nll.shape[0] - 1, 0,
                                 key="pg_window"))
    ids = pg.windows[window, 1:].tolist()
    tokens = [model.tokenizer.decode([i]) for i in ids]
    st.plotly_chart(figs.loss_strip(tokens, full.nll[window], pruned.nll[window]), key="pg_strip")
    diff = pruned.nll[window] - full.nll[window]
    worst = np.argsort(-diff, kind="stable")[:8]
    st.dataframe([{"position": int(i), "token": prompts.token_text(model.tokenizer, ids[i]),
                   "full loss": round(float(full.nll[window][i]), 4),
                   "pruned loss": round(float(pruned.nll[window][i]), 4), "difference": round(float(diff[i]), 4)}
                  for i in worst], hide_index=True)


def show_prompt(model, prompt: str, removal: Removal, new: int) -> None:
    """Top-5 next tokens, then the greedy continuations of the full and the pruned model,
    streamed side by side token by token (memoised for every session once finished)."""
    st.markdown("**Next token and greedy continuation**")
    results = [prompts.cached_prompt(model, prompt, r, new) for r in (Removal(), removal)]
    try:
        if any(r is None for r in results):
            results = stream_side_by_side(model, prompt, removal, new)
            if results is None:
                return
    except ValueError as err:
        st.error(plain(str(err)))
        return
    tok = model.tokenizer
    st.dataframe([{"rank": i + 1, "full model": prompts.token_text(tok, a[0]), "p (full)": round(a[1], 4),
                   "pruned": prompts.token_text(tok, b[0]), "p (pruned)": round(b[1], 4)}
                  for i, (a, b) in enumerate(zip(results[0].top, results[1].top))], hide_index=True)
    if new == 0:
        st.caption("Generation length 0: no continuation.")
        return
    for column, title, result in zip(st.columns(2), ("Full model", "Pruned"), results):
        column.markdown(f"**{title}**, greedy continuation")
        column.code(tok.decode(result.generated), language=None, wrap_lines=True)


def stream_side_by_side(model, prompt: str, removal: Removal, new: int) -> list | None:
    """Decode the full and the pruned model one step each in turn, showing the text as it
    grows; None when a newer run is waiting (the partial text is dropped)."""
    tokens = prompts.prompt_tokens(model, prompt, new)
    streams = [prompts.stream_prompt(model, tokens, r, new) for r in (Removal(), removal)]
    tops = [next(stream) for stream in streams]
    generated, live = [[], []], [True, True]
    slots = [column.empty() for column in st.columns(2)]
    while any(live):
        if internals.rerun_pending():  # a new click waits for this run: stop streaming (nothing is memoised)
            return None
        for i, stream in enumerate(streams):
            if live[i]:
                token = next(stream, None)
                if token is None:
                    live[i] = False
                else:
                    generated[i].append(token)
                    slots[i].code(model.tokenizer.decode(generated[i]), language=None, wrap_lines=True)
    for slot in slots:
        slot.empty()
    results = [prompts.PromptResult(top, ids) for top, ids in zip(tops, generated)]
    for r, result in zip((Removal(), removal), results):
        prompts.remember_prompt(model, prompt, r, new, result)
    return results


def import_plan(model) -> None:
    upload = st.file_uploader("Pruning plan (JSON)", type=["json"], key="pg_plan_upload")
    if upload is None:
        return
    check = plan_check.parse_plan(upload.getvalue(), model)
    if check.errors:
        st.error("This plan cannot be used; nothing was changed:\n\n"
                 + "\n".join(f"- {plain(e)}" for e in check.errors))
        return
    for warning in check.warnings:
        st.warning(plain(warning))
    st.write(playground.describe(check.plan.removal(), model.n_layers))
    st.button("Apply this plan's removals", key="pg_plan_apply", on_click=toggles.set_toggles,
              args=(model.fingerprint, check.plan.removal(), check.plan.method))


def export_plan(ctx, removal: Removal, full, pruned, show_on: ShowOn) -> None:
    """Plan download (evaluation on the exact numbers of the windows shown, plus the
    other window set when it is already measured) and MergeKit YAML."""
    model = ctx.model
    method = (st.session_state.get("_pg_method") or {}).get(model.fingerprint)
    if not method or method.get("removal") != removal:
        method = {"name": "manual", "parameters": {}}
    evaluation = results.plan_evaluation(ctx, removal, show_on, full, pruned)
    try:
        plan = plans.make_plan(model, removal, method["name"], method["parameters"], evaluation)
    except ValueError as err:
        st.info(plain(f"No plan to export: {err}."))
        return
    c1, c2 = st.columns(2)
    c1.download_button("Download pruning plan (JSON)", plan.to_json(), file_name="layer-lab-plan.json",
                       mime="application/json", on_click="ignore", key="pg_plan_json")
    shareable = model.shareable_reference()
    weights = f" (the weights here are {model.weights})" if model.weights else ""
    source = c2.text_input("Model the MergeKit YAML builds from", key=f"pg_mergekit_model_{model.fingerprint}",
                           placeholder=shareable,
                           help=plain(f"A hub name or a path where the YAML is built; empty: {shareable}{weights}"))
    c2.download_button("Download MergeKit YAML",
                       mergekit.mergekit_yaml(plan, source.strip() or shareable, model.hf_model, weights=model.weights),
                       file_name="layer-lab-mergekit.yaml", mime="text/yaml", on_click="ignore", key="pg_plan_yaml")
    st.page_link("pages/healing.py", label="Heal this plan (LoRA fine-tune, runs in the background)",
                 icon=":material/healing:")


main()
