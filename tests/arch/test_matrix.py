"""The architecture matrix (issue 11): every family of tests/families.py, built tiny with
random weights in a temporary directory and loaded through the same local-directory path
the sidebar and CLI take, gives the numbers plain transformers gives on the same windows
(relative tolerance 1e-4 in float32): perplexity; block, attention and MLP removal at the
first, middle and last layer (layer deleted, or the sublayer's output projection zeroed);
Block Influence; the readout after the last block; the activation sparsity reads; the
checkpoint `apply` writes; greedy generation with removals; the MergeKit YAML.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import reference
from families import FAMILIES, build_family

SEQ, WINDOWS, TOL = 64, 3, 1e-4
PLAN = dict(blocks=[1], attn=[2], mlp=[3])  # one of each kind, on a 4-layer model


@pytest.fixture(scope="module", params=list(FAMILIES))
def fam(request, tmp_path_factory):
    from analysis.data.corpus import load_file as load_corpus, make_windows
    from analysis.model.loading import get_model
    from analysis.measure.pipeline import analyse

    directory = build_family(request.param, tmp_path_factory.mktemp(request.param) / request.param)
    model = get_model(str(directory), "cpu")
    corpus = load_corpus("builtin:all")
    windows = make_windows(model.tokenizer, corpus.text, SEQ, model.n_ctx, WINDOWS)
    analysis = analyse(model, corpus, SEQ, max_windows=WINDOWS, use_cache=False)
    return dict(name=request.param, dir=directory, model=model, hf=reference.plain_model(directory),
                windows=windows, analysis=analysis, tmp=tmp_path_factory.mktemp(f"{request.param}-out"))


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_loads_as_its_family(fam):
    from analysis.model.architectures import family_of
    assert family_of(fam["hf"].config.model_type) is not None
    assert fam["model"].n_layers == 4 and fam["windows"].shape == (WINDOWS, SEQ + 1)


def test_perplexity(fam):
    assert rel(fam["analysis"].perplexity, reference.perplexity(fam["hf"], fam["windows"])) < TOL


def test_removal_at_first_middle_and_last_layer(fam):
    from analysis.ablate.sweep import exact_sweep
    model, hf, windows = fam["model"], fam["hf"], fam["windows"]
    sweep = exact_sweep(model, windows)
    for layer in (0, model.n_layers // 2, model.n_layers - 1):
        want = {"block_ppl": reference.without_layers(hf, {layer}),
                "attn_ppl": reference.with_zeroed(hf, attn={layer}),
                "mlp_ppl": reference.with_zeroed(hf, mlp={layer})}
        for key, plain in want.items():
            assert rel(sweep[key][layer], reference.perplexity(plain, windows)) < TOL, (key, layer)


def test_block_influence(fam):
    h = reference.residuals(fam["hf"], fam["windows"])[:, :, 1:].double()  # representation positions: no BOS
    want = [1.0 - float(F.cosine_similarity(h[l], h[l + 1], dim=-1).mean()) for l in range(h.shape[0] - 1)]
    np.testing.assert_allclose(fam["analysis"].similarity.block_influence(), want, rtol=TOL)


def test_readout_after_the_last_block_is_the_models_output(fam):
    from analysis.model import hooks
    model, windows = fam["model"], fam["windows"]
    last = hooks.resid_post(model.n_layers - 1)
    with torch.inference_mode(), hooks.capture(model, [last]) as got:
        model.bridge(windows, return_type=None)
        lens = hooks.readout(model, got[last])
    with torch.no_grad():
        logits = fam["hf"](windows).logits
    assert float((lens - logits).abs().max()) <= TOL * float(logits.abs().max())
    ppl = reference.perplexity(fam["hf"], windows)
    assert rel(float(fam["analysis"].lens.ce[-1]), math.log(ppl)) < TOL


def test_sparsity_reads_the_input_of_the_down_projection(fam):
    from analysis.model import architectures, hooks
    model, windows, analysis = fam["model"], fam["windows"], fam["analysis"]
    if model.moe:
        assert analysis.sparsity is None and architectures.MOE_NOTE in architectures.notes_for(model)
        return
    names = [hooks.mlp_post(l) for l in range(model.n_layers)]
    with torch.inference_mode(), hooks.capture(model, names) as got:
        model.bridge(windows, return_type=None)
        ours = [got[n].clone() for n in names]
    plain = reference.mlp_activations(fam["hf"], windows)
    spa = analysis.sparsity.at_eps(1e-2)
    for l, (a, b) in enumerate(zip(ours, plain)):
        assert a.shape[-1] == model.d_mlp
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL * float(b.abs().max()))
        near = (b[:, 1:].abs() <= 1e-2).double().mean()
        assert abs(spa["frac_near_zero"][l] - float(near)) <= 2.0 / b[:, 1:].numel()  # a borderline entry may flip


@pytest.fixture(scope="module")
def pruned(fam):
    from analysis.plans.apply import apply_plan
    from analysis.plans.schema import make_plan
    from analysis.model.removal import Removal
    plan = make_plan(fam["model"], Removal.of(**PLAN), "manual", {})
    return plan, apply_plan(plan, fam["dir"], fam["tmp"] / "pruned")


def test_apply_writes_a_checkpoint_with_the_same_perplexity(fam, pruned):
    from analysis.plans.apply import evaluate
    plan, out = pruned
    windows = fam["windows"]
    from_checkpoint = reference.perplexity(reference.plain_model(out), windows)
    _, ours = evaluate(fam["model"], plan, windows)
    zeroed = reference.with_zeroed(fam["hf"], attn=set(PLAN["attn"]), mlp=set(PLAN["mlp"]))
    by_hand = reference.perplexity(reference.without_layers(zeroed, set(PLAN["blocks"])), windows)
    assert rel(ours, from_checkpoint) < TOL and rel(by_hand, from_checkpoint) < TOL


def test_generation_with_removals_equals_greedy_on_the_checkpoint(fam, pruned):
    from analysis.playground.prompts import run_prompt
    plan, out = pruned
    prompt = fam["windows"][:1, :40]
    got = run_prompt(fam["model"], prompt, plan.removal(), max_new=12).generated
    want = reference.greedy(reference.plain_model(out), prompt, 12)
    assert got == want[:len(got)] and len(got) in (12, want.index(got[-1]) + 1)


LAYER = re.compile(r"^(.*?\.(?:layers|h)\.)(\d+)\.(.*)$")


def mergekit_passthrough(source: dict, config: dict) -> dict:
    """What `mergekit-yaml` builds from a passthrough config: kept layers renumbered in
    slice order, each tensor scaled by the first `scale` entry whose filter is a
    substring of its name (MergeKit's rule)."""
    out = {n: t for n, t in source.items() if not LAYER.match(n)}
    new = 0
    for piece in config["slices"]:
        src = piece["sources"][0]
        scale = src.get("parameters", {}).get("scale", [{"value": 1.0}])
        for layer in range(*src["layer_range"]):
            for name, tensor in source.items():
                m = LAYER.match(name)
                if m and int(m.group(2)) == layer:
                    target = f"{m.group(1)}{new}.{m.group(3)}"
                    out[target] = tensor * next(c["value"] for c in scale if c.get("filter", "") in target)
            new += 1
    return out


def test_unwrapped_decoder_gives_the_bridge_logits_and_shares_its_weights(fam):
    """Decoding runs on the bridge's HF model unwrapped (analysis/model/unwrapped.py):
    with no removal its logits are plain transformers', with removals they are the
    bridge's with the sublayer outputs zeroed (naive_logits), and a KV-cached step gives
    what the full forward gives at that position. No parameter is copied."""
    from transformers import DynamicCache
    from analysis.model.removal import Removal
    from analysis.ablate.replay import naive_logits
    from analysis.model.unwrapped import unwrapped
    model, hf, windows = fam["model"], fam["hf"], fam["windows"][:2]
    decoder = unwrapped(model)
    assert decoder is not None and unwrapped(model) is decoder
    shared = {p.data_ptr() for p in model.hf_model.parameters()}
    assert all(p.data_ptr() in shared for p in decoder.model.parameters())
    with torch.inference_mode():
        none = decoder(Removal(), windows).logits
        assert (none - hf(windows).logits).abs().max() < TOL * none.abs().max()
        removal = Removal.of(**PLAN)
        ours = decoder(removal, windows).logits
        bridge = naive_logits(model, windows, removal)
        assert (ours - bridge).abs().max() < TOL * bridge.abs().max()
        cache = DynamicCache(config=decoder.model.config)
        decoder(removal, windows[:1, :-1], past_key_values=cache, use_cache=True)
        step = decoder(removal, windows[:1, -1:], past_key_values=cache, use_cache=True).logits[0, -1]
        assert (step - ours[0, -1]).abs().max() < TOL * ours.abs().max()
        assert (decoder(Removal(), windows).logits - none).abs().max() == 0  # the switch resets


def test_instrumented_forward_on_the_unwrapped_model_captures_what_the_bridge_hooks_capture(fam):
    """The instrumented pass and the clean states of every removal run on the unwrapped
    model with module hooks where the bridge's hooks fire (collect.instrumented): every
    family maps all its sites, and each captured tensor (residual stream, resid_mid,
    sublayer outputs, the MLP activation), the logits and the recorded block arguments
    replayed on their own (ablation.run_blocks) give what the bridge gives."""
    from analysis.model import hooks
    from analysis.measure.collect import instrumented
    from analysis.model.removal import Removal
    from analysis.ablate.replay import clean_states, run_blocks
    model, windows = fam["model"], fam["windows"][:2]
    L = model.n_layers
    names = hooks.residual_stream(L) + [hooks.sublayer_out(k, l) for k in ("attn", "mlp") for l in range(L)]
    names += [] if model.moe else [hooks.mlp_post(l) for l in range(L)]
    if not model.parallel_attn_mlp:
        names += [hooks.resid_mid(l) for l in range(L)]
    got = {}
    for bridge in (False, True):
        with model.lock, torch.inference_mode(), instrumented(model, names, bridge=bridge) as run:
            assert (run.decoder is None) == bridge, "the unwrapped model could not map every site"
            logits = run.forward(windows)
            got[bridge] = {**{n: run.got[n].clone() for n in names}, "logits": logits}
    for name, value in got[True].items():
        ours = got[False][name]
        assert ours.shape == value.shape and (ours - value).abs().max() <= TOL * value.abs().max(), name
    with model.lock:
        clean = clean_states(model, windows)
    assert clean.inputs.decoder is not None
    removal = Removal.of(**PLAN)
    with model.lock, torch.inference_mode():
        replayed = run_blocks(model, clean.resid[0], 0, clean.inputs)
        assert (replayed - clean.resid[L]).abs().max() <= TOL * clean.resid[L].abs().max()
        pruned = run_blocks(model, clean.resid[0], 0, clean.inputs, removal)
        assert (pruned - replayed).abs().max() > 0  # the removal applied, and then switched off again
        assert (run_blocks(model, clean.resid[0], 0, clean.inputs) - replayed).abs().max() == 0


def test_mergekit_yaml_builds_the_same_checkpoint(fam, pruned):
    from analysis.plans.mergekit import mergekit_yaml
    plan, out = pruned
    config = yaml.safe_load(mergekit_yaml(plan, str(fam["dir"]), fam["model"].hf_model))
    built = mergekit_passthrough(load_file(fam["dir"] / "model.safetensors"), config)
    written = load_file(out / "model.safetensors")
    assert set(built) == set(written)
    for name, tensor in written.items():
        assert torch.equal(built[name], tensor), name
    filters = [c["filter"] for s in config["slices"] for c in s["sources"][0].get("parameters", {}).get("scale", [])
               if "filter" in c]
    assert len(filters) >= 2  # the zeroed attention and MLP each name their projection


def test_iterative_greedy_resumed_and_bounded_equals_the_plain_re_measurement(fam):
    """Every family: the greedy with resumed suffixes and the vocabulary bound chooses the
    same layers with bit-identical NLL sums as the same greedy restarting every candidate
    at its own layer with full unembeddings, over several batches, on every kind; the
    chosen removals' perplexities are plain transformers' (relative 1e-4)."""
    from analysis.search.greedy import iterative_greedy
    model, windows = fam["model"], fam["windows"]
    for kind in ("blocks", "attn", "mlp"):
        fast = iterative_greedy(model, windows, kind, 3, batch_windows=2)
        plain = iterative_greedy(model, windows, kind, 3, batch_windows=2, resume=False, vocabulary_bound=False)
        assert fast.order == plain.order and fast.nll_sum == plain.nll_sum, kind
        assert fast.suffix_blocks <= fast.suffix_blocks_restart == plain.suffix_blocks, kind
        for k in range(1, 4):
            want = reference.perplexity(reference.modified(fam["hf"], kind, fast.order[:k]), windows)
            assert rel(fast.perplexities()[k - 1], want) < TOL, (kind, k)


def test_playground_toggles_restarting_from_the_last_stream_equal_a_fresh_evaluation(fam):
    """Every family (issue 30): the playground in groups of unequal size, each toggle
    restarting from the stream of the removal before it where they agree, gives exactly
    the numbers of a fresh playground (the same groups) restarting from the clean
    residuals, and plain transformers' perplexity. (Across different groupings the
    mixture-of-experts families differ in the last bits: an expert's matmul sees other rows.)"""
    from analysis.model.removal import Removal
    from analysis.playground.live import Playground
    model, windows = fam["model"], fam["windows"]
    pg = Playground(model, windows, batch_tokens=2 * windows.shape[1]).build()
    assert sorted(len(g) for g in pg.groups) == [1, 2]
    steps = [Removal.of(attn=[1]), Removal.of(attn=[1], mlp=[2]), Removal.of(attn=[1], mlp=[2], blocks=[3]),
             Removal.of(attn=[1], blocks=[2])]
    for removal in steps:
        fresh = Playground(model, windows, batch_tokens=2 * windows.shape[1]).build()
        assert np.array_equal(pg.evaluate(removal).nll, fresh.evaluate(removal).nll), removal
    hf = fam["hf"]
    want = [reference.with_zeroed(hf, attn={1}), reference.with_zeroed(hf, attn={1}, mlp={2}),
            reference.without_layers(reference.with_zeroed(hf, attn={1}, mlp={2}), {3}),
            reference.without_layers(reference.with_zeroed(hf, attn={1}), {2})]
    for removal, plain in zip(steps, want):
        assert rel(pg.evaluate(removal).perplexity, reference.perplexity(plain, windows)) < TOL, removal


def test_tasks_in_process_equal_lm_eval_on_the_checkpoints(fam, pruned, tmp_path, isolated_cache):
    """lm-eval's HFLM over the shared model with the removals applied gives, item by item,
    what lm-eval on its own gives on the family's directory and on the `apply` checkpoint
    (log-likelihoods within 1e-4, the same greedy outputs)."""
    from analysis.model.removal import Removal
    from analysis.tasks import engine
    from unit.tasks.test_tasks import GEN, MC, assert_same_items, write_jsonl
    plan, out = pruned
    taskset = engine.resolve_tasks([], [write_jsonl(tmp_path / "mc.jsonl", MC), write_jsonl(tmp_path / "gen.jsonl", GEN)])
    for removal, directory in ((Removal(), fam["dir"]), (plan.removal(), out)):
        ours = engine.run_lm(engine.removal_lm(fam["model"], removal), taskset)
        assert_same_items(ours, engine.evaluate_checkpoint(str(directory), taskset))
