"""Pruning curves, the exact iterative greedy and the dynamic-depth oracle on the tiny
random Llama, against independent plain-transformers computations (layers deleted or
output projections zeroed: tests/reference.py)."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from tiny import TEXT
from analysis.data.corpus import Corpus, make_windows, split_windows
from analysis.data.evaluation import EvalSpec, resolve
from analysis.search.curves import methods_for, point_plan
from analysis.search.greedy import iterative_greedy
from analysis.plans.check import parse_plan
from analysis.ablate.sweep import exact_sweep
from analysis.reporting.report import build_report

SEQ, MAX_WINDOWS = 32, 10


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return reference.plain_model(tiny_dir)


@pytest.fixture(scope="module")
def windows(tiny):
    return make_windows(tiny.tokenizer, TEXT, SEQ, max_windows=MAX_WINDOWS)


@pytest.fixture(scope="module")
def curves(tiny, tmp_path_factory):
    from analysis.search.curves_run import pruning_curves
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERLAB_CACHE_DIR", str(tmp_path_factory.mktemp("curves-cache")))
        split = resolve(EvalSpec(), Corpus("tiny-text", TEXT), MAX_WINDOWS)
        yield pruning_curves(tiny, split, SEQ, MAX_WINDOWS, seeds=5)


@torch.no_grad()
def window_nll(hf, windows) -> np.ndarray:
    logits = hf(windows).logits.double()
    nll = -F.log_softmax(logits[:, :-1], -1).gather(-1, windows[:, 1:, None]).squeeze(-1)
    return nll.mean(1).numpy()


@pytest.mark.parametrize("kind", ["blocks", "attn", "mlp"])
def test_iterative_greedy_equals_naive_re_measurement(tiny, hf, windows, kind):
    calibration = split_windows(windows)[0]
    result = iterative_greedy(tiny, calibration, kind, batch_windows=3)
    steps = tiny.n_layers - 1 if kind == "blocks" else tiny.n_layers
    order, ppls = reference.naive_greedy(hf, calibration, kind, steps)
    assert result.order == order
    assert result.perplexities() == pytest.approx(ppls, rel=1e-4)
    assert result.batches_naive == sum(tiny.n_layers - s for s in range(steps)) * 3  # 8 windows in batches of 3
    # seeded with the one-sweep single-removal costs, and with other batches: the same order
    sweep = exact_sweep(tiny, calibration)
    key = {"blocks": "block_ppl", "attn": "attn_ppl", "mlp": "mlp_ppl"}[kind]
    initial = [math.log(p) * calibration.shape[0] * (calibration.shape[1] - 1) for p in sweep[key]]
    assert iterative_greedy(tiny, calibration, kind, 2, initial=initial, batch_windows=1).order == order[:2]


def test_curves_choose_on_calibration_and_score_on_evaluation(tiny, hf, windows, curves):
    calibration, evaluation = split_windows(windows)
    assert curves.split["n_calibration_windows"] == 8 and curves.split["n_evaluation_windows"] == 2
    assert curves.full_ppl["evaluation"] == pytest.approx(reference.perplexity(hf, evaluation), rel=1e-5)
    assert curves.full_ppl["calibration"] == pytest.approx(reference.perplexity(hf, calibration), rel=1e-5)
    for kind in ("blocks", "attn", "mlp"):
        for method in methods_for(kind):
            curve = curves.curve(kind, method)
            assert curve.k == [1, 2, 3]
            for k, removed, ev, cal in zip(curve.k, curve.removed, curve.eval_ppl, curve.calib_ppl or [None] * 3):
                assert len(removed) == k
                plain = reference.modified(hf, kind, removed)
                assert ev == pytest.approx(reference.perplexity(plain, evaluation), rel=1e-4)
                if method != "random":
                    assert cal == pytest.approx(reference.perplexity(plain, calibration), rel=1e-4), (kind, method, k)
    # Block Influence from plain residuals of the calibration windows only picks the first block
    h = reference.residuals(hf, calibration)[:, :, 1:].reshape(tiny.n_layers + 1, -1, tiny.d_model)
    bi = [1 - float(F.cosine_similarity(h[l], h[l + 1], dim=-1).mean()) for l in range(tiny.n_layers)]
    assert curves.curve("blocks", "lowest_block_influence").removed[0] == [int(np.argmin(bi))]
    assert curves.curve("blocks", "reverse_order").removed == [[2], [1, 2], [0, 1, 2]]
    assert curves.curve("blocks", "iterative_greedy").removed[-1] == sorted(curves.greedy["blocks"]["order"][:3])
    assert all(0 < f < 1 for f in curves.curve("blocks", "reverse_order").param_fraction)


def test_random_baseline_is_a_real_seed_inside_its_band(curves):
    for kind in ("blocks", "attn", "mlp"):
        curve = curves.curve(kind, "random")
        assert curve.calib_ppl is None
        for low, mid, high in zip(curve.band_low, curve.eval_ppl, curve.band_high):
            assert low <= mid <= high
    assert curves.seeds == 5


def test_dynamic_depth_values_and_oracle(tiny, hf, windows, curves):
    evaluation = split_windows(windows)[1]
    inputs = curves.depth_inputs
    L = tiny.n_layers
    # early exit after block d: plain residual h_{d+1} -> final norm -> lm_head
    h = reference.residuals(hf, evaluation)
    with torch.no_grad():
        for d in range(L):
            logits = hf.lm_head(hf.model.norm(h[d + 1])).double()
            nll = -F.log_softmax(logits[:, :-1], -1).gather(-1, evaluation[:, 1:, None]).squeeze(-1)
            assert np.allclose(np.asarray(inputs["exit_values"])[:, d], nll.mean(1).numpy(), rtol=1e-4, atol=1e-5)
    values = np.asarray(inputs["skip_values"])
    for i, skipped in enumerate(inputs["skip_sets"]):
        model = reference.without_layers(hf, set(skipped)) if skipped else hf
        assert np.allclose(values[:, i], window_nll(model, evaluation), rtol=1e-4, atol=1e-5), skipped
    greedy = curves.greedy["blocks"]["order"]
    assert [sorted(greedy[:k]) for k in range(L)] == inputs["skip_sets"][:L]
    # the oracle against every choice of configuration per window
    full = np.asarray(inputs["full"])
    for family, weights, table in (
            (curves.dynamic_depth.skipping, [L - len(s) for s in inputs["skip_sets"]], values),
            (curves.dynamic_depth.early_exit, list(range(1, L + 1)), np.asarray(inputs["exit_values"]))):
        best = min(sum(weights[c] for c in choice)
                   for choice in itertools.product(range(len(weights)), repeat=len(full))
                   if sum(table[g, c] for g, c in enumerate(choice)) <= full.sum() + 1e-7 * len(full))
        assert family.mean_fraction == pytest.approx(best / (len(full) * L))
        assert family.mean_nll <= full.mean() + 1e-7


def test_point_plan_and_report_sections(tiny, curves, analysis_for_report):
    plan = point_plan(tiny, curves, "blocks", "iterative_greedy", 2)
    check = parse_plan(plan.to_json(), tiny)
    assert check.errors == []
    ev = plan.evaluation
    curve = curves.curve("blocks", "iterative_greedy")
    assert ev["windows"] == "evaluation" and ev["eval"] == "holdout" and ev["n_windows"] == 2
    assert ev["perplexity_pruned"] == curve.eval_ppl[1] and ev["calibration"]["perplexity_pruned"] == curve.calib_ppl[1]
    assert plan.remove["blocks"] == curve.removed[1] and plan.method["parameters"]["kind"] == "blocks"
    report = build_report(analysis_for_report, split=curves.split, curves=curves)
    assert report["evaluation"]["eval"] == "holdout"
    assert report["curves"]["methods"]["attn"]["iterative_greedy"]["eval_ppl"] == \
        curves.curve("attn", "iterative_greedy").eval_ppl
    assert report["dynamic_depth"]["skipping"]["mean_fraction"] == curves.dynamic_depth.skipping.mean_fraction
    assert report["dynamic_depth"]["paper_skip_fraction"] == 0.233
    from analysis.reporting.html import html_report
    from analysis.reporting.report import open_report
    assert open_report(report).analysis.perplexity == analysis_for_report.perplexity  # still opens in the app
    page = html_report(report)
    assert "Pruning curves" in page and "Per-sequence dynamic-depth oracle" in page
    assert f"<td>{curves.dynamic_depth.skipping.mean_fraction:.6g}</td>" in page


@pytest.fixture(scope="module")
def analysis_for_report(tiny):
    from analysis.measure.pipeline import analyse
    return analyse(tiny, Corpus("tiny-text", TEXT), SEQ, max_windows=4, with_lens=False, use_cache=False)


def test_progress_weights_count_batches_not_only_windows(tiny):
    """A forward costs a fixed amount per batch plus its tokens: 1 evaluation window is not
    4x cheaper than 4 calibration windows in one batch (the time left was too short)."""
    from analysis.search.curves_run import RUN_OVERHEAD_TOKENS as c0, run_cost
    assert run_cost(tiny, 1, 16, batch_tokens=2048) == c0 + 16
    assert run_cost(tiny, 4, 16, batch_tokens=2048) == c0 + 64
    assert run_cost(tiny, 200, 16, batch_tokens=2048) == 2 * c0 + 3200  # 128 windows a batch


def test_covering_keys_find_runs_of_more_kinds_or_a_larger_k(tiny):
    from analysis.search.curves import KINDS
    from analysis.search.curves_run import covering_keys, curves_key
    split = resolve(EvalSpec(), Corpus("t", TEXT), 10)
    L = tiny.n_layers

    def key(kinds, k=None):
        return curves_key(tiny, split, 16, 10, 5, 0.0, kinds, k)

    keys = covering_keys(tiny, split, 16, 10, 5, 0.0, ["mlp"], 1)
    assert keys[0] == key(["mlp"], 1)  # the run itself first
    assert key(["mlp", "blocks"], 2) == key(["blocks", "mlp"], 2) and key(["blocks", "mlp"], 2) in keys  # a CLI run
    assert key(KINDS) in keys and key(KINDS, L - 1) == key(KINDS)
    assert key(["blocks"], 1) not in keys and key(["attn", "blocks"]) not in keys
    assert covering_keys(tiny, split, 16, 10, 5, 0.0, KINDS) == [key(KINDS)]


def test_progress_says_the_time_left_once(tiny, isolated_cache):
    """Every message of a run (the removal sweep's too) carries one time left: the whole
    run's, not also the sweep's own."""
    from analysis.search.curves_run import pruning_curves
    got = []
    split = resolve(EvalSpec(), Corpus("tiny-text", TEXT), MAX_WINDOWS)
    pruning_curves(tiny, split, SEQ, MAX_WINDOWS, kinds=["blocks"], k_max=1, progress=lambda f, m: got.append((f, m)))
    sweep = [m for f, m in got if m.startswith("Removal sweep")]
    assert sweep and all(m.count(" left") == 1 for f, m in got if f > 0), [m for f, m in got if m.count(" left") != 1]
    fractions = [f for f, _ in got]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
