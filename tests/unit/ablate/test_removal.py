"""Removal sweep, attribution estimate, similarity helpers and the report's similarity /
sublayers / removal fields on the tiny random Llama, against plain-transformers numbers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

import reference
from tiny import TEXT
from analysis.data.corpus import Corpus, make_windows
from analysis.reporting.figures.similarity import layer_heatmap
from analysis.ablate.sweep import RemovalCost, attribution_estimate, exact_sweep, predictors, rank_correlation, removal_cost, with_eta
from analysis.measure.similarity import layer_groups, layer_map
from analysis.measure.sublayers import ranking_table

SEQ = 32
N_WINDOWS = 6


@pytest.fixture(scope="module")
def windows(tiny):
    return make_windows(tiny.tokenizer, TEXT, SEQ, max_windows=N_WINDOWS)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return reference.plain_model(tiny_dir)


@pytest.fixture(scope="module")
def sweep(tiny, windows):
    return exact_sweep(tiny, windows, batch_tokens=100)


def test_prefix_reuse_sweep_equals_naive_sweep_exactly(tiny, windows, sweep):
    naive = exact_sweep(tiny, windows, naive=True, batch_tokens=100)
    assert sweep == naive


def test_sweep_matches_plain_transformers(tiny, windows, sweep, hf):
    L = tiny.n_layers
    assert sweep["full_ppl"] == pytest.approx(reference.perplexity(hf, windows), rel=1e-5)
    for l in range(L):
        assert sweep["block_ppl"][l] == pytest.approx(reference.perplexity(reference.without_layers(hf, {l}), windows),
                                                      rel=1e-4), f"block {l}"
        assert sweep["attn_ppl"][l] == pytest.approx(reference.perplexity(reference.with_zeroed(hf, attn={l}), windows),
                                                     rel=1e-4), f"attn {l}"
        assert sweep["mlp_ppl"][l] == pytest.approx(reference.perplexity(reference.with_zeroed(hf, mlp={l}), windows),
                                                    rel=1e-4), f"mlp {l}"
    # removals differ from each other and from the full model: the hooks really act
    assert len({round(p, 6) for p in sweep["block_ppl"] + sweep["attn_ppl"] + sweep["mlp_ppl"]}) == 3 * L
    assert all(abs(p - sweep["full_ppl"]) > 1e-4 for p in sweep["block_ppl"])


def _plain_attribution(hf, windows):
    """-sum(grad * output) of every o_proj / down_proj output, with plain torch autograd."""
    outs = {}
    handles = []
    for i, layer in enumerate(hf.model.layers):
        for kind, module in (("attn", layer.self_attn.o_proj), ("mlp", layer.mlp.down_proj)):
            def hook(m, args, out, key=(kind, i)):
                out.retain_grad()
                outs[key] = out
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            logits = hf(windows).logits.float()
            nll = -F.log_softmax(logits[:, :-1], -1).gather(-1, windows[:, 1:, None]).squeeze(-1)
            nll.sum().backward()
    finally:
        for h in handles:
            h.remove()
    hf.zero_grad(set_to_none=True)
    delta = {k: float(-(o.grad * o).sum()) for k, o in outs.items()}
    return float(nll.detach().double().sum()), nll.numel(), delta


def test_attribution_estimate_matches_plain_autograd(tiny, windows, hf):
    est = attribution_estimate(tiny, windows, batch_tokens=100)
    total, count, delta = _plain_attribution(hf, windows)
    L = tiny.n_layers
    for l in range(L):
        assert est["attn_ppl"][l] == pytest.approx(math.exp((total + delta[("attn", l)]) / count), rel=1e-4)
        assert est["mlp_ppl"][l] == pytest.approx(math.exp((total + delta[("mlp", l)]) / count), rel=1e-4)
        both = delta[("attn", l)] + delta[("mlp", l)]
        assert est["block_ppl"][l] == pytest.approx(math.exp((total + both) / count), rel=1e-4)


def test_removal_cost_reports_eta_and_caches(tiny, isolated_cache, sweep):
    corpus = Corpus("tiny", TEXT)
    seen = []
    result = removal_cost(tiny, corpus, SEQ, max_windows=N_WINDOWS, progress=lambda f, m: seen.append((f, m)))
    assert result.block_ppl == pytest.approx(sweep["block_ppl"], rel=1e-9)
    assert result.full_ppl == pytest.approx(sweep["full_ppl"], rel=1e-9)
    sweep_msgs = [(f, m) for f, m in seen if m.startswith("Removal sweep")]
    assert sweep_msgs and sweep_msgs[-1][0] == pytest.approx(1.0)
    assert all("left" in m and "elapsed" in m for _, m in sweep_msgs)
    rho = result.estimate["spearman"]
    for key in ("block_ppl", "attn_ppl", "mlp_ppl"):
        expected = spearmanr(getattr(result, key), result.estimate[key]).statistic
        assert rho[key] == pytest.approx(expected)
    again = []
    cached = removal_cost(tiny, corpus, SEQ, max_windows=N_WINDOWS, progress=lambda f, m: again.append(m))
    assert again == [] and cached == result  # from disk, no recomputation
    with pytest.raises(ValueError):
        RemovalCost.from_dict(result.to_dict() | {"schema_version": 0})


def test_with_eta_estimates_time_left():
    now = [100.0]
    got = []
    update = with_eta(lambda f, m: got.append(m), clock=lambda: now[0])
    now[0] = 110.0
    update(0.25, "step")
    now[0] = 190.0
    update(0.5, "step")
    # the rate is measured after the first report (0.25 in 80 s), not from the start
    assert got == ["step - 10 s elapsed, estimating time left", "step - 1 min 30 s elapsed, about 2 min 40 s left"]


def test_predictors_and_ranking_table():
    removal = RemovalCost(1, 10.0, [30.0, 11.0, 12.0], [10.5, 20.0, 10.1], [15.0, 10.2, 50.0], {})
    bi, attn, mlp = [0.9, 0.1, 0.2], [0.01, 0.3, 0.02], [0.2, 0.05, 0.1]
    panels = predictors(bi, attn, mlp, removal)
    assert [p["kind"] for p in panels] == ["block", "attn", "mlp"]
    assert panels[0]["rho"] == pytest.approx(1.0)
    assert panels[2]["rho"] == pytest.approx(spearmanr(mlp, removal.mlp_ppl).statistic)
    rows = ranking_table(attn, mlp, removal.attn_ppl, removal.mlp_ppl)
    assert [r["sublayer"] for r in rows] == ["attn 0", "attn 2", "mlp 1", "mlp 2", "mlp 0", "attn 1"]
    cost_order = sorted(rows, key=lambda r: r["ppl removed"])
    assert [r["rank by measured cost"] for r in cost_order] == list(range(1, 7))
    assert cost_order[0]["sublayer"] == "attn 2" and rows[0]["ppl removed"] == 10.5
    assert "ppl removed" not in ranking_table(attn, mlp)[0]
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_layer_map_is_pca_of_unit_mean_representations():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(7, 12)) * np.arange(1, 8)[:, None]  # growing norms
    coords, explained = layer_map(mean)
    unit = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    centred = unit - unit.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    for k in range(2):  # principal axes are defined up to sign
        assert np.allclose(np.abs(coords[:, k]), np.abs(expected[:, k]), atol=1e-10)
    assert np.allclose(explained, (s ** 2 / (s ** 2).sum())[:2])


def test_layer_groups_find_blocks_of_similar_layers():
    c = np.full((7, 7), 0.2)
    c[:3, :3], c[3:5, 3:5], c[5:, 5:] = 0.95, 0.9, 0.97
    np.fill_diagonal(c, 1.0)
    assert layer_groups(c, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert layer_groups(c, 1).tolist() == [0] * 7
    c[0, 6] = c[6, 0] = 0.999  # far-apart layers alike: only the unconstrained clustering joins them
    free = layer_groups(c, 3, contiguous=False)
    assert free[0] == free[6]
    chained = layer_groups(c, 3, contiguous=True)
    assert all(np.diff(chained) >= 0)


def test_heatmap_marks_the_chosen_block():
    fig = layer_heatmap(np.eye(6), "cosine", "t", block=(1, 3))
    outline = fig.layout.shapes[0]
    assert (outline.x0, outline.x1, outline.y0, outline.y1) == (0.5, 4.5, 0.5, 4.5)
    cells = {(s.x0 + 0.5, s.y0 + 0.5) for s in fig.layout.shapes[1:]}
    assert cells == {(4, 1), (1, 4)}  # h_1 against h_4: what removing blocks 1..3 joins
    assert not layer_heatmap(np.eye(6), "cka", "t").layout.shapes
