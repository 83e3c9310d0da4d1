"""LoRA healing on the tiny random Llama (issue 14): it lowers the training loss, the
merged checkpoint equals the LoRA model, no evaluation window is trained on, zeroed
sublayers stay removed, runs are seeded, and cancel / restart are safe."""
import json
import random
import time

import pytest
import torch

import reference
from tiny import TEXT
from analysis.core import jobs, store
from analysis.data.corpus import make_windows, split_windows
from analysis.heal import run as heal_run
from analysis.model.removal import Removal
from analysis.plans.apply import PLAN_FILE
from analysis.heal.train import HealResult, HealSettings, add_lora, check_disjoint, heal, hf_perplexity, pruned_copy, train
from analysis.plans.schema import make_plan
from analysis.plans.check import parse_plan

REMOVAL = Removal.of(blocks=[1], attn=[2])
FAST = HealSettings(steps=24, rank=4, alpha=8.0, lr=1e-2, batch_size=4, warmup_steps=2, seed=3)


SHUFFLED = " ".join(random.Random(0).sample((TEXT * 3).split(" "), len((TEXT * 3).split(" "))))  # no repeated windows


@pytest.fixture(scope="module")
def split(tiny):
    return split_windows(make_windows(tiny.tokenizer, SHUFFLED, 24, max_windows=20))


@pytest.fixture(scope="module")
def healed(tiny, split):
    calibration, evaluation = split
    seen = []
    result, merged = heal(tiny, REMOVAL, calibration, evaluation, FAST, seen=seen.append)
    return result, merged, seen


def test_healing_lowers_the_training_loss(healed):
    result, _, _ = healed
    curve = result.loss_curve
    assert len(curve) == FAST.steps
    assert sum(curve[-4:]) / 4 < 0.9 * sum(curve[:4]) / 4  # measured: 5.66 -> 4.56 nats
    ppl = result.perplexity
    assert ppl["healed"]["calibration"] < ppl["pruned"]["calibration"]
    assert set(ppl) == {"full", "pruned", "healed"} and all(set(v) == {"calibration", "evaluation"} for v in ppl.values())


def test_no_evaluation_window_is_ever_trained_on(healed, split):
    calibration, evaluation = split
    _, _, seen = healed
    assert len(seen) == FAST.steps and all(batch.shape == (FAST.batch_size, calibration.shape[1]) for batch in seen)
    trained = {tuple(row) for batch in seen for row in batch.tolist()}
    calibration_rows = {tuple(row) for row in calibration.tolist()}
    assert trained <= calibration_rows and len(trained) == len(calibration_rows)  # every calibration window, only them
    assert not trained & {tuple(row) for row in evaluation.tolist()}


def test_overlapping_evaluation_text_is_refused(split):
    calibration, evaluation = split
    check_disjoint(calibration, evaluation)
    with pytest.raises(ValueError, match="2 of 3 evaluation windows also occur in the calibration windows"):
        check_disjoint(calibration, torch.cat([calibration[:2], evaluation[:1]]))


def test_full_and_pruned_numbers_agree_with_plain_transformers(tiny, tiny_dir, healed, split):
    result, _, _ = healed
    calibration, evaluation = split
    full = reference.plain_model(tiny_dir)
    assert result.perplexity["full"]["evaluation"] == pytest.approx(reference.perplexity(full, evaluation), rel=1e-5)
    pruned = pruned_copy(tiny, REMOVAL)  # the physically pruned model, as `apply` writes it
    assert result.perplexity["pruned"]["calibration"] == pytest.approx(hf_perplexity(pruned, calibration), rel=1e-5)


def test_zeroed_sublayers_stay_removed_and_removed_blocks_gone(healed):
    _, merged, _ = healed
    layers = merged.model.layers
    assert len(layers) == 3 and merged.config.num_hidden_layers == 3
    assert torch.count_nonzero(layers[1].self_attn.o_proj.weight) == 0  # attention 2 is layer 1 after block 1 went
    assert torch.count_nonzero(layers[0].self_attn.o_proj.weight) > 0


def test_merged_checkpoint_equals_the_lora_model(tiny, split, tmp_path):
    calibration, evaluation = split
    hf = pruned_copy(tiny, REMOVAL)
    lora = add_lora(hf, FAST, [])
    train(lora, calibration, HealSettings(steps=4, rank=4, lr=1e-2, batch_size=2, warmup_steps=1))
    with torch.inference_mode():
        lora_logits = lora(input_ids=evaluation).logits
    merged = lora.merge_and_unload().eval()
    result = HealResult(1, "lora", FAST.to_dict(), REMOVAL.to_dict(), [1.0], {}, {}, {}, None, 1.0, 1.0)
    out = heal_run.write_checkpoint(merged, tiny, None, result, tmp_path / "healed")
    plain = reference.plain_model(out)  # plain transformers, no Layer Lab or peft code
    with torch.inference_mode():
        merged_logits, plain_logits = merged(input_ids=evaluation).logits, plain(input_ids=evaluation).logits
    assert (merged_logits - lora_logits).abs().max() < 1e-5
    assert (plain_logits - lora_logits).abs().max() < 1e-5
    assert not any("lora" in name for name, _ in plain.named_parameters())


def test_runs_are_seeded(tiny, split, healed):
    calibration, evaluation = split
    again, _ = heal(tiny, REMOVAL, calibration, evaluation, FAST)
    assert again.loss_curve == healed[0].loss_curve
    other, _ = heal(tiny, REMOVAL, calibration, evaluation, HealSettings(**{**FAST.to_dict(), "seed": 4}))
    assert other.loss_curve != healed[0].loss_curve


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="steps must be a positive integer.*lr must be a positive number"):
        HealSettings(steps=0, lr=-1.0).check()


def test_cancel_then_restart_is_safe(tiny, isolated_cache, healed):
    """A job cancelled mid-training leaves no checkpoint, record or temporary directory; the
    same request afterwards runs afresh to the same result as an uninterrupted run."""
    from analysis.data.corpus import Corpus
    corpus = Corpus("test:heal", SHUFFLED)
    plan = make_plan(tiny, REMOVAL, "manual", {})
    registry = jobs.Registry()
    key = heal_run.heal_key(tiny, REMOVAL, FAST, corpus, 24, 20)
    out = heal_run.checkpoint_dir(key)

    def run(ctx):
        return heal_run.run_healing(ctx, tiny, REMOVAL, FAST, corpus, 24, 20, plan, out)
    job = registry.submit(key, run, label="heal", lane="heal", persist=heal_run.PERSIST)
    for _ in range(6000):
        if len(job.details.get("loss_curve", [])) >= 2 or job.done:
            break
        time.sleep(0.01)
    job.cancel()
    assert job.wait(120) and job.state == jobs.CANCELLED, job.error
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))
    assert store.load("heal", key, heal_run.PERSIST.schema_version) is None
    again = registry.submit(key, run, label="heal", lane="heal", persist=heal_run.PERSIST)
    assert again is not job and again.wait(300) and again.state == jobs.DONE, again.error
    assert again.result.loss_curve == healed[0].loss_curve
    assert again.result.latency["healed_ratio"] > 0
    stored = json.loads((out / PLAN_FILE).read_text())
    assert stored["version"] == 2 and stored["healing"]["loss_curve"] == healed[0].loss_curve
    assert parse_plan(stored, tiny).errors == []
    assert sorted(p.name for p in out.parent.iterdir()) == [key]  # nothing temporary left beside it
    assert jobs.Registry().lookup(key, heal_run.PERSIST).result == again.result  # served from disk after a restart
