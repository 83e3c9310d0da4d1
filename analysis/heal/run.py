"""Where a healing run goes, and healing as a background job.

`write_checkpoint` writes the merged model as a plain transformers directory (weights,
config, tokenizer, the plan with its `healing` section and the JSON record), built under
a temporary name and renamed into place, so a crash or cancel never leaves half a
checkpoint. `forward_times` times the full, pruned and healed models on the same windows.
`submit_healing` runs a whole healing (split, train, evaluate, time, write) as a job in
the "heal" lane (one per server), keyed by (model fingerprint, removal, settings, corpus,
windows): its record is cached on disk and its checkpoint lives in cache/healed/<key>/.
The job carries what it heals (`details`: model fingerprint, removal, settings, plan
method), so `server_jobs` can list this server's healing jobs after a reload.
"""
from __future__ import annotations

from pathlib import Path

import torch

from analysis.core.results import Result
from analysis.core import jobs, settings, store
from analysis.heal import train as healing
from analysis.model.removal import Removal
from analysis.plans.apply import PLAN_FILE, _is_our_checkpoint, time_models
from analysis.heal.train import HealResult, HealSettings
from analysis.data.corpus import split_windows
from analysis.data.evaluation import windows_for
from analysis.playground.prompts import eos_ids, prompt_tokens

RECORD_FILE = "layer-lab-heal.json"
LATENCY_WINDOWS = 4
HEAL = Result("heal", healing.SCHEMA_VERSION, HealResult, lane="heal")
PERSIST = HEAL.persist


def write_checkpoint(merged, model, plan, result: HealResult, out) -> Path:
    """The merged model + tokenizer + plan (with `healing`) + record, atomically at `out`."""
    from transformers import AutoTokenizer

    out = Path(out).expanduser().resolve()
    if out.exists() and not _is_our_checkpoint(out):
        raise ValueError(f"{out} exists and is not a Layer Lab checkpoint; choose another --out")
    tokenizer = AutoTokenizer.from_pretrained(healing.source_of(model), trust_remote_code=settings.trust_remote_code())
    with store.building_dir(out, _is_our_checkpoint) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if plan is not None:
            (tmp / PLAN_FILE).write_text(plan.with_healing(result.to_dict()).to_json(), encoding="utf-8")
        store.write_json_atomic(tmp / RECORD_FILE, result.to_dict())
    return out


def forward_times(model, removal: Removal, merged, windows: torch.Tensor, repeats: int = 3) -> dict:
    """Median forward seconds of the full, pruned and healed models over `windows` (each a
    plain transformers model in float32, timed in turn) and the ratios to the full one."""
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(healing.source_of(model), dtype=torch.float32,
                                                trust_remote_code=settings.trust_remote_code()).eval()
    pruned = healing.pruned_copy(model, removal)
    seconds = time_models({"full": full, "pruned": pruned, "healed": merged}, windows, repeats)
    return {f"{name}_seconds": s for name, s in seconds.items()} | {
        "pruned_ratio": seconds["pruned"] / seconds["full"], "healed_ratio": seconds["healed"] / seconds["full"],
        "windows": list(windows.shape), "repeats": repeats, "threads": torch.get_num_threads()}


def heal_key(model, removal: Removal, heal_settings: HealSettings, corpus, seq_len: int,
             max_windows: int | None) -> str:
    return store.make_key(kind="heal", fingerprint=model.fingerprint, removal=removal.to_dict(),
                          settings=heal_settings.to_dict(), corpus=corpus.sha256, seq_len=seq_len,
                          max_windows=max_windows, schema=healing.SCHEMA_VERSION)


def checkpoint_dir(key: str) -> Path:
    return settings.cache_dir() / "healed" / key


def lookup(key: str) -> jobs.Job | None:
    """The healing job or finished record for `key` (memory, then disk), or None."""
    return HEAL.lookup(key)


def run_healing(ctx: jobs.JobContext, model, removal: Removal, heal_settings: HealSettings, corpus, seq_len: int,
                max_windows: int | None, plan, out: Path) -> HealResult:
    """Split the corpus, heal, evaluate, time and write the checkpoint, reporting to `ctx`."""

    windows = windows_for(model, corpus, seq_len, max_windows)
    calibration, evaluation = split_windows(windows)
    curve: list = []

    def on_step(step: int, loss: float) -> None:
        curve.append(loss)
        ctx.update(loss_curve=list(curve), steps=heal_settings.steps)
        ctx.progress(healing.step_fraction(step, heal_settings.steps),
                     f"step {step}/{heal_settings.steps}, loss {loss:.4f}")

    info = {"corpus_sha256": corpus.sha256, "evaluation_source": "every 5th window held out",
            "max_windows": max_windows}
    result, merged = healing.heal(model, removal, calibration, evaluation, heal_settings, windows_info=info,
                                  progress=ctx.progress, on_step=on_step, check_cancelled=ctx.check_cancelled)
    ctx.progress(0.96, "Timing the full, pruned and healed forward...")
    latency = forward_times(model, removal, merged, evaluation[:LATENCY_WINDOWS])
    result = HealResult.from_dict(result.to_dict() | {"latency": latency})
    ctx.progress(0.99, "Writing the healed checkpoint...")
    write_checkpoint(merged, model, plan, result, out)
    return result


def submit_healing(model, removal: Removal, heal_settings: HealSettings, corpus, seq_len: int,
                   max_windows: int | None, plan=None) -> jobs.Job:
    """Start (or join) the healing job for these inputs; one healing job runs per server."""
    heal_settings.check()
    key = heal_key(model, removal, heal_settings, corpus, seq_len, max_windows)
    blocks = len(removal.blocks)
    label = f"Healing {model.name} ({blocks} block{'s' if blocks != 1 else ''} removed, {heal_settings.steps} steps)"
    details = {"fingerprint": model.fingerprint, "removal": removal.to_dict(), "settings": heal_settings.to_dict(),
               "method": plan.method.get("name") if plan is not None else None}
    return HEAL.submit(key, lambda ctx: run_healing(ctx, model, removal, heal_settings, corpus, seq_len, max_windows,
                                                    plan, checkpoint_dir(key)),
                       label=label, details=details)


def server_jobs(fingerprint: str) -> list[jobs.Job]:
    """The healing jobs of the model `fingerprint` submitted to this server (queued,
    running or finished and still in memory), newest first."""
    return [job for job in jobs.REGISTRY.recent(PERSIST.kind) if job.details.get("fingerprint") == fingerprint]


def job_removal(job: jobs.Job) -> Removal:
    """The removal a healing job from `server_jobs` heals."""
    return Removal.of(**job.details["removal"])


_HEALED_MODELS = store.LRU(2, name="heal.run.models")  # healed checkpoints loaded for generation, shared by all sessions
_HEALED_TEXT = store.LRU(64, name="heal.run.texts")


def healed_model(key: str):
    """The healed checkpoint of `key` as a plain transformers model, or None when absent."""
    from transformers import AutoModelForCausalLM

    directory = checkpoint_dir(key)
    if not (directory / "config.json").is_file():
        return None
    return _HEALED_MODELS.get_or_create(key, lambda: AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32).eval())


def healed_continuation(model, key: str, prompt: str, max_new: int) -> list[int] | None:
    """Greedy continuation of `prompt` (same tokens as the playground's) by the healed
    model of `key`, stopping after an end-of-sequence token; None when its checkpoint is gone."""

    memo = (key, prompt, max_new)
    cached = _HEALED_TEXT.get(memo)
    if cached is not None:
        return cached
    hf = healed_model(key)
    if hf is None:
        return None
    tokens = prompt_tokens(model, prompt, max_new)
    eos = eos_ids(model)
    with torch.inference_mode():
        out = hf.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=max_new, do_sample=False,
                          eos_token_id=sorted(eos) or None, pad_token_id=model.tokenizer.pad_token_id)
    generated = out[0, tokens.shape[1]:].tolist()
    for i, token in enumerate(generated):
        if token in eos:
            generated = generated[:i + 1]
            break
    _HEALED_TEXT.put(memo, generated)
    return generated
