"""Logit lens and activation sparsity on the embedded default model vs plain transformers,
and both pages rendered on it (3 windows of 64 tokens; 2 for the pages)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from apptest import open_app

import reference
from analysis.measure import early_exit, lens, sparsity
from analysis.data.corpus import Corpus, make_windows
from analysis.measure.pipeline import analyse
from analysis.reporting.report import build_report

ROOT = Path(__file__).resolve().parents[2]
TEXT = reference.MIXED_TEXT * 3
SEQ, N_WINDOWS = 64, 3


@pytest.fixture(scope="module")
def result(default_model):
    return analyse(default_model, Corpus("lens-sparsity", TEXT), SEQ, max_windows=N_WINDOWS, use_cache=False)


@pytest.fixture(scope="module")
def captured(default_model, plain_default):
    """Plain-transformers resid_post of every decoder layer, MLP down_proj inputs and logits."""
    windows = make_windows(default_model.tokenizer, TEXT, SEQ, max_windows=N_WINDOWS)
    assert windows.shape == (N_WINDOWS, SEQ + 1)
    post, acts = [], []
    layers = plain_default.model.layers
    handles = [layer.register_forward_hook(lambda m, a, out: post.append((out[0] if isinstance(out, tuple) else out).clone()))
               for layer in layers]
    handles += [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: acts.append(a[0].clone())) for layer in layers]
    try:
        with torch.no_grad():
            logits = plain_default(windows).logits
    finally:
        for handle in handles:
            handle.remove()
    return windows, post, acts, logits


def test_lens_cross_entropy_per_layer_matches_plain(result, captured, plain_default):
    windows, post, _, logits = captured
    gold = windows[:, 1:].reshape(-1)
    final = F.log_softmax(logits[:, :-1].reshape(len(gold), -1).double(), -1)
    ce, kl, agree = [], [], []
    with torch.no_grad():
        for h in post:
            layer_logits = plain_default.lm_head(plain_default.model.norm(h[:, :-1])).reshape(len(gold), -1).double()
            logp = F.log_softmax(layer_logits, -1)
            ce.append(float(-logp[torch.arange(len(gold)), gold].mean()))
            kl.append(float((final.exp() * (final - logp)).sum(-1).mean()))
            agree.append(float((layer_logits.argmax(-1) == final.argmax(-1)).double().mean()))
    assert np.allclose(result.lens.ce, ce, rtol=1e-3)
    assert np.allclose(result.lens.kl_to_final, kl, rtol=1e-3, atol=1e-4)
    assert np.allclose(result.lens.top1_agree, agree, atol=2 / len(gold))
    assert result.lens.top1_agree[-1] == 1.0


def test_last_readout_equals_model_logits(default_model, captured):
    windows, post, _, logits = captured
    readout = lens.readout(default_model, post[-1].to(default_model.device)).cpu()
    assert torch.allclose(readout, logits, atol=2e-3, rtol=1e-4)
    assert float((readout.argmax(-1) == logits.argmax(-1)).double().mean()) == 1.0


def test_frac_near_zero_matches_down_proj_input(result, captured, default_model):
    _, _, acts, _ = captured
    a = torch.stack(acts)[:, :, 1:].reshape(default_model.n_layers, -1, default_model.d_mlp).abs()
    for eps in (1e-3, 1e-2, 1e-1):
        at = result.sparsity.at_eps(eps)
        assert np.allclose(at["frac_near_zero"], (a <= eps).double().mean((1, 2)).numpy(), rtol=1e-3)
        assert np.array_equal(at["dead_neurons"], (a.amax(1) <= eps).sum(1).numpy())
    assert np.allclose(result.sparsity.at_p(0.01),
                       (a <= 0.01 * a.amax(-1, keepdim=True)).double().mean((1, 2)).numpy(), rtol=1e-3)


def test_report_fields_on_default(result):
    report = build_report(result, eps=0.01)
    assert len(report["sparsity"]["frac_near_zero"]) == 30 and len(report["sparsity"]["dead_neurons"]) == 30
    assert len(report["logit_lens"]["median_rank_final_top1"]) == 30
    assert report["logit_lens"]["median_rank_final_top1"][-1] == 0
    ee = report["early_exit"]
    assert 0 < ee["oracle_mean_fraction"] <= 1 and 0 < ee["per_window_tolerance_exit_mean_fraction"] <= 1
    for curve in ee["curves"].values():
        assert curve["fraction_blocks"][-1] <= 1 and len(curve["agreement"]) == len(curve["thresholds"])
    assert ee["note"] == early_exit.OPTIMISM_NOTE


@pytest.mark.parametrize("page, charts", [("sparsity.py", 4), ("logit_lens.py", 5)])
def test_page_renders_on_default_model(page, charts, default_model, isolated_cache):
    at = open_app(page.removesuffix(".py"), seq_len=64, max_windows=2)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == charts
    metrics = {m.label: m.value for m in at.metric}
    if page == "sparsity.py":
        assert [float(x) for x in at.select_slider[0].options] == list(sparsity.EPS_GRID)
        assert "SiLU" in " ".join(c.value for c in at.caption)
        assert metrics["Dead neurons at eps 0.01"].endswith(f"of {30 * 1536}")
    else:
        assert early_exit.OPTIMISM_NOTE in [w.value for w in at.warning]
        assert "First block with top-1 agreement > 50%" in metrics
        assert "Mean fraction of blocks" in metrics
        assert len(at.dataframe) == 1
