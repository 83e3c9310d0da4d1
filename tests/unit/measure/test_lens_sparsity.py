"""Logit lens, early exit and activation sparsity on the tiny model, against plain transformers.

The reference is an independent plain-transformers copy: forward hooks on the decoder
layers give resid_post, a pre-hook on mlp.down_proj gives the MLP hidden activation, and
the logit lens is lm_head(model.norm(h_l)).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from tiny import TEXT
from analysis.measure import early_exit, lens, sparsity
from analysis.measure.collect import run_pass
from analysis.data.corpus import Corpus, make_windows
from analysis.reporting.figures import lens as lens_figures
from analysis.reporting.figures import sparsity as sparsity_figures
from analysis.measure.pipeline import analyse
from analysis.reporting.report import build_report

SEQ = 32


@pytest.fixture(scope="module")
def windows(tiny):
    return make_windows(tiny.tokenizer, TEXT, SEQ)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return reference.plain_model(tiny_dir)


@pytest.fixture(scope="module")
def ref_lens(hf, windows):
    """Per-token logit-lens signals [n, L] over every predicting position, computed densely."""
    h = reference.residuals(hf, windows)  # [L+1, W, T, d]
    with torch.no_grad():
        final = hf(windows).logits[:, :-1].reshape(-1, hf.config.vocab_size).double()
        logp_f = F.log_softmax(final, -1)
        top1 = final.argmax(-1)
        gold = windows[:, 1:].reshape(-1)
        out = {k: [] for k in ("ce", "kl", "entropy", "agree", "rank", "maxprob", "gap", "cos_next")}
        for l in range(1, h.shape[0]):
            logits = hf.lm_head(hf.model.norm(h[l][:, :-1])).reshape(-1, final.shape[-1]).double()
            logp = F.log_softmax(logits, -1)
            p = logp.exp()
            top2 = p.topk(2, -1).values
            out["ce"].append(-logp[torch.arange(len(gold)), gold])
            out["kl"].append((logp_f.exp() * (logp_f - logp)).sum(-1))
            out["entropy"].append(-(p * logp).sum(-1))
            out["agree"].append((logits.argmax(-1) == top1).double())
            out["rank"].append((logits > logits[torch.arange(len(top1)), top1][:, None]).sum(-1).double())
            out["maxprob"].append(top2[:, 0])
            out["gap"].append(top2[:, 0] - top2[:, 1])
            prev, cur = h[l - 1][:, :-1].reshape(len(gold), -1), h[l][:, :-1].reshape(len(gold), -1)
            out["cos_next"].append(F.cosine_similarity(prev, cur, dim=-1).double())
    return {k: torch.stack(v, 1).numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def mlp_acts(hf, windows):
    """MLP hidden activations at the down_proj input, [L, W, T, d_mlp]."""
    got = []
    handles = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: got.append(a[0].clone()))
               for layer in hf.model.layers]
    with torch.no_grad():
        hf(windows)
    for handle in handles:
        handle.remove()
    return torch.stack(got)


@pytest.fixture(scope="module")
def chunked(tiny, windows, monkeypatch_module):
    """One pass with a small lens chunk (7 rows) over several batches, recording every readout's size."""
    sizes = []
    original = lens.readout

    def recording(model, resid, **kwargs):
        sizes.append(resid.reshape(-1, resid.shape[-1]).shape[0])
        return original(model, resid, **kwargs)

    monkeypatch_module.setattr(lens, "readout", recording)
    red = lens.LensReducer(tiny.n_layers, tiny.bridge.cfg.d_vocab, windows.shape[0], chunk_tokens=7)
    spa = sparsity.SparsityReducer(tiny.n_layers, tiny.d_mlp)
    run_pass(tiny, windows, [red, spa], batch_tokens=100)
    monkeypatch_module.undo()
    return red.result(), spa.result(), sizes


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_lens_curves_match_plain_transformers(chunked, ref_lens):
    res, _, _ = chunked
    assert np.allclose(res.ce, ref_lens["ce"].mean(0), rtol=1e-4)
    assert np.allclose(res.kl_to_final, ref_lens["kl"].mean(0), rtol=1e-3, atol=1e-5)
    assert np.allclose(res.entropy, ref_lens["entropy"].mean(0), rtol=1e-4)
    assert np.allclose(res.top1_agree, ref_lens["agree"].mean(0), atol=1e-9)
    assert res.top1_agree[-1] == 1.0 and res.kl_to_final[-1] == pytest.approx(0, abs=1e-5)
    lower_median = np.sort(ref_lens["rank"], axis=0)[(len(ref_lens["rank"]) - 1) // 2]
    assert np.array_equal(res.median_rank_final_top1, lower_median)


def test_readout_is_chunked_and_never_grows_with_corpus(chunked, windows):
    _, _, sizes = chunked
    n_rows = windows.shape[0] * (windows.shape[1] - 1)
    assert n_rows > 40 * 7  # the corpus is many times the chunk
    assert max(sizes) <= 7
    assert sum(sizes) == n_rows * 4  # every predicting row read out exactly once at each of the 4 blocks


def test_last_readout_equals_model_logits(tiny, hf, windows):
    h = reference.residuals(hf, windows[:2])
    with torch.no_grad():
        expected = hf(windows[:2]).logits
    assert torch.allclose(lens.readout(tiny, h[-1]), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(lens.readout(tiny, h[-2]), expected, atol=1e-2)


def test_early_exit_against_reference(chunked, ref_lens):
    ee = chunked[0].early_exit
    L = ref_lens["agree"].shape[1]
    agree = ref_lens["agree"].astype(bool)
    oracle = np.where(agree.any(1), agree.argmax(1), L - 1) + 1
    assert np.array_equal(ee.oracle_exit_hist, np.bincount(oracle, minlength=L + 1)[1:])
    assert ee.oracle_mean_fraction == pytest.approx(oracle.mean() / L, rel=1e-9)
    curve = ee.curves["max_prob"]
    for i in (3, 12, 25):
        t = curve.thresholds[i]
        passes = ref_lens["maxprob"] >= np.float32(t)
        passes[:, -1] = True
        exit_at = passes.argmax(1)
        rows = np.arange(len(exit_at))
        assert curve.fraction_blocks[i] == pytest.approx((exit_at + 1).mean() / L, rel=1e-6)
        assert curve.agreement[i] == pytest.approx(agree[rows, exit_at].mean(), rel=1e-6)
        dce = ref_lens["ce"][rows, exit_at].mean() - ref_lens["ce"][:, -1].mean()
        assert curve.delta_ce[i] == pytest.approx(dce, rel=1e-3, abs=1e-5)
        assert np.array_equal(curve.exit_hist[i], np.bincount(exit_at, minlength=L))
    cos = ee.curves["cosine"]
    t = cos.thresholds[20]
    passes = ref_lens["cos_next"] >= np.float32(t)
    passes[:, -1] = True
    assert cos.fraction_blocks[20] == pytest.approx((passes.argmax(1) + 1).mean() / L, rel=1e-6)


def test_per_window_tolerance_exit(chunked, ref_lens, windows):
    res = chunked[0]
    per_window = ref_lens["ce"].reshape(windows.shape[0], -1, ref_lens["ce"].shape[1]).mean(1)
    assert np.allclose(res.seq_mean_ce, per_window, rtol=1e-5)
    ce = np.array([[3.0, 2.2, 2.0], [2.0, 2.5, 2.0], [5.0, 4.0, 1.0]])
    assert early_exit.per_window_tolerance_exit(ce, 10).tolist() == [3, 1, 3]  # exp(0.2) = 1.22 > 1.10 for the first
    assert early_exit.per_window_tolerance_exit(ce, 25).tolist() == [2, 1, 3]
    assert early_exit.per_window_tolerance_exit(ce, 300).tolist() == [1, 1, 3]


def test_operating_point_picks_cheapest_reaching_target():
    curve = early_exit.ExitCurve(signal="maxprob", direction="ge", thresholds=[0.1, 0.5, 0.9],
                                 fraction_blocks=[0.3, 0.6, 0.9], agreement=[0.7, 0.96, 0.99],
                                 delta_ce=[0.5, 0.1, 0.01], exit_hist=[])
    assert early_exit.operating_point(curve, 0.95)["threshold"] == 0.5
    assert early_exit.operating_point(curve, 0.5)["fraction_blocks"] == 0.3
    assert early_exit.operating_point(curve, 0.999) is None


def test_sparsity_matches_down_proj_input(chunked, mlp_acts, tiny):
    _, res, _ = chunked
    a = mlp_acts[:, :, 1:].reshape(tiny.n_layers, -1, tiny.d_mlp).abs()  # every position except the BOS
    assert res.n_positions == a.shape[1]
    for eps in (1e-3, 1e-2, 1e-1):
        at = res.at_eps(eps)
        assert np.allclose(at["frac_near_zero"], (a <= eps).double().mean((1, 2)).numpy(), rtol=1e-3, atol=1e-5)
        assert np.array_equal(at["dead_neurons"], (a.amax(1) <= eps).sum(1).numpy())
        fire = (a > eps).double().mean(1).numpy()
        assert np.abs(np.asarray(at["firing_frequency"]) - fire).max() < 5e-3
    rel = (a <= 0.05 * a.amax(-1, keepdim=True)).double().mean((1, 2)).numpy()
    assert np.allclose(res.at_p(0.05), rel, rtol=1e-3, atol=1e-5)
    assert np.allclose(res.frac_exact_zero, (a == 0).double().mean((1, 2)).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="not counted"):
        res.at_eps(0.0123)


def test_token_density_matches_reference(tiny, windows, mlp_acts):
    density = sparsity.token_density(tiny, windows[1], 0.01)
    expected = (mlp_acts[:, 1].abs() > 0.01).double().mean(-1).T.numpy()  # [T, L]
    assert density.shape == (windows.shape[1], tiny.n_layers)
    assert np.abs(density - expected).max() < 1.5 / tiny.d_mlp


def test_window_grid_matches_reference(tiny, hf, windows):
    h = reference.residuals(hf, windows[2:3])[:, 0]
    grid = lens.window_grid(tiny, windows[2], top_k=5)
    with torch.no_grad():
        final = F.softmax(hf(windows[2:3]).logits[0], -1)
        for l in range(tiny.n_layers):
            p = F.softmax(hf.lm_head(hf.model.norm(h[l + 1])), -1)
            assert np.allclose(grid["top_probs"][:, l], p.topk(5, -1).values.numpy(), atol=1e-5)
            assert np.allclose(grid["p_final_top1"][:, l], p.gather(-1, final.argmax(-1)[:, None])[:, 0].numpy(),
                               atol=1e-5)
    assert np.array_equal(grid["final_top1"], final.argmax(-1).numpy())
    assert np.allclose(grid["kl"][:, -1], 0, atol=1e-5)
    mids = []
    handles = [layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: mids.append(a[0][0].clone()))
               for layer in hf.model.layers]
    with torch.no_grad():
        hf(windows[2:3])
    for handle in handles:
        handle.remove()
    mid = lens.window_grid(tiny, windows[2], top_k=3, site="resid_mid")
    with torch.no_grad():
        p = F.softmax(hf.lm_head(hf.model.norm(mids[1])), -1)
    assert np.allclose(mid["top_probs"][:, 1], p.topk(3, -1).values.numpy(), atol=1e-5)


def test_report_carries_the_fields(tiny, isolated_cache):
    result = analyse(tiny, Corpus("t", TEXT), SEQ, use_cache=False)
    report = build_report(result, eps=0.01)
    sp = report["sparsity"]
    assert set(sp) >= {"eps", "frac_near_zero", "frac_relative", "frac_exact_zero", "dead_neurons"}
    assert sp["frac_near_zero"] == pytest.approx(list(result.sparsity.at_eps(0.01)["frac_near_zero"]))
    for key in ("ce", "kl_to_final", "entropy", "top1_agree", "median_rank_final_top1"):
        assert len(report["logit_lens"][key]) == tiny.n_layers
        assert report["logit_lens"][key] == pytest.approx(getattr(result.lens, key))
    ee = report["early_exit"]
    assert ee["oracle_mean_fraction"] == result.lens.early_exit.oracle_mean_fraction
    assert set(ee["curves"]) == set(early_exit.RULES)
    depths = early_exit.per_window_tolerance_exit(result.lens.seq_mean_ce, 10.0)
    assert ee["per_window_tolerance_exit_mean_fraction"] == pytest.approx(depths.mean() / tiny.n_layers)
    assert ee["note"] == early_exit.OPTIMISM_NOTE


def test_figures_escape_tokens_and_mark_points():
    tokens = np.array([[["<b>", "a"], ["x\ny", "**"]], [["&", "b"], ["c", "d"]]], dtype=object)  # [T=2, L=2, k=2]
    probs = np.full((2, 2, 2), 0.5)
    fig = lens_figures.lens_grid(tokens, probs, np.zeros((2, 2)), ["<i>", "q"], ["q", "<s>"], np.arange(2), "p")
    heat = fig.data[0]
    assert heat.text[0][0] == "&lt;b&gt;" and heat.text[1][0] == "x\\ny"
    assert "&lt;b&gt;  0.500" in heat.customdata[0][0]
    assert list(fig.layout.xaxis2.ticktext) == ["q", "&lt;s&gt;"] and fig.layout.xaxis.ticktext[0] == "&lt;i&gt;"
    curve = early_exit.ExitCurve(signal="maxprob", direction="ge", thresholds=[0.1, 0.9], fraction_blocks=[0.2, 0.8],
                                 agreement=[0.5, 0.99], delta_ce=[1.0, 0.1], exit_hist=[])
    point = early_exit.operating_point(curve, 0.95)
    sweep = lens_figures.exit_sweep({"max_prob": curve}, {"max_prob": point}, 0.95)
    stars = [t for t in sweep.data if t.marker.symbol == "star"]
    assert [s.x[0] for s in stars] == [0.8, 0.8] and stars[1].y[0] == 0.1
    dens = sparsity_figures.token_density(np.zeros((2, 3)), ["<b>", "ok"], np.array([1, 2]), 0.01)
    assert dens.layout.yaxis.ticktext[0] == "1: &lt;b&gt;"
    hist = lens_figures.per_window_exit_histogram(np.array([1, 3, 3]), 3, 10)
    assert list(hist.data[0].y) == [1, 0, 2]


def test_lens_memory_is_bounded_by_the_chunk_not_the_corpus(tiny, monkeypatch):
    """Every vocabulary-wide tensor the lens makes is one layer's readout of at most
    `chunk_tokens` rows: 4x the corpus means 4x the chunks, never a bigger tensor."""
    rows = []
    real = lens.readout

    def spy(model, h, **kwargs):
        rows.append(tuple(h.shape))
        return real(model, h, **kwargs)

    monkeypatch.setattr(lens, "readout", spy)
    calls = {}
    for n in (2, 8):
        windows = make_windows(tiny.tokenizer, TEXT * 4, 32, tiny.n_ctx, n)
        assert windows.shape[0] == n
        rows.clear()
        run_pass(tiny, windows, [lens.LensReducer(tiny.n_layers, tiny.bridge.cfg.d_vocab, n, chunk_tokens=16)])
        assert max(r[0] for r in rows) <= 16 and all(len(r) == 2 for r in rows)
        calls[n] = len(rows)
    predicted = {n: n * 32 for n in calls}  # 32 predicted tokens per window of 33
    assert calls == {n: tiny.n_layers * -(-predicted[n] // 16) for n in calls}


def test_default_threshold_is_the_operating_point_at_the_default_agreement():
    """Issue 29 (9): the page opens at the cheapest threshold reaching DEFAULT_AGREEMENT
    (0.9), not the middle of the grid; with none reaching it, at the highest agreement."""
    thresholds = [0.5, 0.9, 0.99, 0.999, 1.0]
    curve = early_exit.ExitCurve(signal="maxprob", direction="ge", thresholds=thresholds,
                                 fraction_blocks=[0.07, 0.4, 0.6, 0.8, 0.99], agreement=[0.08, 0.24, 0.85, 0.93, 1.0],
                                 delta_ce=[14.4, 15.4, 2.0, 0.5, 0.0], exit_hist=[])
    assert early_exit.DEFAULT_AGREEMENT == 0.9
    assert early_exit.default_threshold(curve) == 0.999
    cheapest = min((f, t) for t, f, a in zip(thresholds, curve.fraction_blocks, curve.agreement) if a >= 0.9)[1]
    assert early_exit.default_threshold(curve) == cheapest
    low = early_exit.ExitCurve(signal="maxprob", direction="ge", thresholds=[0.1, 0.5], fraction_blocks=[0.2, 0.5],
                               agreement=[0.3, 0.6], delta_ce=[1.0, 0.5], exit_hist=[])
    assert early_exit.default_threshold(low) == 0.5


def test_threshold_grids_are_dense_near_certainty():
    """A readout is often confidently wrong at early blocks: agreement only rises within a
    few thousandths of certainty, so each rule has thresholds there (down to 1e-6)."""
    for rule, (_, direction, thresholds) in early_exit.RULES.items():
        t = np.asarray(thresholds)
        assert np.all(np.diff(t) > 0)
        edge = np.abs(t - (0.0 if direction == "le" else 1.0))
        assert ((edge > 0) & (edge <= 1e-3)).sum() >= 8 and edge[edge > 0].min() < 1.1e-6, rule
