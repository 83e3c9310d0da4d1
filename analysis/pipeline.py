"""Run the instrumented pass once and freeze everything it yields into one result.

`analyse()` is what the app and the CLI call: it windows the corpus, runs the single
pass with every reducer attached, and caches the frozen `Analysis` on disk under a key
of model fingerprint + corpus sha256 + settings + schema version.
"""
from __future__ import annotations

from dataclasses import dataclass

from analysis import store
from analysis.collect import Perplexity, run_pass
from analysis.corpus import Corpus, make_windows
from analysis.lens import LensReducer, LensResult
from analysis.similarity import SimilarityReducer, SimilarityResult
from analysis.sparsity import SparsityReducer, SparsityResult
from analysis.sublayers import SublayerReducer, SublayerResult

SCHEMA_VERSION = 4


@dataclass(frozen=True)
class Analysis(store.Record):
    """Everything the one instrumented pass yields, frozen: the model card, the corpus
    (windows, tokens), perplexity and one typed section per analysis."""

    schema_version: int
    model: dict  # LoadedModel.card() + parallel_attn_mlp
    corpus: dict  # corpus_info()
    perplexity: float
    similarity: SimilarityResult
    sublayers: SublayerResult
    sparsity: SparsityResult | None  # None for mixture-of-experts MLPs (architectures.removal_notes)
    lens: LensResult | None
    eps: float  # the absolute sparsity threshold the report quotes

    NESTED = {"similarity": SimilarityResult, "sublayers": SublayerResult, "sparsity": SparsityResult,
              "lens": LensResult}

    @classmethod
    def from_dict(cls, data: dict) -> "Analysis":
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise store.SchemaError(f"Analysis schema version {version!r} is not the supported {SCHEMA_VERSION}.")
        return super().from_dict(data)


def corpus_info(corpus: Corpus, windows, seq_len: int, bos: bool) -> dict:
    return {
        "id": corpus.corpus_id,
        "sha256": corpus.sha256,
        "seq_len": seq_len,
        "n_windows": int(windows.shape[0]),
        "n_predicted_tokens": int(windows.shape[0] * (windows.shape[1] - 1)),
        "bos": bos,
    }


def analysis_key(model, corpus: Corpus, seq_len: int, max_windows, eps: float, with_lens: bool) -> str:
    return store.make_key(fingerprint=model.fingerprint, corpus=corpus.sha256, seq_len=seq_len,
                          max_windows=max_windows, eps=eps, lens=with_lens, schema=SCHEMA_VERSION)


def analyse(model, corpus: Corpus, seq_len: int, *, max_windows: int | None = None, eps: float = 0.01,
            with_lens: bool = True, use_cache: bool = True, progress=None, batch_tokens: int | None = None) -> Analysis:
    """The full single-pass analysis of `corpus` on `model` (cached on disk)."""
    key = analysis_key(model, corpus, seq_len, max_windows, eps, with_lens)
    return store.cached("analysis", key, SCHEMA_VERSION,
                        lambda: _compute(model, corpus, seq_len, max_windows, eps, with_lens, progress, batch_tokens),
                        to_dict=Analysis.to_dict, from_dict=Analysis.from_dict, use_cache=use_cache)


def _compute(model, corpus: Corpus, seq_len: int, max_windows, eps: float, with_lens: bool, progress,
             batch_tokens: int | None) -> Analysis:
    windows = make_windows(model.tokenizer, corpus.text, seq_len, model.n_ctx, max_windows)
    bos = model.bos_token_id is not None
    n_repr = windows.shape[0] * (windows.shape[1] - (1 if bos else 0))
    L = model.n_layers
    ppl = Perplexity()
    sim = SimilarityReducer(L, model.d_model, n_repr, windows.shape[0])
    sub = SublayerReducer(L, model.parallel_attn_mlp)
    spa = None if model.moe else SparsityReducer(L, model.d_mlp, extra_eps=(eps,))
    reducers = [r for r in (ppl, sim, sub, spa) if r is not None]
    lens = None
    if with_lens:
        lens = LensReducer(L, model.bridge.cfg.d_vocab, windows.shape[0])
        reducers.append(lens)
    run_pass(model, windows, reducers, batch_tokens=batch_tokens, progress=progress)
    return Analysis(
        schema_version=SCHEMA_VERSION,
        model=model.card() | {"parallel_attn_mlp": model.parallel_attn_mlp, "moe": model.moe},
        corpus=corpus_info(corpus, windows, seq_len, bos) | {"max_windows": max_windows},
        perplexity=ppl.result()["perplexity"],
        similarity=sim.result(),
        sublayers=sub.result(),
        sparsity=spa.result() if spa else None,
        lens=lens.result() if lens else None,
        eps=eps,
    )
