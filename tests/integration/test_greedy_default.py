"""Iterative greedy on the default model (30 layers): resumed suffixes (every layer kept,
or every third under a small memory budget) and the vocabulary bound choose exactly what
restarting every candidate with full unembeddings chooses, with bit-identical NLL sums,
and both savings are actually taken; the chosen removals' perplexities are plain
transformers'."""
import pytest

import reference
from analysis.data.corpus import make_windows
from analysis.search import greedy
from analysis.search.greedy import iterative_greedy

SEQ, N_WINDOWS, STEPS = 32, 3, 3


@pytest.fixture(scope="module")
def windows(default_model):
    return make_windows(default_model.tokenizer, reference.MIXED_TEXT * 2, SEQ, max_windows=N_WINDOWS)


@pytest.fixture(scope="module")
def plain(default_model, windows):
    return iterative_greedy(default_model, windows, "blocks", STEPS, batch_windows=2, resume=False,
                            vocabulary_bound=False)


@pytest.mark.parametrize("budget_mb, every", [(None, 1), ("40", 3)])
def test_resumed_and_bounded_greedy_equals_the_plain_one(default_model, windows, plain, plain_default, monkeypatch,
                                                         budget_mb, every):
    if budget_mb:
        monkeypatch.setenv("LAYERLAB_RESUME_MB", budget_mb)
    else:
        monkeypatch.delenv("LAYERLAB_RESUME_MB", raising=False)
    streams = greedy._streams(default_model, windows, 2)
    assert greedy._keep_every(default_model, streams) == every
    fast = iterative_greedy(default_model, windows, "blocks", STEPS, batch_windows=2)
    assert fast.order == plain.order and fast.nll_sum == plain.nll_sum
    assert fast.batches_bounded > 0 and fast.batches_measured == plain.batches_measured
    assert fast.suffix_blocks < fast.suffix_blocks_restart == plain.suffix_blocks
    for k in range(1, STEPS + 1):
        want = reference.perplexity(reference.without_layers(plain_default, set(fast.order[:k])), windows)
        assert fast.perplexities()[k - 1] == pytest.approx(want, rel=1e-4)
