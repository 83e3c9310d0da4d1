"""bf16 and fp16 on the default model (issue 11): perplexity and Block Influence within
1e-2 relative of float32, and loading in bf16 halves the resident weight memory
(measured in fresh processes, the baseline taken after the imports)."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.corpus import load_file
from analysis.loading import get_model
from analysis.pipeline import analyse

WINDOWS, SEQ = 16, 128  # with 4 windows bf16's largest Block Influence shift is 1.1e-2 (plain transformers' too)


def single_pass(model):
    return analyse(model, load_file("builtin:all"), SEQ, max_windows=WINDOWS, use_cache=False, with_lens=False)


@pytest.fixture(scope="module")
def full(default_model):
    return single_pass(default_model)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_perplexity_and_block_influence_near_float32(dtype, full):
    got = single_pass(get_model("default", "cpu", dtype))
    ppl_rel = abs(got.perplexity - full.perplexity) / full.perplexity
    bi, bi_full = got.similarity.block_influence(), full.similarity.block_influence()
    bi_rel = np.abs(bi - bi_full) / np.abs(bi_full)
    print(f"{dtype}: perplexity {got.perplexity:.4f} vs {full.perplexity:.4f} (rel {ppl_rel:.2e}); "
          f"Block Influence max rel {bi_rel.max():.2e} at layer {bi_rel.argmax()}, mean {bi_rel.mean():.2e}")
    assert ppl_rel < 1e-2
    assert bi_rel.max() < 1e-2


def test_bf16_halves_resident_weight_memory():
    from analysis.cli.scale import run_child
    fp32, bf16 = (run_child(["load", "default", dtype]) for dtype in ("float32", "bfloat16"))
    print(f"RSS added by loading: float32 {fp32['added_rss'] / 2 ** 20:.0f} MiB, bfloat16 "
          f"{bf16['added_rss'] / 2 ** 20:.0f} MiB; weights {fp32['weight_bytes'] / 2 ** 20:.0f} -> "
          f"{bf16['weight_bytes'] / 2 ** 20:.0f} MiB")
    assert bf16["weight_bytes"] * 2 == fp32["weight_bytes"]
    saved = fp32["added_rss"] - bf16["added_rss"]
    assert saved >= 0.9 * fp32["weight_bytes"] / 2  # what bf16 frees is (about) half the float32 weights
