"""The calibration/evaluation split: EvalSpec strings, resolve, window parts, link state
and the plan's evaluation section (version-1 plans without the new fields still load)."""
import json

import pytest
import torch

from analysis.corpus import Corpus, CorpusError, load_corpus, split_windows
from analysis.evaluation import EvalSpec, part_windows, resolve
from analysis.pruning.ablation import Removal
from analysis.pruning.plan import evaluation_section, make_plan
from analysis.pruning.plan_check import parse_plan
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
