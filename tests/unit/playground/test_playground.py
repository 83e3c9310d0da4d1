"""The live playground on the tiny random Llama: its perplexities against full forwards
with zeroing hooks (ablation.naive_logits) and plain transformers, the all-removed and
none-removed cases, parameter/FLOP fractions against hand counts, prompt top-k and
greedy continuation against plain-transformers generation, and the page's link handling."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from tiny import TEXT
from analysis.model.removal import Removal
from analysis.ablate.replay import naive_logits
from analysis.measure.collect import batches, token_nll
from analysis.data.corpus import make_windows
from analysis.ablate.costs import component_costs, removed_fractions
from analysis.playground.bench import bench_toggles
from analysis.playground.live import Playground, describe
from analysis.playground.prompts import prompt_tokens, run_prompt

SEQ = 32
BATCH_TOKENS = 100
REMOVALS = [
    Removal.of(blocks=[1]),
    Removal.of(attn=[0]),
    Removal.of(mlp=[2]),
    Removal.of(mlp=[0], attn=[3]),
    Removal.of(blocks=[3], attn=[1], mlp=[1]),
    Removal.of(blocks=[0, 2], mlp=[3]),
]


@pytest.fixture(scope="module")
def windows(tiny):
    return make_windows(tiny.tokenizer, TEXT, SEQ, max_windows=5)


@pytest.fixture(scope="module")
def playground(tiny, windows):
    return Playground(tiny, windows, batch_tokens=BATCH_TOKENS).build()


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return reference.plain_model(tiny_dir)


def naive_nll(model, windows, removal) -> np.ndarray:
    """Per-token losses from one full forward with zeroing hooks per batch (same batching)."""
    parts = []
    for _, chunk in batches(windows, BATCH_TOKENS):
        with model.lock:
            parts.append(token_nll(naive_logits(model, chunk, removal), chunk).numpy())
    return np.concatenate(parts).astype(np.float64)


@pytest.mark.parametrize("removal", REMOVALS, ids=lambda r: str(r.to_dict()))
def test_perplexity_equals_full_forward_with_hooks(tiny, windows, playground, removal):
    expected = naive_nll(tiny, windows, removal)
    got = playground.evaluate(removal)
    assert np.array_equal(got.nll, expected)
    assert got.perplexity == math.exp(expected.mean())
    assert got.perplexity != playground.full.perplexity


def test_checkpointed_residuals_give_the_same_numbers(tiny, windows, playground):
    """A budget too small for every residual keeps every 2nd-or-so layer and no mid streams."""
    per_layer = windows.numel() * tiny.d_model * 4
    small = Playground(tiny, windows, batch_tokens=BATCH_TOKENS, budget_bytes=3 * per_layer).build()
    assert small.stride > 1 and not small.keep_mid
    assert any(r is None for r in small.states[0].resid)
    for removal in REMOVALS:
        assert np.array_equal(small.evaluate(removal).nll, playground.evaluate(removal).nll)


def test_nothing_removed_is_the_full_model(playground, windows, hf):
    full = playground.evaluate(Removal())
    assert full is playground.full
    assert full.perplexity == pytest.approx(reference.perplexity(hf, windows), rel=1e-5)
    assert describe(Removal(), 4) == "Nothing removed: this is the full model."


def test_all_blocks_removed_is_unembedding_of_embeddings(tiny, playground, windows, hf):
    everything = Removal.of(blocks=range(4), attn=range(4), mlp=range(4))
    with torch.no_grad():
        logits = hf.lm_head(hf.model.norm(hf.model.embed_tokens(windows))).double()
    nll = -F.log_softmax(logits[:, :-1], -1).gather(-1, windows[:, 1:, None]).squeeze(-1)
    for removal in (Removal.of(blocks=range(4)), everything):
        got = playground.evaluate(removal)
        assert got.perplexity == pytest.approx(float(torch.exp(nll.mean())), rel=1e-5)
        assert "unembedding of the token embeddings" in describe(removal, 4)


def test_parameter_and_flop_fractions_against_hand_counts(tiny, tiny_dir):
    from transformers import AutoConfig
    c = AutoConfig.from_pretrained(tiny_dir)
    d, f, V, head = c.hidden_size, c.intermediate_size, c.vocab_size, c.hidden_size // c.num_attention_heads
    attn = d * d + 2 * d * (c.num_key_value_heads * head) + d * d  # q, k, v, o
    mlp = 3 * d * f  # gate, up, down
    norms = 2 * d
    total = 2 * V * d + d + c.num_hidden_layers * (attn + mlp + norms)  # untied embedding + head, final norm
    ctx = SEQ
    attn_fl = 2 * attn + 4 * ctx * c.num_attention_heads * head
    total_fl = c.num_hidden_layers * (attn_fl + 2 * mlp) + 2 * d * V
    costs = component_costs(tiny, ctx)
    assert costs.total_params == total
    assert costs.total_flops == total_fl
    cases = {
        Removal(): (0, 0),
        Removal.of(blocks=[1]): (attn + mlp + norms, attn_fl + 2 * mlp),
        Removal.of(attn=[0, 2]): (2 * attn, 2 * attn_fl),
        Removal.of(mlp=[3]): (mlp, 2 * mlp),
        Removal.of(blocks=[2], attn=[2], mlp=[0]): (attn + 2 * mlp + norms, attn_fl + 4 * mlp),
    }
    for removal, (params, flops) in cases.items():
        assert removed_fractions(costs, removal) == pytest.approx((params / total, flops / total_fl), rel=1e-12)


def test_generation_without_removal_equals_plain_greedy(tiny, hf):
    tokens = prompt_tokens(tiny, "The cat sat on", 25)
    assert tokens[0, 0].item() == tiny.bos_token_id
    ours = run_prompt(tiny, tokens, Removal(), 25)
    with torch.no_grad():
        plain = hf.generate(tokens, do_sample=False, max_new_tokens=25, pad_token_id=tiny.tokenizer.eos_token_id)
    assert ours.generated == plain[0, tokens.shape[1]:].tolist()
    probs = torch.softmax(hf(tokens).logits[0, -1].detach().float(), -1)
    values, ids = probs.topk(5)
    assert [i for i, _ in ours.top] == ids.tolist()
    assert [p for _, p in ours.top] == pytest.approx(values.tolist(), rel=1e-5)


@pytest.mark.parametrize("removal, build", [
    (Removal.of(attn=[1], mlp=[3]), lambda hf: reference.with_zeroed(hf, attn={1}, mlp={3})),
    (Removal.of(blocks=[2]), lambda hf: reference.without_layers(hf, {2})),
])
def test_generation_with_removal_equals_pruned_plain_model(tiny, hf, removal, build):
    tokens = prompt_tokens(tiny, "A dog barked", 12)
    pruned = build(hf)
    with torch.no_grad():
        plain = pruned.generate(tokens, do_sample=False, max_new_tokens=12, pad_token_id=tiny.tokenizer.eos_token_id)
    ours = run_prompt(tiny, tokens, removal, 12)
    assert ours.generated == plain[0, tokens.shape[1]:].tolist()
    assert ours.generated != run_prompt(tiny, tokens, Removal(), 12).generated


def test_zero_length_gives_top_tokens_only(tiny):
    result = run_prompt(tiny, prompt_tokens(tiny, "Where"), Removal.of(blocks=[0]), 0)
    assert result.generated == [] and len(result.top) == 5
    assert sum(p for _, p in result.top) <= 1.0
    with pytest.raises(ValueError):
        run_prompt(tiny, prompt_tokens(tiny, "Where"), Removal(), 201)


def test_bench_toggles_runs_every_single_toggle(tiny, windows, monkeypatch):  # timing is never asserted
    seen = []
    real = Playground.evaluate

    def recording(self, removal, memo=True):
        seen.append((removal, memo))
        return real(self, removal, memo)

    monkeypatch.setattr(Playground, "evaluate", recording)
    toggle, full = bench_toggles(tiny, windows, full_every=4)
    L = tiny.n_layers
    singles = {Removal.of(**{kind: [l]}) for kind in ("blocks", "attn", "mlp") for l in range(L)}
    timed = [r for r, memo in seen[1:]]  # after the warm-up
    assert sorted(map(str, timed)) == sorted(map(str, singles)) and len(timed) == 3 * L
    assert all(not memo for _, memo in seen)  # every toggle computed, none served from the memo
    assert 0 < toggle < float("inf") and 0 < full < float("inf")


def test_sweep_seeds_the_shared_memo_so_a_toggle_is_a_lookup(tiny, isolated_cache, monkeypatch):
    """Issue 12: after the 3L sweep every single removal is served from the memo that all
    sessions share, and equals a fresh evaluation exactly."""
    from analysis.data.corpus import Corpus
    from analysis.playground import live as pg_module
    from analysis.ablate.sweep import removal_cost

    corpus = Corpus("seed", TEXT)
    removal_cost(tiny, corpus, SEQ, max_windows=3)
    pg = pg_module.get_playground(tiny, corpus, SEQ, 3)
    computed = []
    real = Playground.group_nll
    monkeypatch.setattr(Playground, "group_nll", lambda self, *a, **k: computed.append(a) or real(self, *a, **k))
    singles = [Removal.of(**{kind: [l]}) for kind in ("blocks", "attn", "mlp") for l in range(tiny.n_layers)]
    served = [pg.evaluate(r) for r in singles]
    assert computed == []  # all 3L served from the sweep's per-token losses
    other = pg_module.Playground(tiny, pg.windows).build()  # a private playground computes afresh
    for removal, got in zip(singles, served):
        assert np.allclose(got.nll, other.evaluate(removal, memo=False).nll, rtol=1e-5, atol=1e-6)


def test_a_build_stopped_half_way_leaves_nothing_behind(tiny, windows, playground):
    """Issue 31: a build that stops after its first batch (the session's run was stopped,
    a job cancelled) leaves the playground unbuilt; the next build starts from nothing and
    gives exactly the states and numbers of a build that was never interrupted (before,
    the first batch's states stayed and the rebuilt playground had one batch too many)."""
    class Stop(Exception):
        pass

    def stop_after_first(fraction, message):
        raise Stop(message)

    pg = Playground(tiny, windows, batch_tokens=BATCH_TOKENS)
    with pytest.raises(Stop):
        pg.build(stop_after_first)
    assert pg.full is None and pg.states == []
    pg.build()
    assert len(pg.states) == len(playground.states)
    assert np.array_equal(pg.full.nll, playground.full.nll)
    removal = Removal.of(blocks=[1], attn=[2])
    assert np.array_equal(pg.evaluate(removal, memo=False).nll, playground.evaluate(removal, memo=False).nll)


def test_every_session_joins_one_build_job_and_sees_its_failure(tiny, isolated_cache, monkeypatch):
    """Issue 31: the shared playground is built once, as a background job every session
    joins; when the build fails, each waiting session is woken and shown the error (the
    page stops with it), and the next request builds again."""
    from streamlit.testing.v1 import AppTest

    from analysis.data.corpus import Corpus
    from analysis.model.loading import register_model

    from analysis.core import store
    from analysis.playground import live as pg_module

    register_model(tiny)
    monkeypatch.setattr(pg_module, "_PLAYGROUNDS", store.LRU(pg_module.KEEP_PLAYGROUNDS))  # none built yet
    script = f'''
import streamlit as st
from analysis.data.corpus import Corpus
from analysis.model.loading import get_model
from analysis.playground import live as playground
from ui import context, results
model = get_model({tiny.name!r}, {tiny.device!r}, {tiny.dtype!r})
ctx = context.Context(model, Corpus("join", {TEXT!r}), {SEQ}, 3)
if st.session_state.get("fail"):
    def broken(self, progress=None):
        raise RuntimeError("no memory left for the residuals")
    playground.Playground.build = broken
pg = results.playground_for(ctx, "calibration")
st.write(f"built {{len(pg.states)}} batches, full {{pg.full.perplexity:.4f}}")
'''
    original = Playground.build
    try:
        failing = AppTest.from_string(script, default_timeout=120)
        failing.session_state["fail"] = True
        failing.run()
        assert [e.value.replace("\\", "") for e in failing.error] == [
            "Keeping the clean residuals of the corpus failed: RuntimeError: no memory left for the residuals. "
            "Reload the page to try again."]
        assert not failing.exception
    finally:
        Playground.build = original
    at = AppTest.from_string(script, default_timeout=120).run()
    assert not at.exception and not at.error
    from analysis.playground.live import get_playground
    full = get_playground(tiny, Corpus("join", TEXT), SEQ, 3).full.perplexity
    assert at.markdown[0].value.endswith(f"full {full:.4f}")


def test_a_toggle_after_the_ones_removed_restarts_from_their_stream(tiny, windows, playground, monkeypatch):
    """Issue 30: adding a layer after the ones already removed runs only the blocks from that
    layer on, from the stream of the removal before it; removing an earlier one restarts
    where the two first differ. The numbers equal full forwards with hooks bit for bit."""
    pg = Playground(tiny, windows, batch_tokens=BATCH_TOKENS).build()
    starts = []
    real = Playground._restart
    monkeypatch.setattr(Playground, "_restart", lambda self, g, r: starts.append(real(self, g, r)[0]) or real(self, g, r))
    steps = [(Removal.of(attn=[0]), 0), (Removal.of(attn=[0], mlp=[2]), 2), (Removal.of(attn=[0], mlp=[2], blocks=[3]), 3),
             (Removal.of(attn=[0], blocks=[1]), 1)]
    for removal, start in steps:
        starts.clear()
        assert np.array_equal(pg.evaluate(removal).nll, naive_nll(tiny, windows, removal))
        assert set(starts) == {start}, (removal, starts)
