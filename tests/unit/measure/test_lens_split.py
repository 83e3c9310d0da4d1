"""The logit lens is cached as its own result: a lens-free analysis runs no lens, the lens
asked for afterwards runs only the lens (the lens-free part is never computed twice), and
the combined result, and report.json, equal those of one pass computing everything."""
import json

import numpy as np
import pytest

from tiny import TEXT
from analysis.measure import pipeline
from analysis.data.corpus import Corpus
from analysis.reporting.report import build_report


@pytest.fixture()
def passes(monkeypatch):
    """Every run_pass the pipeline makes: the reducer class names of each."""
    seen = []
    real = pipeline.run_pass

    def spy(model, windows, reducers, **kwargs):
        seen.append(sorted(type(r).__name__ for r in reducers))
        return real(model, windows, reducers, **kwargs)

    monkeypatch.setattr(pipeline, "run_pass", spy)
    return seen


def same_report(a, b) -> bool:
    return json.dumps(build_report(a), sort_keys=True) == json.dumps(build_report(b), sort_keys=True)


def test_lens_after_a_lens_free_analysis_runs_only_the_lens(tiny, isolated_cache, passes):
    corpus = Corpus("split", TEXT)
    base = pipeline.analyse(tiny, corpus, 32, batch_tokens=200, with_lens=False)
    assert base.lens is None
    assert passes == [["Perplexity", "SimilarityReducer", "SparsityReducer", "SublayerReducer"]]

    full = pipeline.analyse(tiny, corpus, 32, batch_tokens=200)
    assert passes[1:] == [["LensReducer"]]  # the lens-free part came from the cache
    assert full.perplexity == base.perplexity and full.similarity.to_dict() == base.similarity.to_dict()

    again = pipeline.analyse(tiny, corpus, 32, batch_tokens=200)
    assert len(passes) == 2  # both parts cached now

    one_pass = pipeline.analyse(tiny, corpus, 32, batch_tokens=200, use_cache=False)
    assert passes[2] == ["LensReducer", "Perplexity", "SimilarityReducer", "SparsityReducer", "SublayerReducer"]
    for result in (full, again):
        for name in ("ce", "kl_to_final", "entropy", "top1_agree", "median_rank_final_top1", "seq_mean_ce"):
            assert np.array_equal(getattr(result.lens, name), getattr(one_pass.lens, name)), name
        assert result.lens.early_exit.to_dict() == one_pass.lens.early_exit.to_dict()
        assert same_report(result, one_pass)


def test_one_pass_fills_both_caches(tiny, isolated_cache, passes):
    corpus = Corpus("split-both", TEXT)
    full = pipeline.analyse(tiny, corpus, 32)
    assert len(passes) == 1 and "LensReducer" in passes[0]
    base = pipeline.analyse(tiny, corpus, 32, with_lens=False)
    assert len(passes) == 1 and base.lens is None and base.perplexity == full.perplexity


def test_lens_is_shared_across_sparsity_thresholds(tiny, isolated_cache, passes):
    corpus = Corpus("split-eps", TEXT)
    pipeline.analyse(tiny, corpus, 32, eps=0.01)
    other = pipeline.analyse(tiny, corpus, 32, eps=0.05)
    assert passes[1] == ["Perplexity", "SimilarityReducer", "SparsityReducer", "SublayerReducer"]
    assert other.eps == 0.05 and other.lens is not None

