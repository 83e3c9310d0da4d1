"""Heal a pruned model: LoRA fine-tuning on the calibration windows as a background job,
then full, pruned and healed side by side on calibration and held-out evaluation windows,
and their continuations of the same prompt. This server's healing jobs of the model are
listed at the top, each with its plan, so a reload (a new session, without the uploaded
plan or the settings) finds a running or finished job again."""
import streamlit as st

from analysis.data import evaluation
from analysis.core import jobs
from analysis.data.corpus import HOLDOUT_EVERY, plural
from analysis.reporting.figures import healing as figs
from analysis.heal import run as heal_run
from analysis.plans import schema as plans, check as plan_check
from analysis.playground import live as playground, prompts
from analysis.model.removal import Removal
from analysis.heal.train import HealSettings
from analysis.tasks.engine import Healed
from ui import context, jobs as jobs_ui, tasks_panel, toggles
from ui.sidebar import plain

DEFAULTS = HealSettings()
SOURCES = ("The playground's current removals", "A pruning plan file")


def choose_plan(model):
    """(removal, plan) from the playground's toggles or an uploaded plan; (None, None) when unusable."""
    source = st.radio("What to heal", SOURCES, horizontal=True, key="heal_source")
    if source == SOURCES[0]:
        removal = toggles.current(model.fingerprint, model.n_layers)
        for message in st.session_state.get("_pg_notices", []):
            st.warning(f"From the link: {message}")
        method = (st.session_state.get("_pg_method") or {}).get(model.fingerprint)
        if not method or method.get("removal") != removal:
            method = {"name": "manual", "parameters": {}}
        if removal.is_empty():
            st.info("Nothing is removed in the playground. Switch blocks or sublayers off there, or upload a plan.")
            return None, None
        return removal, plans.make_plan(model, removal, method["name"], method["parameters"])
    upload = st.file_uploader("Pruning plan (JSON)", type=["json"], key="heal_plan_upload")
    if upload is None:
        return None, None
    check = plan_check.parse_plan(upload.getvalue(), model)
    if check.errors:
        st.error("This plan cannot be used:\n\n" + "\n".join(f"- {plain(e)}" for e in check.errors))
        return None, None
    for warning in check.warnings:
        st.warning(plain(warning))
    if check.plan.removal().is_empty():
        st.info("This plan removes nothing: there is nothing to heal.")
        return None, None
    return check.plan.removal(), check.plan


def choose_settings() -> HealSettings:
    with st.expander("Healing settings"):
        c = st.columns(4)
        steps = c[0].number_input("Steps", 1, 10000, DEFAULTS.steps, key="heal_steps")
        batch = c[1].number_input("Windows per step", 1, 256, DEFAULTS.batch_size, key="heal_batch")
        rank = c[2].number_input("LoRA rank", 1, 256, DEFAULTS.rank, key="heal_rank")
        alpha = c[3].number_input("LoRA alpha", 0.01, 4096.0, DEFAULTS.alpha, key="heal_alpha")
        c = st.columns(4)
        lr = c[0].number_input("Learning rate", 1e-6, 1.0, DEFAULTS.lr, format="%.5f", key="heal_lr")
        warmup = c[1].number_input("Warm-up steps", 0, 10000, DEFAULTS.warmup_steps, key="heal_warmup")
        seed = c[2].number_input("Seed", 0, 2**31 - 1, DEFAULTS.seed, key="heal_seed")
        st.caption("LoRA adapters on every linear layer of the kept blocks (not on zeroed output projections), "
                   "AdamW with warm-up and cosine decay, gradient norm clipped at 1. The defaults heal the default "
                   "model with 3 blocks removed in about 4 minutes on a quiet 2-core CPU.")
    return HealSettings(steps=int(steps), rank=int(rank), alpha=float(alpha), lr=float(lr), batch_size=int(batch),
                        warmup_steps=int(warmup), seed=int(seed))


def live_loss(job) -> None:
    curve = job.details.get("loss_curve") or []
    if curve:
        st.plotly_chart(figs.loss_curve(curve, job.details.get("steps")), key="heal_live_loss")


def show_result(ctx, key: str, removal: Removal, result) -> None:
    ppl = result.perplexity
    st.subheader("Full, pruned and healed")
    st.dataframe([{**row, "calibration perplexity": round(row["calibration perplexity"], 4),
                   "evaluation perplexity": round(row["evaluation perplexity"], 4),
                   "forward-time ratio": None if row["forward-time ratio"] is None else round(row["forward-time ratio"], 3)}
                  for row in result.table()], hide_index=True)
    w = result.windows
    if few := evaluation.too_few_evaluation(w["evaluation"], w["evaluation"] * w["seq_len"]):
        st.warning(few)
    st.caption(f"Calibration: the {plural(w['calibration'], 'window')} trained on; evaluation: "
               f"{plural(w['evaluation'], 'window')} "
               f"({w.get('evaluation_source', 'held out')}), never trained on; {w['seq_len']} tokens each. "
               + (f"Forward-time ratio: median plain-transformers forward over {result.latency['windows'][0]} "
                  f"{'window' if result.latency['windows'][0] == 1 else 'windows'} against the full model's, "
                  "measured in this run on this machine (load changes it). "
                  if result.latency else "")
               + f"{len(result.loss_curve)} steps in {result.train_seconds:.0f} s "
               f"({result.steps_per_second:.3f} steps/s), whole run {result.wall_seconds:.0f} s; "
               f"{result.params['trainable']:,} LoRA parameters, merged into the weights.")
    left, right = st.columns(2)
    left.plotly_chart(figs.perplexity_bars(ppl), key="heal_bars")
    right.plotly_chart(figs.loss_curve(result.loss_curve), key="heal_loss")
    back = ppl["pruned"]["evaluation"] - ppl["healed"]["evaluation"]
    gap = ppl["pruned"]["evaluation"] - ppl["full"]["evaluation"]
    intervals = evaluation.evaluation_intervals(**result.window_nll) if result.window_nll else {}
    if intervals:
        st.caption(f"95% intervals over the {w['evaluation']} evaluation windows (evaluation perplexity): "
                   + "; ".join(f"{name} {intervals[name].text()}" for name in ("full", "pruned", "healed")) + ".")
    if gap > 0:
        spread = f" (95% interval {intervals['recovery'].text('{:.1%}')})" if "recovery" in intervals else ""
        st.info(f"Healing recovered {100 * back / gap:.1f}%{spread} of the evaluation perplexity lost by pruning.")
    show_generation(ctx, key, removal)
    st.subheader("Tasks before and after healing (lm-eval)")
    healed = heal_run.checkpoint_dir(key)
    if (healed / "config.json").is_file():
        tasks_panel.panel(ctx.model, removal, key="heal_tasks",
                          healed=Healed(str(healed), key))
    else:
        st.info("The healed checkpoint is no longer in the cache; heal again to judge it on tasks.")


def show_generation(ctx, key: str, removal: Removal) -> None:
    st.subheader("The same prompt, three models")
    c1, c2 = st.columns([4, 1])
    prompt = c1.text_input("Prompt", toggles.DEFAULT_PROMPT, key="heal_prompt")
    new = int(c2.number_input("Tokens to generate", 1, prompts.MAX_NEW_TOKENS, 30, key="heal_new"))
    model, tok = ctx.model, ctx.model.tokenizer
    with st.spinner("Generating with the full, pruned and healed models..."):
        try:
            texts = [tok.decode(prompts.prompt_result(model, prompt, r, new).generated) for r in (Removal(), removal)]
        except ValueError as err:
            st.error(plain(str(err)))
            return
        healed = heal_run.healed_continuation(model, key, prompt, new)
    texts.append("(the healed checkpoint is no longer in the cache)" if healed is None else tok.decode(healed))
    for column, title, text in zip(st.columns(3), ("Full model", "Pruned", "Healed"), texts):
        column.markdown(f"**{title}**, greedy continuation")
        column.code(text, language=None, wrap_lines=True)


def _show_job(job_id: str | None) -> None:
    if job_id is None:
        st.session_state.pop("heal_shown", None)
    else:
        st.session_state["heal_shown"] = job_id


def server_jobs(ctx) -> bool:
    """List this server's healing jobs of the model, each with its plan and a button that
    shows it; True when one is shown (its progress or result), which then fills the page."""
    model = ctx.model
    found = heal_run.server_jobs(model.fingerprint)
    if not found:
        return False
    shown = next((job for job in found if job.id == st.session_state.get("heal_shown")), None)
    with st.expander(f"Healing jobs on this server ({len(found)})",
                     expanded=shown is None and any(not job.done for job in found)):
        for job in found:
            settings = job.details.get("settings", {})
            method = job.details.get("method")
            st.markdown(f"**{plain(job.label)}**: {plain(job.status_text())}")
            st.caption(playground.describe(heal_run.job_removal(job), model.n_layers)
                       + (f" Plan method: {plain(method)}." if method else "")
                       + f" LoRA rank {settings.get('rank')}, learning rate {settings.get('lr')}.")
            if job is not shown:
                st.button("Show this job", key=f"heal_show_{job.id}", on_click=_show_job, args=(job.id,))
    if shown is None:
        return False
    removal = heal_run.job_removal(shown)
    st.subheader(shown.label)
    st.markdown(playground.describe(removal, model.n_layers))
    st.button("Choose another plan", key="heal_unshow", on_click=_show_job, args=(None,))
    if shown.state == jobs.DONE:
        show_result(ctx, shown.key, removal, shown.result)
    elif not shown.done:
        jobs_ui.watch(shown, live_loss)
    elif shown.state == jobs.FAILED:
        st.error(plain(f"This healing run failed: {shown.error}"))
    else:
        st.info("This healing run was cancelled.")
    return True


def main() -> None:
    st.title("Heal a pruned model")
    st.caption("Fine-tune the pruned model briefly with LoRA on the calibration windows, then compare full, pruned "
               f"and healed on those and on held-out windows (every {HOLDOUT_EVERY}th window) never trained on. "
               "Healing runs in the background: change page or reload meanwhile; one healing job runs per server.")
    ctx = context.require()
    if context.needs_model(ctx, "Healing (fine-tuning the pruned model)"):
        st.stop()
    model = ctx.model
    if server_jobs(ctx):
        return
    removal, plan = choose_plan(model)
    if removal is None:
        return
    st.markdown(playground.describe(removal, model.n_layers))
    settings = choose_settings()
    n_windows = context.windows(ctx).shape[0]
    if n_windows < HOLDOUT_EVERY:
        st.error(f"Healing holds out every {HOLDOUT_EVERY}th window for evaluation and needs at least "
                 f"{HOLDOUT_EVERY} windows; this corpus gives {n_windows}. Use a longer corpus or a shorter window.")
        return
    key = heal_run.heal_key(model, removal, settings, ctx.corpus, ctx.seq_len, ctx.max_windows)
    job = heal_run.lookup(key)
    if job is not None and job.state == "done":
        show_result(ctx, key, removal, job.result)
        return
    if job is not None and not job.done:
        jobs_ui.watch(job, live_loss)
        return
    if job is not None and job.state == "failed":
        st.error(plain(f"The last healing run failed: {job.error}"))
    held_out = evaluation.part_windows(context.corpus_windows(model, ctx.corpus, ctx.seq_len, ctx.max_windows),
                                       "evaluation")  # what the healing job holds out
    if few := evaluation.too_few_evaluation(held_out.shape[0], held_out.shape[0] * (held_out.shape[1] - 1)):
        st.warning(few)
    if st.button("Heal this plan", type="primary", key="heal_start"):
        jobs_ui.start(lambda: heal_run.submit_healing(model, removal, settings, ctx.corpus, ctx.seq_len,
                                                      ctx.max_windows, plan))


main()
