"""bf16 and fp16 on the CPU (issue 11): every analysis runs on the tiny Llama loaded in
each half dtype, its statistics are float64, and the numbers equal plain transformers
run in the same dtype (the model is what it is in that dtype; the analysis adds no error
of its own) and stay near float32."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from analysis.data.corpus import Corpus, make_windows
from analysis.model.loading import DTYPES, get_model
from analysis.measure.pipeline import analyse
from analysis.model.removal import Removal
from tiny import TEXT

SEQ = 32


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def half(request, tiny_dir):
    return get_model(str(tiny_dir), "cpu", request.param)


@pytest.fixture(scope="module")
def windows(tiny):
    return make_windows(tiny.tokenizer, TEXT, SEQ, max_windows=4)


@pytest.fixture(scope="module")
def plain_half(half, tiny_dir):
    return reference.plain_model(tiny_dir, DTYPES[half.dtype])


def rel(a, b):
    return abs(a - b) / abs(b)


def test_runs_in_that_dtype(half):
    assert {p.dtype for p in half.hf_model.parameters()} == {DTYPES[half.dtype]}


def test_single_pass_analyses_accumulate_in_float64(half, tiny, windows, plain_half):
    got = analyse(half, Corpus("t", TEXT), SEQ, max_windows=4, use_cache=False)
    full = analyse(tiny, Corpus("t", TEXT), SEQ, max_windows=4, use_cache=False)
    for array in (got.similarity.cos_all, got.sublayers.attn_score, got.sparsity.frac_near_zero_grid, got.lens.ce,
                  got.lens.kl_to_final):
        assert array.dtype == np.float64 and np.isfinite(array).all()
    assert rel(got.perplexity, reference.perplexity(plain_half, windows)) < 1e-3
    h = reference.residuals(plain_half, windows)[:, :, 1:].double()
    bi = [1.0 - float(F.cosine_similarity(h[l], h[l + 1], dim=-1).mean()) for l in range(h.shape[0] - 1)]
    np.testing.assert_allclose(got.similarity.block_influence(), bi, rtol=5e-3)  # kernels differ at bf16 eps
    assert rel(got.perplexity, full.perplexity) < 2e-2
    np.testing.assert_allclose(got.similarity.block_influence(), full.similarity.block_influence(), rtol=5e-2)
    np.testing.assert_allclose(got.lens.ce, full.lens.ce, rtol=2e-2)


def test_removals_playground_and_generation(half, windows, plain_half):
    from analysis.playground.live import Playground
    from analysis.playground.prompts import run_prompt
    from analysis.ablate.sweep import exact_sweep
    sweep = exact_sweep(half, windows)
    assert rel(sweep["block_ppl"][1], reference.perplexity(reference.without_layers(plain_half, {1}), windows)) < 1e-3
    assert rel(sweep["mlp_ppl"][2], reference.perplexity(reference.with_zeroed(plain_half, mlp={2}), windows)) < 1e-3
    playground = Playground(half, windows).build()
    assert rel(playground.evaluate(Removal.of(blocks=[1])).perplexity, sweep["block_ppl"][1]) < 1e-3
    prompt = windows[:1, :12]
    got = run_prompt(half, prompt, Removal.of(blocks=[1]), max_new=6).generated
    want = reference.greedy(reference.without_layers(plain_half, {1}), prompt, 6)
    assert got == want[:len(got)] and len(got) in (6, want.index(got[-1]) + 1)


def test_window_views(half, windows):
    from analysis.measure.lens import window_grid
    from analysis.measure.sparsity import token_density
    grid = window_grid(half, windows[0])
    assert all(np.isfinite(grid[k]).all() for k in ("top_probs", "kl", "entropy"))
    density = token_density(half, windows[0], 0.01)
    assert density.shape == (windows.shape[1], half.n_layers) and ((0 <= density) & (density <= 1)).all()
