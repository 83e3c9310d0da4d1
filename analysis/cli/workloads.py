"""The two workloads the benchmarks time, shared by `bench` and its size ladder (`scale`),
so neither module imports the other: a bare Hugging Face forward and the instrumented
pass with every reducer (and the logit lens when asked)."""
from __future__ import annotations

import torch

from analysis.measure.collect import Perplexity, batches, run_pass
from analysis.measure.lens import LensReducer
from analysis.measure.similarity import SimilarityReducer
from analysis.measure.sparsity import SparsityReducer
from analysis.measure.sublayers import SublayerReducer


def bare_forward(hf, windows, batch_tokens: int) -> None:
    with torch.inference_mode():
        for _, chunk in batches(windows, batch_tokens):
            hf(chunk).logits


def instrumented(model, windows, with_lens: bool) -> None:
    L = model.n_layers
    n_repr = windows.shape[0] * (windows.shape[1] - 1)
    reducers = [Perplexity(), SimilarityReducer(L, model.d_model, n_repr, windows.shape[0]),
                SublayerReducer(L, model.parallel_attn_mlp), SparsityReducer(L, model.d_mlp)]
    if with_lens:
        reducers.append(LensReducer(L, model.bridge.cfg.d_vocab, windows.shape[0]))
    run_pass(model, windows, reducers)
