"""Timing of the playground for `python -m analysis bench --parts toggle`: a single
toggle against a full forward, and the click-to-exact path against its floor. Timing is
printed, never tested."""
from __future__ import annotations

import random
import statistics
import time

import torch

from analysis.measure.collect import batches, token_nll
from analysis.model.removal import KINDS, Removal
from analysis.playground.live import Playground


def bench_toggles(model, windows: torch.Tensor, full_every: int = 6, seed: int = 0) -> tuple[float, float]:
    """(median seconds of a single toggle from a warm playground, over every one of the 3L
    single removals in a random order; median seconds of one full bridge forward + loss
    over the same windows, timed after every `full_every`-th toggle so that a change in
    machine load hits both sides alike). Timing is printed, never tested."""
    playground = Playground(model, windows).build()
    L = model.n_layers
    singles = [Removal.of(**{kind: [l]}) for kind in KINDS for l in range(L)]
    random.Random(seed).shuffle(singles)

    def full_forward() -> None:
        for _, chunk in batches(windows, playground.batch_tokens):
            with model.lock, torch.inference_mode():
                token_nll(model.bridge(chunk.to(model.device), return_type="logits"), chunk)

    playground.evaluate(singles[-1], memo=False)  # warm-up
    full_forward()
    toggles, full = [], []
    for i, removal in enumerate(singles):
        start = time.perf_counter()
        playground.evaluate(removal, memo=False)
        toggles.append(time.perf_counter() - start)
        if i % full_every == 0:
            start = time.perf_counter()
            full_forward()
            full.append(time.perf_counter() - start)
    return statistics.median(toggles), statistics.median(full)


# the browser test's clicks (tests/e2e/test_live.py): each adds one layer to the removal
CLICKS = [("blocks", 20), ("attn", 9), ("mlp", 25), ("blocks", 26), ("attn", 17), ("mlp", 12), ("blocks", 14),
          ("attn", 3), ("mlp", 28), ("blocks", 8)]


def bench_exact(model, windows: torch.Tensor) -> dict:
    """Medians over the browser test's 10 clicks (CLICKS, layers modulo L), each adding a
    layer to the removal, on a playground laid out as the app's shared one: seconds from
    a request to the first estimate ("first"), to the exact number ("exact"), and of its
    floor ("floor": the same removal's blocks from the same restart point and the readout
    over all windows, in one batch); and the estimate 1 s after the request
    ("windows_at_1s": over how many windows, median) against the exact number: "width"
    (the median of the larger of 1 - low/exact and high/exact - 1), "widest" and
    "covered" (how many intervals held the exact number). Timing is printed, never tested."""
    playground = Playground(model, windows).build()  # laid out as the shared one, with a private memo
    floor = Playground(model, windows, batch_tokens=windows.numel(), sample_size=windows.shape[0]).build()
    L = model.n_layers
    removed: dict = {kind: [] for kind in KINDS}
    chosen = []
    for kind, layer in CLICKS:
        removed[kind].append(layer % L)
        chosen.append(Removal.of(**removed))
    playground.evaluate(Removal.of(mlp=[L - 1]))  # warm-up
    floor.evaluate(Removal.of(mlp=[L - 1]))
    firsts, exacts, floors, widths, covered, seen = [], [], [], [], 0, []
    for removal in chosen:
        start = time.perf_counter()
        job = playground.request(removal)
        job.wait(windows=1)
        firsts.append(time.perf_counter() - start)
        job.wait(windows=job.n_windows, timeout=max(0.0, 1.0 - (time.perf_counter() - start)))
        estimate = job.snapshot()  # what the page shows 1 s after the request
        seen.append(estimate.windows_done)
        job.wait(windows=job.n_windows)
        exacts.append(time.perf_counter() - start)
        start = time.perf_counter()
        floor.group_nll(0, removal, lambda *a: None)
        floors.append(time.perf_counter() - start)  # the floor keeps its own streams, as the playground does
        value = job.snapshot().perplexity
        widths.append(max(1 - estimate.low / value, estimate.high / value - 1))
        covered += estimate.low <= value <= estimate.high
    return {"first": statistics.median(firsts), "exact": statistics.median(exacts),
            "floor": statistics.median(floors), "width": statistics.median(widths), "widest": max(widths),
            "covered": covered, "toggles": len(widths), "sample": len(playground.groups[0]),
            "windows_at_1s": statistics.median(seen)}
