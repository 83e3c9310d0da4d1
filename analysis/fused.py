"""Fused reductions: one function, compiled by `torch.compile` where that works, run
eagerly where it does not.

The instrumented pass reduces big tensors ([tokens, d_mlp] per layer for sparsity,
[rows, vocabulary] per layer for the logit lens) with a dozen comparisons and sums
each. Eagerly every one is a pass over memory; compiled, Inductor fuses them into one or
two loops that read the tensor once (bench, default model: sparsity counting 0.20 s ->
0.05 s per pass, the lens' per-layer statistics 0.5 s -> 0.11 s per 128-row chunk).

`fused(fn)` returns a callable that compiles `fn` (dynamic shapes, so one compile serves
every batch size and width) on its first call and falls back to calling `fn` eagerly,
for good, when compiling fails (no C++ compiler, an unsupported backend) or when
LAYERLAB_COMPILE=0. Both paths compute the same numbers (tests compare them). Compiled
code is cached on disk by Inductor for every process on the machine
(/tmp/torchinductor_<user>; TORCHINDUCTOR_CACHE_DIR moves it): the first compile on a
machine takes 15-30 s (`python -m analysis prepare` does it), later processes load it in
a few seconds.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import torch

log = logging.getLogger(__name__)


def enabled() -> bool:
    return os.environ.get("LAYERLAB_COMPILE", "1") != "0"


class Fused:
    """`fn`, compiled on first use when enabled; eager `fn` after a failed compile."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.compiled: Callable | None = None
        self.failed: str | None = None  # why compiling failed, once it has
        self._lock = threading.Lock()
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def _compiled(self) -> Callable:
        with self._lock:
            if self.compiled is None:
                self.compiled = torch.compile(self.fn, dynamic=True)
            return self.compiled

    def __call__(self, *args):
        if self.failed is not None or not enabled():
            return self.fn(*args)
        try:
            return self._compiled()(*args)
        except Exception as err:  # compile or codegen failure: the eager function gives the same numbers
            self.failed = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            log.warning("torch.compile of %s failed (%s); running it eagerly from now on", self.__name__, self.failed)
            return self.fn(*args)


KERNELS: list = []  # every fused function, for warm_up and failures


def fused(fn: Callable) -> Fused:
    KERNELS.append(Fused(fn))
    return KERNELS[-1]


def failures() -> str:
    """Why compiling failed, for each fused function that runs eagerly ('' when none)."""
    return "; ".join(f"{k.__name__}: {k.failed}" for k in KERNELS if k.failed)


def warm_up() -> float:
    """Compile every fused reduction once on small inputs (the compiled code lands in the
    on-disk cache, so the first instrumented pass of a later process does not compile);
    returns the seconds spent. `python -m analysis prepare` calls this."""
    import time

    from analysis.lens import readout_signals
    from analysis.sparsity import EPS_GRID, P_GRID, threshold_counts
    from analysis.sublayers import layer_sums

    start = time.perf_counter()
    x = torch.randn(2, 5, 7)
    with torch.inference_mode():
        threshold_counts(x, EPS_GRID, P_GRID)
        layer_sums(x, x + 1, x + 2, x, x)
        layer_sums(x, None, x + 2, x, x)
        logits, index = torch.randn(5, 11), torch.arange(5)
        probs = logits.softmax(-1)
        readout_signals(logits, index, index, probs, probs.sum(-1))
    return time.perf_counter() - start
