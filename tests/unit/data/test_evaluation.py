"""The calibration/evaluation split: EvalSpec strings, resolve, window parts, link state
and the plan's evaluation section (version-1 plans without the new fields still load)."""
import json

import pytest
import torch

from analysis.data.corpus import Corpus, CorpusError, load_corpus, split_windows
from analysis.data.evaluation import EvalSpec, part_windows, resolve
from analysis.model.removal import Removal
from analysis.plans.schema import evaluation_section, make_plan
from analysis.plans.check import parse_plan
from ui import links


def test_eval_spec_string_form_round_trips():
    assert str(EvalSpec()) == "holdout" and EvalSpec.parse("holdout") == EvalSpec() == EvalSpec.parse("")
    for text in ("builtin:code", "builtin:all", "ab" * 32):
        assert str(EvalSpec.parse(text)) == text and not EvalSpec.parse(text).held_out
    for bad in ("../etc/passwd", "builtin:Code", "holdout:3", "x" * 64):
        with pytest.raises(CorpusError, match="Unknown evaluation choice"):
            EvalSpec.parse(bad)


def test_parts_are_disjoint_and_cover_the_windows():
    windows = torch.arange(12 * 3).view(12, 3)
    calibration, evaluation = part_windows(windows, "calibration"), part_windows(windows, "evaluation")
    assert evaluation[:, 0].tolist() == [12, 27]  # windows 4 and 9
    assert sorted(calibration[:, 0].tolist() + evaluation[:, 0].tolist()) == windows[:, 0].tolist()
    assert torch.equal(part_windows(windows, "all"), windows)
    assert torch.equal(calibration, split_windows(windows)[0])
    with pytest.raises(ValueError, match="unknown window part"):
        part_windows(windows, "train")


def test_resolve_held_out_too_few_windows_and_overlapping_corpora():
    corpus = load_corpus("builtin:all")
    split = resolve(EvalSpec(), corpus, 12)
    assert split.available and (split.calibration_part, split.eval_part) == ("calibration", "evaluation")
    assert split.eval_corpus is corpus and split.notice is None
    few = resolve(EvalSpec(), corpus, 4)
    assert not few.available and few.calibration_part == "all" and "too few to hold out" in few.notice
    inside = resolve(EvalSpec("builtin:code"), corpus, 12)  # builtin:all contains the code genre
    assert not inside.available and "overlaps" in inside.notice
    other = resolve(EvalSpec("builtin:code"), load_corpus("builtin:narrative"), 12)
    assert other.available and (other.calibration_part, other.eval_part) == ("all", "all")
    info = other.info(12, 7)
    assert info["eval"] == "builtin:code" and info["n_evaluation_windows"] == 7
    assert info["evaluation_corpus_sha256"] == load_corpus("builtin:code").sha256
    pasted = resolve(EvalSpec("ab" * 32), Corpus("t", "abc"), 9, eval_corpus=Corpus("ab" * 32, "something else"))
    assert pasted.available


def test_link_carries_eval_and_show_on():
    state = links.parse_link({"eval": "builtin:code", "show_on": "evaluation", "corpus": "builtin:all"})
    assert state.values == {"eval": "builtin:code", "show_on": "evaluation", "corpus": "builtin:all"}
    assert not state.notices
    bad = links.parse_link({"eval": "/etc/passwd", "show_on": "train"})
    assert bad.values == {} and len(bad.notices) == 2
    assert "Ignored the link's eval" in bad.notices[0]
    query = links.build_query({"eval": "holdout", "rm_blocks": [3], "show_on": "evaluation"})
    assert query == {"eval": "holdout", "rm_blocks": "3", "show_on": "evaluation"}


def test_plan_evaluation_section_round_trips_and_is_checked(tiny):
    evaluation = evaluation_section(corpus_sha256="ab" * 32, seq_len=32, perplexity_full=10.0, perplexity_pruned=12.5,
                                    n_windows=3, windows="evaluation", eval_spec="holdout",
                                    calibration={"corpus_sha256": "ab" * 32, "n_windows": 9, "perplexity_full": 9.0,
                                                 "perplexity_pruned": 10.5})
    plan = make_plan(tiny, Removal.of(blocks=[1]), "iterative_greedy", {"k": 1}, evaluation)
    check = parse_plan(plan.to_json(), tiny)
    assert check.errors == [] and check.plan == plan
    assert check.plan.evaluation["calibration"]["perplexity_pruned"] == 10.5
    data = json.loads(plan.to_json())
    data["evaluation"] |= {"eval": "holdout:7", "windows": "train", "calibration": {"n_windows": 0,
                                                                                     "perplexity_full": "x"}}
    errors = parse_plan(data).errors
    assert any("'evaluation.eval' must be 'holdout' or a corpus id" in e for e in errors)
    assert any("'evaluation.windows' must be one of all, calibration, evaluation" in e for e in errors)
    assert any("'evaluation.calibration.n_windows' must be a positive integer" in e for e in errors)
    assert any("'evaluation.calibration.perplexity_full' must be a number or null" in e for e in errors)
    # a version-1 plan written before the split existed (no eval/windows/calibration) still loads
    old = json.loads(plan.to_json())
    old["evaluation"] = {"corpus_sha256": "ab" * 32, "seq_len": 32, "perplexity_full": 10.0,
                         "perplexity_pruned": 12.5, "n_windows": 3}
    assert parse_plan(old, tiny).errors == []


def test_intervals_over_windows_match_the_textbook_formulas():
    """Issue 29 (4): perplexity, the change vs full (paired by window) and healing's recovery
    get 95% intervals over windows; checked against statistics.stdev by hand and, for the
    recovery's delta method, against a finite-difference gradient with np.cov."""
    import math
    import statistics

    import numpy as np

    from analysis.data.evaluation import evaluation_intervals, mean_interval

    rng = np.random.default_rng(3)
    full = 3.0 + rng.normal(0, 0.3, 12)
    pruned = full + 0.4 + rng.normal(0, 0.1, 12)
    healed = full + 0.15 + rng.normal(0, 0.1, 12)
    half = lambda v: 1.96 * statistics.stdev(v) / math.sqrt(len(v))
    iv = evaluation_intervals(full, pruned, healed)
    m = statistics.fmean(pruned)
    assert iv["pruned"].value == pytest.approx(math.exp(m))
    assert (iv["pruned"].low, iv["pruned"].high) == pytest.approx((math.exp(m - half(pruned)), math.exp(m + half(pruned))))
    d = list(pruned - full)
    assert iv["delta"].value == pytest.approx(math.exp(statistics.fmean(d)) - 1)
    assert (iv["delta"].low, iv["delta"].high) == pytest.approx(
        (math.exp(statistics.fmean(d) - half(d)) - 1, math.exp(statistics.fmean(d) + half(d)) - 1))
    assert iv["delta"].high - iv["delta"].low < (iv["pruned"].high - iv["pruned"].low) / iv["full"].value  # paired

    def recovery(means):
        F, P, H = np.exp(means)
        return (P - H) / (P - F)

    means = np.array([full.mean(), pruned.mean(), healed.mean()])
    grad = np.array([(recovery(means + e) - recovery(means - e)) / 2e-6 for e in np.eye(3) * 1e-6])
    se = math.sqrt(grad @ np.cov(np.stack([full, pruned, healed])) @ grad / len(full))
    r = recovery(means)
    assert iv["recovery"].value == pytest.approx(r)
    assert (iv["recovery"].low, iv["recovery"].high) == pytest.approx((r - 1.96 * se, r + 1.96 * se), rel=1e-4)
    # the progressive estimate's finite-population form: exact once every window is in
    assert mean_interval(full, 12) == (pytest.approx(full.mean()),) * 3
    mean, low, high = mean_interval(full[:4], 12)
    assert high - mean == pytest.approx(half(full[:4]) * math.sqrt(1 - 4 / 12))
    one = evaluation_intervals(full[:1], pruned[:1])["delta"]
    assert math.isinf(one.high) and "one window" in one.text()


def test_recovery_interval_covers_the_truth_about_95_percent_of_the_time():
    import numpy as np

    from analysis.data.evaluation import evaluation_intervals

    rng = np.random.default_rng(0)
    mu = np.array([3.0, 3.5, 3.2])  # full, pruned, healed mean NLL: truth (e^3.5 - e^3.2) / (e^3.5 - e^3)
    F, P, H = np.exp(mu)
    truth = (P - H) / (P - F)
    cov = 0.09 * np.array([[1, 0.9, 0.9], [0.9, 1.2, 1.0], [0.9, 1.0, 1.1]])
    hits = 0
    for _ in range(1000):
        full, pruned, healed = rng.multivariate_normal(mu, cov, size=40).T
        iv = evaluation_intervals(full, pruned, healed)["recovery"]
        hits += iv.low <= truth <= iv.high
    assert 0.92 <= hits / 1000 <= 0.975


def test_too_few_evaluation_windows_or_tokens_warn():
    from analysis.data.evaluation import MIN_EVAL_TOKENS, MIN_EVAL_WINDOWS, too_few_evaluation

    assert too_few_evaluation(MIN_EVAL_WINDOWS, MIN_EVAL_TOKENS) is None
    assert "Only 1 evaluation window (16 predicted tokens)" in too_few_evaluation(1, 16)
    assert too_few_evaluation(MIN_EVAL_WINDOWS - 1, 10**6) and too_few_evaluation(100, MIN_EVAL_TOKENS - 1)
