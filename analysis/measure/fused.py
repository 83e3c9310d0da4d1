"""Fused reductions: one function, compiled by `torch.compile` where that works, run
eagerly where it does not.

The instrumented pass reduces big tensors ([tokens, d_mlp] per layer for sparsity,
[rows, vocabulary] per layer for the logit lens) with a dozen comparisons and sums
each. Eagerly every one is a pass over memory; compiled, Inductor fuses them into one or
two loops that read the tensor once (bench, default model: sparsity counting 0.20 s ->
0.05 s per pass, the lens' per-layer statistics 0.5 s -> 0.11 s per 128-row chunk).

`@fused(examples=...)` returns a callable that compiles `fn` (dynamic shapes, so one compile serves
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
import time
from typing import Callable

import torch

log = logging.getLogger(__name__)


def enabled() -> bool:
    return os.environ.get("LAYERLAB_COMPILE", "1") != "0"


class Fused:
    """`fn`, compiled on first use when enabled; eager `fn` after a failed compile.
    `examples()` gives small argument tuples that exercise every shape variant `fn` is
    compiled for (warm_up calls `fn` on each)."""

    def __init__(self, fn: Callable, examples: Callable[[], list]) -> None:
        self.fn = fn
        self.examples = examples
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


KERNELS: list = []  # every fused function, registered by the module defining it (warm_up, failures)


def fused(*, examples: Callable[[], list]) -> Callable[[Callable], Fused]:
    """Decorator: register `fn` as a fused reduction with its example inputs (a function
    returning a list of argument tuples; called only by warm_up)."""
    def register(fn: Callable) -> Fused:
        KERNELS.append(Fused(fn, examples))
        return KERNELS[-1]
    return register


def failures() -> str:
    """Why compiling failed, for each fused function that runs eagerly ('' when none)."""
    return "; ".join(f"{k.__name__}: {k.failed}" for k in KERNELS if k.failed)


def warm_up() -> float:
    """Compile every registered fused reduction once on its small example inputs (the
    compiled code lands in the on-disk cache, so the first instrumented pass of a later
    process does not compile); returns the seconds spent. The kernels are those of the
    modules imported so far: `python -m analysis prepare` imports the instrumented
    pass (measure.pipeline) first."""
    start = time.perf_counter()
    with torch.inference_mode():
        for kernel in KERNELS:
            for args in kernel.examples():
                kernel(*args)
    return time.perf_counter() - start
