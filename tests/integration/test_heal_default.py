"""Healing the default model (3 blocks removed) for a few steps: the numbers agree with
plain transformers, training sees calibration windows only, and the merged checkpoint
loads in plain transformers with the same logits."""
import pytest
import torch

import reference
from analysis.data.corpus import load_corpus, make_windows, split_windows
from analysis.model.removal import Removal
from analysis.heal.train import HealSettings, heal, hf_perplexity, pruned_copy
from analysis.heal.run import write_checkpoint
from analysis.plans.schema import make_plan

REMOVAL = Removal.of(blocks=[14, 17, 25])  # lowest Block Influence on builtin:all, seq_len 128


def test_heal_default_model_a_few_steps(default_model, plain_default, tmp_path):
    windows = make_windows(default_model.tokenizer, load_corpus("builtin:all").text, 64, default_model.n_ctx, 10)
    calibration, evaluation = split_windows(windows)
    seen = []
    settings = HealSettings(steps=3, batch_size=2, warmup_steps=1)
    result, merged = heal(default_model, REMOVAL, calibration, evaluation, settings, seen=seen.append)
    assert len(result.loss_curve) == 3 and all(0 < loss < 20 for loss in result.loss_curve)
    trained = {tuple(r) for batch in seen for r in batch.tolist()}
    assert not trained & {tuple(r) for r in evaluation.tolist()}
    ppl = result.perplexity
    assert ppl["full"]["evaluation"] == pytest.approx(reference.perplexity(plain_default, evaluation), rel=1e-4)
    assert ppl["pruned"]["evaluation"] == pytest.approx(hf_perplexity(pruned_copy(default_model, REMOVAL), evaluation),
                                                        rel=1e-4)
    assert ppl["pruned"]["evaluation"] > ppl["full"]["evaluation"]
    assert ppl["healed"]["calibration"] != pytest.approx(ppl["pruned"]["calibration"], rel=1e-6)  # the weights moved
    assert result.params["healed"] == result.params["pruned"] < result.params["full"]
    out = write_checkpoint(merged, default_model, make_plan(default_model, REMOVAL, "manual", {}), result,
                           tmp_path / "healed")
    plain = reference.plain_model(out)
    assert plain.config.num_hidden_layers == 27
    with torch.inference_mode():
        assert (plain(evaluation[:1]).logits - merged(evaluation[:1]).logits).abs().max() < 1e-4
