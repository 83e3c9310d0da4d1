"""Progressive evaluation of a removal: a running perplexity estimate that refines to the
exact corpus number without blocking the caller.

A playground's windows sit in small batches (its clean states). A removal's batches are
evaluated in an order fixed per corpus (a permutation seeded by the playground key, so
the first batches are a random sample of the corpus, the same for every removal), by one
worker thread per playground that always works on the most recently requested removal:
a new toggle is served after at most one batch of the previous one. Until every window
is done the estimate is exp(mean per-window NLL) with a 95% interval from the standard
error of the per-window means on the log scale (`evaluation.mean_interval`, with the
finite-population correction);
the complete result is exact and goes into the shared memo.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from analysis.data.corpus import plural
from analysis.data.evaluation import mean_interval
from analysis.model.removal import Removal


@dataclass(frozen=True)
class Snapshot:
    """Where an evaluation stands: `perplexity` is exact when `complete`, else an estimate."""

    perplexity: float
    low: float  # 95% interval (equal to perplexity when complete)
    high: float
    windows_done: int
    windows_total: int

    @property
    def complete(self) -> bool:
        return self.windows_done == self.windows_total

    def label(self) -> str:
        if self.complete:
            return "exact over " + ("the only window" if self.windows_total == 1 else f"all {self.windows_total} windows")
        return (f"estimate ({self.windows_done} of {plural(self.windows_total, 'window')}), "
                f"95% interval {self.low:.3f} to {self.high:.3f}")


class Progressive:
    """One removal's per-window losses, filled in batch by batch by the worker."""

    def __init__(self, removal: Removal, n_batches: int, n_windows: int) -> None:
        self.removal = removal
        self.parts: dict[int, np.ndarray] = {}  # batch index -> [windows of that batch, T-1]
        self.n_batches, self.n_windows = n_batches, n_windows
        self.error: BaseException | None = None
        self.requested = time.monotonic()
        self.first_seconds: float | None = None  # from the request to the first estimate (backend time)
        self._changed = threading.Condition()

    def add(self, batch: int, nll: np.ndarray) -> None:
        with self._changed:
            self.parts[batch] = np.asarray(nll, dtype=np.float64)
            if self.first_seconds is None:
                self.first_seconds = time.monotonic() - self.requested
            self._changed.notify_all()

    def fail(self, err: BaseException) -> None:
        with self._changed:
            self.error = err
            self._changed.notify_all()

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.n_batches

    def wait(self, *, batches: int = 1, timeout: float | None = None) -> bool:
        """Block until at least `batches` batches (or all) are in, or the timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.error is not None or len(self.parts) >= min(batches, self.n_batches), timeout)

    def snapshot(self) -> Snapshot | None:
        if self.error is not None:
            raise self.error
        with self._changed:
            parts = [self.parts[b] for b in sorted(self.parts)]
        if not parts:
            return None
        nll = np.concatenate(parts).astype(np.float64)
        per_window = nll.mean(axis=1)  # equal-length windows: the mean of means is the token mean
        total = self.n_windows
        mean, low, high = mean_interval(per_window, total)
        return Snapshot(math.exp(mean), math.exp(low), math.exp(high), min(per_window.shape[0], total), total)

    def nll(self) -> np.ndarray:
        """[n_windows, T-1] in corpus order (complete evaluations only)."""
        return np.concatenate([self.parts[b] for b in range(self.n_batches)])


def batch_order(key, n_batches: int) -> list[int]:
    """A permutation of the batches fixed per corpus (and model/windows): seeded by the key."""
    seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
    return np.random.default_rng(seed).permutation(n_batches).tolist()


class Scheduler:
    """The worker of one playground, one batch at a time; finished evaluations go to the
    playground's memo. Each requester (a browser session: `owner`) is served its most
    recent removal first, and requesters take turns batch by batch (the one served least
    recently first), so a session that keeps clicking cannot starve the others (issue 31's
    soak: before, one session made 110 toggles in 10 minutes while three waited on their
    first). Requests that their owner has since replaced run last, most recent first."""

    def __init__(self, playground) -> None:
        self.playground = playground
        self.order = batch_order(playground.key, len(playground.states))
        self._recent: list[Progressive] = []  # most recent last
        self._latest: dict = {}  # owner -> its most recent request
        self._served: dict = {}  # owner -> turn number when last served
        self._turns = itertools.count()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def request(self, removal: Removal, owner=None) -> Progressive:
        with self._lock:
            job = next((j for j in self._recent if j.removal == removal), None)
            if job is None:
                job = Progressive(removal, len(self.playground.states), self.playground.windows.shape[0])
            else:
                self._recent.remove(job)
            self._recent.append(job)
            self._latest[owner] = job
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, daemon=True, name="playground-progressive")
                self._worker.start()
        return job

    def _next(self) -> tuple[Progressive, int] | None:
        with self._lock:
            self._recent = [j for j in self._recent if not j.complete and j.error is None]
            self._latest = {o: j for o, j in self._latest.items() if not j.complete and j.error is None}
            if not self._recent:
                self._worker = None
                return None
            if self._latest:
                owner = min(self._latest, key=lambda o: self._served.get(o, -1))
                self._served[owner] = next(self._turns)
                job = self._latest[owner]
            else:
                job = self._recent[-1]
            return job, next(b for b in self.order if b not in job.parts)

    def _run(self) -> None:
        while (item := self._next()) is not None:
            job, batch = item
            try:
                job.add(batch, self.playground._batch_nll(self.playground.states[batch], job.removal))
            except BaseException as err:  # the page shows it; the worker goes on with others
                job.fail(err)
                continue
            if job.complete:
                self.playground.remember(job.removal, job.nll())
