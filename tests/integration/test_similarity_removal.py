"""The default model (30 layers): Block Influence and the measured removal perplexities
against an independent plain-transformers computation, and both pages with every element."""
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from apptest import open_app

import reference
from analysis.core import jobs
from analysis.data.corpus import Corpus, make_windows
from analysis.measure.pipeline import analyse
from analysis.ablate.sweep import removal_cost
from analysis.measure.similarity import block_influence

ROOT = Path(__file__).resolve().parents[2]
TEXT = reference.MIXED_TEXT * 2
SEQ, N_WINDOWS = 32, 2
CHECKED_LAYERS = (0, 1, 14, 28, 29)  # the whole sweep runs; these are re-derived independently


@pytest.fixture(scope="module")
def windows(default_model):
    w = make_windows(default_model.tokenizer, TEXT, SEQ, max_windows=N_WINDOWS)
    assert w.shape == (N_WINDOWS, SEQ + 1)
    return w


@pytest.fixture(scope="module")
def removal(default_model):
    return removal_cost(default_model, Corpus("fixed", TEXT), SEQ, max_windows=N_WINDOWS, use_cache=False)


def test_block_influence_matches_plain_transformers(default_model, plain_default, windows):
    result = analyse(default_model, Corpus("fixed", TEXT), SEQ, max_windows=N_WINDOWS, with_lens=False,
                     use_cache=False)
    h = reference.residuals(plain_default, windows)[:, :, 1:]
    L = default_model.n_layers
    expected = np.array([1 - float(F.cosine_similarity(h[l], h[l + 1], dim=-1).mean()) for l in range(L)])
    ours = block_influence(result.similarity.cos_all)
    assert ours.shape == (L,)
    assert np.allclose(ours, expected, rtol=1e-3, atol=1e-6)
    assert ours.std() > 1e-3  # blocks really differ


def test_all_90_removals_measured_and_checked_against_transformers(default_model, plain_default, windows, removal):
    L = default_model.n_layers
    assert len(removal.block_ppl) == len(removal.attn_ppl) == len(removal.mlp_ppl) == L
    assert removal.full_ppl == pytest.approx(reference.perplexity(plain_default, windows), rel=1e-4)
    for l in CHECKED_LAYERS:
        block = reference.perplexity(reference.without_layers(plain_default, {l}), windows)
        attn = reference.perplexity(reference.with_zeroed(plain_default, attn={l}), windows)
        mlp = reference.perplexity(reference.with_zeroed(plain_default, mlp={l}), windows)
        assert removal.block_ppl[l] == pytest.approx(block, rel=1e-3), f"block {l}"
        assert removal.attn_ppl[l] == pytest.approx(attn, rel=1e-3), f"attn {l}"
        assert removal.mlp_ppl[l] == pytest.approx(mlp, rel=1e-3), f"mlp {l}"
    every = removal.block_ppl + removal.attn_ppl + removal.mlp_ppl
    assert len({round(p, 4) for p in every}) > 80  # 90 distinct measurements, not one repeated number
    rho = removal.estimate["spearman"]
    assert set(rho) == {"block_ppl", "attn_ppl", "mlp_ppl", "all"}
    assert all(-1 <= v <= 1 for v in rho.values())


def _app(page: str):
    at = open_app(page.removesuffix(".py"), seq_len=SEQ, max_windows=N_WINDOWS, timeout=900)
    assert not at.error, [e.value for e in at.error]
    return at


def _chart_count(at) -> int:
    return len(at.get("plotly_chart"))


def test_pages_on_default_model_show_every_element(default_model, isolated_cache):
    at = _app("similarity.py")
    assert {r.label for r in at.radio} == {"Measure", "Positions", "Bar scale"}
    assert at.slider(key="sim_block_n").max == 29
    assert _chart_count(at) == 4  # heatmap, best-block curve, Block Influence, layer map
    metrics = {m.label: m.value for m in at.metric}
    assert "Best start for n = 1" in metrics and "Angular distance d(n)" in metrics
    at.radio(key="sim_measure").set_value("cka").run()
    at.radio(key="sim_positions").set_value("last").run()
    at.slider(key="sim_block_n").set_value(8).run()
    assert not at.exception and not at.error
    assert "Best start for n = 8" in {m.label for m in at.metric}
    button = at.button(key="sim_measure_removal")
    assert button.label == "Measure removal cost (exact sweep, takes minutes)"
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    sweeps = [j for j in jobs.REGISTRY.active() if "Removal sweep" in j.label]  # a background job
    assert len(sweeps) == 1
    assert sweeps[0].wait(1800) and sweeps[0].state == jobs.DONE, sweeps[0].error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _chart_count(at) == 6  # + Block Influence vs cost scatter, removal costs
    labels = {m.label for m in at.metric}
    assert "Spearman(Block Influence, perplexity with the block removed)" in labels

    sub = _app("sublayers.py")  # a new session: the sweep comes from the disk cache, no button
    assert not [b for b in sub.button if b.key == "sub_measure_removal"]
    assert _chart_count(sub) == 4  # scores + ratios, removal costs, estimate vs exact, predictor scatter
    labels = {m.label for m in sub.metric}
    assert {"Spearman, blocks", "Spearman, attention", "Spearman, MLP", "Spearman, all 90"} <= labels
    ranking = sub.dataframe[1].value
    assert len(ranking) == 60 and "rank by measured cost" in ranking.columns
    assert any("Sequential blocks" in c.value for c in sub.caption)
