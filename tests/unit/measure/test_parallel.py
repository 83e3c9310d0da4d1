"""A parallel attention/MLP architecture (tiny GPT-NeoX, use_parallel_residual): detected,
sublayer scores equal an independent plain-transformers computation, the prefix-reusing
removal sweep equals the naive one and a plain model with the layer deleted, and the
Attention vs MLP page labels it."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from analysis.data.corpus import Corpus, make_windows
from analysis.model.loading import get_model
from analysis.measure.pipeline import analyse
from analysis.ablate.sweep import exact_sweep
from tiny import TEXT, build_tiny_parallel_model

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    return build_tiny_parallel_model(tmp_path_factory.mktemp("neox") / "tiny-neox")


@pytest.fixture(scope="module")
def neox(neox_dir):
    return get_model(str(neox_dir), "cpu")


@pytest.fixture(scope="module")
def windows(neox):
    return make_windows(neox.tokenizer, TEXT, 32, neox.n_ctx, 3)


@pytest.fixture(scope="module")
def plain(neox_dir):
    return reference.plain_model(neox_dir)


def test_detected_as_parallel(neox):
    assert neox.parallel_attn_mlp and neox.architecture == "GPTNeoXForCausalLM"


@torch.no_grad()
def test_sublayer_scores_match_plain_transformers(neox, windows, plain):
    got = analyse(neox, Corpus("t", TEXT), 32, max_windows=3, use_cache=False).sublayers
    layers = plain.gpt_neox.layers
    seen = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen.__setitem__(("pre", i), (args[0] if args else kwargs["hidden_states"])),
            with_kwargs=True))
        hooks.append(layer.attention.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("attn", i), out[0])))
        hooks.append(layer.mlp.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(("mlp", i), out)))
    try:
        plain(windows)
    finally:
        for h in hooks:
            h.remove()
    for i in range(len(layers)):
        pre = seen[("pre", i)][:, 1:]
        for kind in ("attn", "mlp"):
            out = seen[(kind, i)][:, 1:]
            score = 1 - F.cosine_similarity(pre, pre + out, dim=-1).double().mean()
            ratio = (out.norm(dim=-1) / pre.norm(dim=-1)).double().mean()
            assert getattr(got, f"{kind}_score")[i] == pytest.approx(float(score), rel=1e-4, abs=1e-6)
            assert getattr(got, f"{kind}_norm_ratio")[i] == pytest.approx(float(ratio), rel=1e-4)


def test_removal_sweep_prefix_reuse_equals_naive_and_plain(neox, windows, plain):
    fast, naive = exact_sweep(neox, windows), exact_sweep(neox, windows, naive=True)
    for key in ("block_ppl", "attn_ppl", "mlp_ppl"):
        assert fast[key] == pytest.approx(naive[key], rel=1e-6)
    for i in range(len(plain.gpt_neox.layers)):
        deleted = copy.deepcopy(plain)
        deleted.gpt_neox.layers = torch.nn.ModuleList([l for j, l in enumerate(deleted.gpt_neox.layers) if j != i])
        for j, layer in enumerate(deleted.gpt_neox.layers):
            layer.attention.layer_idx = j
        deleted.config.num_hidden_layers -= 1
        assert fast["block_ppl"][i] == pytest.approx(reference.perplexity(deleted, windows), rel=1e-4)
        zeroed = copy.deepcopy(plain)
        with torch.no_grad():
            zeroed.gpt_neox.layers[i].attention.dense.weight.zero_()
            zeroed.gpt_neox.layers[i].attention.dense.bias.zero_()
        assert fast["attn_ppl"][i] == pytest.approx(reference.perplexity(zeroed, windows), rel=1e-4)
    assert np.isfinite(fast["full_ppl"])
