"""The instrumented pass on a tiny random Llama, against plain-transformers numbers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from tiny import TEXT
from analysis.data.corpus import Corpus, make_windows
from analysis.measure.pipeline import Analysis, analyse
from analysis.measure.similarity import best_blocks, block_influence, linear_cka


@pytest.fixture(scope="module")
def result(tiny):
    return analyse(tiny, Corpus("t", TEXT), 32, use_cache=False, batch_tokens=200)


@pytest.fixture(scope="module")
def ref(tiny, tiny_dir):
    windows = make_windows(tiny.tokenizer, TEXT, 32)
    hf = reference.plain_model(tiny_dir)
    return windows, hf, reference.residuals(hf, windows)


def test_perplexity_matches_transformers(result, ref):
    windows, hf, _ = ref
    assert result.perplexity == pytest.approx(reference.perplexity(hf, windows), rel=1e-5)
    assert result.corpus["n_predicted_tokens"] == windows.shape[0] * 32


def test_cosine_and_block_influence(result, ref):
    _, _, h = ref
    rep = h[:, :, 1:].reshape(h.shape[0], -1, h.shape[-1])
    cos = np.array([[float(F.cosine_similarity(rep[i], rep[j], dim=-1).mean()) for j in range(len(rep))]
                    for i in range(len(rep))])
    assert np.allclose(result.similarity.cos_all, cos, rtol=1e-4, atol=1e-5)
    bi = block_influence(result.similarity.cos_all)
    assert np.allclose(bi, [1 - cos[l, l + 1] for l in range(len(rep) - 1)], rtol=1e-4)


def test_angular_best_block_at_last_token(result, ref):
    _, _, h = ref
    last = h[:, :, -1]
    L = h.shape[0] - 1
    ang = np.array([[float((torch.arccos(F.cosine_similarity(last[i], last[j], dim=-1).clamp(-1, 1)) / math.pi).mean())
                     for j in range(L + 1)] for i in range(L + 1)])
    ours = best_blocks(result.similarity.ang_last)
    assert [b["n"] for b in ours] == list(range(1, L))
    for b in ours:
        dists = [ang[l, l + b["n"]] for l in range(L - b["n"] + 1)]
        assert b["start"] == int(np.argmin(dists))
        assert b["distance"] == pytest.approx(min(dists), rel=1e-4, abs=1e-6)


def test_cka_matches_feature_space_formula(result, ref):
    _, _, h = ref
    rep = h[:, :, 1:].reshape(h.shape[0], -1, h.shape[-1]).double().numpy()
    assert rep.shape[1] <= 1024  # the sample covers every position here

    def cka(x, y):
        x = x - x.mean(0)
        y = y - y.mean(0)
        return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))

    ours = result.similarity.cka_all
    for i, j in [(0, 1), (1, 3), (2, 4), (0, 4)]:
        assert ours[i, j] == pytest.approx(cka(rep[i], rep[j]), rel=1e-5)
    assert linear_cka(rep[1], rep[2]) == pytest.approx(cka(rep[1], rep[2]), rel=1e-5)


def test_sublayer_scores(result, tiny, ref):
    windows, hf, h = ref
    mids = []
    handles = [layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: mids.append(a[0].clone()))
               for layer in hf.model.layers]
    with torch.no_grad():
        hf(windows)
    for x in handles:
        x.remove()
    for l in range(tiny.n_layers):
        pre, mid, post = h[l][:, 1:], mids[l][:, 1:], h[l + 1][:, 1:]
        attn = 1 - float(F.cosine_similarity(pre, mid, dim=-1).mean())
        mlp = 1 - float(F.cosine_similarity(mid, post, dim=-1).mean())
        ratio = float(((mid - pre).norm(dim=-1) / pre.norm(dim=-1)).mean())
        assert result.sublayers.attn_score[l] == pytest.approx(attn, rel=1e-4)
        assert result.sublayers.mlp_score[l] == pytest.approx(mlp, rel=1e-4)
        assert result.sublayers.attn_norm_ratio[l] == pytest.approx(ratio, rel=1e-4)


def test_round_trip_and_schema(result):
    again = Analysis.from_dict(result.to_dict())
    assert again.perplexity == result.perplexity
    bad = result.to_dict() | {"schema_version": 99}
    from analysis.core.store import SchemaError
    with pytest.raises(SchemaError, match="schema"):
        Analysis.from_dict(bad)


def test_no_tensor_of_a_batch_is_alive_during_the_next(tiny):
    """Memory flat in corpus length (issue 12): every tensor the pass captured for batch i
    (residuals, sublayer outputs, logits) is freed before batch i+1 runs, with all the
    real reducers attached. Checked with weak references, not timing or RSS."""
    import gc
    import weakref

    from analysis.measure.collect import Perplexity, run_pass
    from analysis.measure.lens import LensReducer
    from analysis.measure.similarity import SimilarityReducer
    from analysis.measure.sparsity import SparsityReducer
    from analysis.measure.sublayers import SublayerReducer

    windows = make_windows(tiny.tokenizer, TEXT, 16)
    L = tiny.n_layers

    class Watch:
        sites = ("resid_mid", "attn_out", "mlp_out")

        def __init__(self):
            self.previous, self.batches, self.alive = [], 0, []

        def hooks(self, model, first_repr):  # runs as the next batch's forward starts
            def check(tensor, hook):
                gc.collect()
                self.alive.append(sum(ref() is not None for ref in self.previous))
                return tensor
            return [("blocks.0.hook_resid_pre", check)]

        def update(self, model, batch):
            tensors = batch.resid + batch.resid_mid + batch.attn_out + batch.mlp_out + [batch.logits]
            self.previous = [weakref.ref(t) for t in tensors]
            self.batches += 1

        def result(self):
            return None

    watch = Watch()
    n_repr = windows.shape[0] * (windows.shape[1] - 1)
    reducers = [Perplexity(), SimilarityReducer(L, tiny.d_model, n_repr, windows.shape[0]),
                SublayerReducer(L, False), SparsityReducer(L, tiny.d_mlp),
                LensReducer(L, tiny.bridge.cfg.d_vocab, windows.shape[0]), watch]
    run_pass(tiny, windows, reducers, batch_tokens=3 * windows.shape[1])
    assert watch.batches >= 3
    assert watch.alive == [0] * watch.batches


def test_public_tensor_functions_keep_their_shape_annotations(tiny):
    """jaxtyping + beartype check the annotated shapes at module borders at run time."""
    from beartype import beartype
    from jaxtyping import jaxtyped
    from jaxtyping import TypeCheckError

    from analysis.model import hooks
    from analysis.measure.collect import token_nll
    from analysis.ablate.replay import clean_states, run_blocks

    windows = make_windows(tiny.tokenizer, TEXT, 16)[:2]
    checked = {f.__name__: jaxtyped(typechecker=beartype)(f) for f in (token_nll, hooks.readout, run_blocks,
                                                                       clean_states)}
    with tiny.lock:
        clean = checked["clean_states"](tiny, windows)
        with torch.inference_mode():
            resid = checked["run_blocks"](tiny, clean.resid[1], 1, clean.inputs)
            logits = checked["readout"](tiny, resid)
    nll = checked["token_nll"](logits, windows)
    assert nll.shape == (2, windows.shape[1] - 1)
    with pytest.raises(TypeCheckError):
        checked["token_nll"](logits[:, :-1], windows)  # positions disagree
