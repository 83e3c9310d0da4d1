"""Regression (issue 16): blocks run on their own get the masks the model builds.

Tiny random Mistral (sliding window 24) and Gemma-2 (alternating sliding/full layers,
soft-capping, eager attention only) with windows of 64 tokens, longer than the sliding
window: the exact sweep, the playground and generation with removals must equal plain
transformers with the layer deleted or its output projection zeroed.
"""
from __future__ import annotations

import math

import pytest
import torch

import reference
from families import build_family

FAMILIES = ("mistral", "gemma2")
SEQ = 64


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    from analysis.model.loading import get_model
    directory = build_family(request.param, tmp_path_factory.mktemp(request.param) / request.param)
    model = get_model(str(directory), "cpu")
    torch.manual_seed(3)
    windows = torch.randint(0, 49152, (3, SEQ + 1))
    windows[:, 0] = model.bos_token_id
    return request.param, model, reference.plain_model(directory), windows


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_attention_implementation_recorded(family):
    name, model, _, _ = family
    assert model.card()["attn_implementation"] == ("eager" if name == "gemma2" else "sdpa")
    assert model.hf_model.config._attn_implementation == model.attn_implementation


def test_sweep_equals_plain_transformers(family):
    from analysis.ablate.sweep import exact_sweep
    _, model, hf, windows = family
    sweep = exact_sweep(model, windows)
    assert rel(sweep["full_ppl"], reference.perplexity(hf, windows)) < 1e-4
    L = model.n_layers
    for layer in (0, L // 2, L - 1):
        assert rel(sweep["block_ppl"][layer], reference.perplexity(reference.without_layers(hf, {layer}), windows)) < 1e-4
        assert rel(sweep["attn_ppl"][layer], reference.perplexity(reference.with_zeroed(hf, attn={layer}), windows)) < 1e-4
        assert rel(sweep["mlp_ppl"][layer], reference.perplexity(reference.with_zeroed(hf, mlp={layer}), windows)) < 1e-4


def test_prefix_path_equals_naive_path(family):
    from analysis.model.removal import Removal
    from analysis.ablate.replay import removal_nll
    _, model, _, windows = family
    removals = [Removal.of(blocks=[1]), Removal.of(blocks=[0, 2], attn=[3]), Removal.of(mlp=[1], attn=[2])]
    _, fast, n = removal_nll(model, windows, removals)
    _, naive, _ = removal_nll(model, windows, removals, naive=True)
    for a, b in zip(fast, naive):
        assert rel(math.exp(a / n), math.exp(b / n)) < 1e-6


def test_playground_equals_plain_transformers(family):
    from analysis.model.removal import Removal
    from analysis.playground.live import Playground
    _, model, hf, windows = family
    playground = Playground(model, windows, budget_bytes=1).build()  # stride > 1: restarts from kept layers
    for removal, ref in ((Removal.of(blocks=[1, 3]), reference.without_layers(hf, {1, 3})),
                         (Removal.of(attn=[2], mlp=[1]), reference.with_zeroed(hf, attn={2}, mlp={1}))):
        assert rel(playground.evaluate(removal).perplexity, reference.perplexity(ref, windows)) < 1e-4
    full = Playground(model, windows).build()
    assert rel(full.evaluate(Removal.of(blocks=[2])).perplexity,
               reference.perplexity(reference.without_layers(hf, {2}), windows)) < 1e-4


def test_generation_with_removals_equals_pruned_greedy(family):
    from analysis.model.removal import Removal
    from analysis.playground.prompts import run_prompt
    _, model, hf, windows = family
    prompt = windows[:1, :40]  # longer than the sliding window, and decoding runs past it
    got = run_prompt(model, prompt, Removal.of(blocks=[1]), max_new=12).generated
    want = reference.greedy(reference.without_layers(hf, {1}), prompt, 12)
    assert got == want[:len(got)] and len(got) in (12, want.index(got[-1]) + 1)
