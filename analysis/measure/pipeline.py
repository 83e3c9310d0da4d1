"""Run the instrumented pass once and freeze everything it yields into one result.

`analyse()` is what the app and the CLI call: it windows the corpus, runs the single
pass with every reducer attached, and caches the frozen `Analysis` on disk under a key
of model fingerprint + corpus sha256 + settings + schema version. The logit lens (the
slow part) is cached as its own result, so the app can show perplexity and the other
analyses from a lens-free pass first and run the lens only when it is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from analysis.core.results import Result
from analysis.core.kinds import Part
from analysis.core import store
from analysis.measure.collect import Perplexity, run_pass
from analysis.data.corpus import Corpus
from analysis.data.evaluation import windows_for
from analysis.measure.lens import LensReducer, LensResult
from analysis.measure.similarity import SimilarityReducer, SimilarityResult
from analysis.measure.sparsity import SparsityReducer, SparsityResult
from analysis.measure.sublayers import SublayerReducer, SublayerResult

SCHEMA_VERSION = 5  # 4: the lens is cached on its own (kind "lens"); 5: sparsity may be None (MoE)
LENS_SCHEMA_VERSION = 2  # 2: early-exit threshold grids dense near certainty (early_exit.RULES)


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
        store.require_version(data, SCHEMA_VERSION, "Analysis")
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


def _part(part: Part) -> dict:
    """Key fields of a window part: none for "all", so those keys stay what they were."""
    return {} if part == "all" else {"part": part}


ANALYSIS = Result("analysis", SCHEMA_VERSION, Analysis, lane="pass")
LENS = Result("lens", LENS_SCHEMA_VERSION, LensResult, lane="pass")


def analysis_key(model, corpus: Corpus, seq_len: int, max_windows, eps: float, part: Part = "all") -> str:
    """Key of the lens-free part (cache kind "analysis")."""
    return store.make_key(fingerprint=model.fingerprint, corpus=corpus.sha256, seq_len=seq_len,
                          max_windows=max_windows, eps=eps, schema=SCHEMA_VERSION, **_part(part))


def lens_key(model, corpus: Corpus, seq_len: int, max_windows, part: Part = "all") -> str:
    """Key of the logit lens (cache kind "lens"); it does not depend on the sparsity eps."""
    return store.make_key(fingerprint=model.fingerprint, corpus=corpus.sha256, seq_len=seq_len,
                          max_windows=max_windows, schema=LENS_SCHEMA_VERSION, **_part(part))


def analyse(model, corpus: Corpus, seq_len: int, *, max_windows: int | None = None, eps: float = 0.01,
            with_lens: bool = True, use_cache: bool = True, progress=None, batch_tokens: int | None = None,
            part: Part = "all") -> Analysis:
    """The single-pass analysis of `corpus` on `model`, over the `part` of its windows
    (evaluation.part_windows: "all", or the "calibration" windows of the held-out split,
    which is what the app and the CLI analyse when it applies); with_lens=False leaves the
    logit lens out (`lens` is None), which is much faster.

    The lens-free part and the lens are cached on disk separately, so neither is ever
    computed twice: one pass computes whatever is missing (both when nothing is stored,
    only the lens after a lens-free run), and the combined result is the same either way.
    """
    a_key = analysis_key(model, corpus, seq_len, max_windows, eps, part)
    l_key = lens_key(model, corpus, seq_len, max_windows, part)
    base = ANALYSIS.load(a_key) if use_cache else None
    if base is not None and base.model.get("weights") != model.weights:  # stored before the card said it
        base = replace(base, model=base.model | {"weights": model.weights})
    lens = LENS.load(l_key) if use_cache and with_lens else None
    if base is None or (with_lens and lens is None):
        new_base, new_lens = _compute(model, corpus, seq_len, max_windows, eps, base is None,
                                      with_lens and lens is None, progress, batch_tokens, part)
        if use_cache and new_base is not None:
            ANALYSIS.save(a_key, new_base)
        if use_cache and new_lens is not None:
            LENS.save(l_key, new_lens)
        base = base if base is not None else new_base
        lens = lens if lens is not None else new_lens
    return replace(base, lens=lens) if with_lens else base


def _compute(model, corpus: Corpus, seq_len: int, max_windows, eps: float, want_base: bool, want_lens: bool,
             progress, batch_tokens: int | None, part: Part) -> tuple[Analysis | None, LensResult | None]:
    """One instrumented pass with the reducers of the wanted parts: (lens-free Analysis or
    None, LensResult or None)."""
    windows = windows_for(model, corpus, seq_len, max_windows, part)
    bos = model.bos_token_id is not None
    n_repr = windows.shape[0] * (windows.shape[1] - (1 if bos else 0))
    L = model.n_layers
    parts = {}
    if want_base:
        parts |= {"ppl": Perplexity(), "sim": SimilarityReducer(L, model.d_model, n_repr, windows.shape[0]),
                  "sub": SublayerReducer(L, model.parallel_attn_mlp)}
        if not model.moe:
            parts["spa"] = SparsityReducer(L, model.d_mlp, extra_eps=(eps,))
    if want_lens:
        parts["lens"] = LensReducer(L, model.bridge.cfg.d_vocab, windows.shape[0])
    label = "Logit lens pass" if not want_base else "Instrumented pass"
    run_pass(model, windows, list(parts.values()), batch_tokens=batch_tokens, progress=progress, label=label)
    lens = parts["lens"].result() if want_lens else None
    if not want_base:
        return None, lens
    return Analysis(
        schema_version=SCHEMA_VERSION,
        model=model.card() | {"parallel_attn_mlp": model.parallel_attn_mlp, "moe": model.moe},
        corpus=corpus_info(corpus, windows, seq_len, bos) | {"max_windows": max_windows, "part": part},
        perplexity=parts["ppl"].result()["perplexity"],
        similarity=parts["sim"].result(),
        sublayers=parts["sub"].result(),
        sparsity=parts["spa"].result() if "spa" in parts else None,
        lens=None,
        eps=eps,
    ), lens
