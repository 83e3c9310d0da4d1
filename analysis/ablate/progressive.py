"""Progressive evaluation of a removal: a running perplexity estimate that refines to the
exact corpus number without blocking the caller (issue 30).

A playground's windows sit in groups (its clean states, `live.Playground`): first a
small stratified sample (one window from each of a few equal stretches of the corpus,
which for the built-in corpus means from different genres), then the rest in groups as
large as the memory budget allows, each spread over the corpus. A removal is evaluated
group by group, the sample first and the rest in an order fixed per corpus, by one worker
thread per playground. A group's per-token losses arrive in chunks of a few windows
(its readout runs chunk by chunk), and a new request stops the running group between two
blocks or two chunks: what is done stays with its evaluation and the rest resumes when
that removal is asked for again.

Until every window is done the estimate uses the full model's per-window loss as a
control variate: exp(full model's mean NLL over all windows + mean over the windows done
of (pruned - full) per-window NLL), with a 95% interval from the standard error of those
per-window differences (finite-population corrected, `evaluation.mean_interval`). A hard
window stays hard after a removal, so the differences vary far less than the losses.
The complete result is exact and goes into the shared memo.
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
    """One removal's per-window losses, filled in window chunk by chunk by the worker.
    `baseline` (the full model's mean NLL per window, all windows) is the control
    variate of the estimate; without it the estimate is the plain mean of the windows done."""

    def __init__(self, removal: Removal, n_windows: int, baseline: np.ndarray | None = None) -> None:
        self.removal = removal
        self.n_windows = n_windows
        self.baseline = None if baseline is None else np.asarray(baseline, dtype=np.float64)
        self.rows: np.ndarray | None = None  # [n_windows, T-1] once the first chunk is in
        self.done = np.zeros(n_windows, dtype=bool)
        self.error: BaseException | None = None
        self.requested = time.monotonic()
        self.first_seconds: float | None = None  # from the request to the first estimate (backend time)
        self.exact_seconds: float | None = None  # from the request to the exact number
        self._changed = threading.Condition()

    def add(self, windows, nll: np.ndarray) -> None:
        """Per-token losses [len(windows), T-1] of the corpus windows `windows`."""
        nll = np.asarray(nll, dtype=np.float64)
        with self._changed:
            if self.rows is None:
                self.rows = np.zeros((self.n_windows, nll.shape[1]), dtype=np.float64)
            self.rows[windows] = nll
            self.done[windows] = True
            if self.first_seconds is None:
                self.first_seconds = time.monotonic() - self.requested
            if self.exact_seconds is None and self.done.all():
                self.exact_seconds = time.monotonic() - self.requested
            self._changed.notify_all()

    def fail(self, err: BaseException) -> None:
        with self._changed:
            self.error = err
            self._changed.notify_all()

    @property
    def windows_done(self) -> int:
        return int(self.done.sum())

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def wait(self, *, windows: int = 1, timeout: float | None = None) -> bool:
        """Block until at least `windows` windows (or all) are in, or the timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.error is not None or self.windows_done >= min(windows, self.n_windows), timeout)

    def snapshot(self) -> Snapshot | None:
        if self.error is not None:
            raise self.error
        with self._changed:
            if self.rows is None:
                return None
            done = self.done.copy()
            per_window = self.rows[done].mean(axis=1)  # equal-length windows: the mean of means is the token mean
        total, n = self.n_windows, int(done.sum())
        if n == total or self.baseline is None:
            mean, low, high = mean_interval(per_window, total)
        else:
            shift = float(self.baseline.mean())
            mean, low, high = (shift + v for v in mean_interval(per_window - self.baseline[done], total))
        return Snapshot(math.exp(mean), math.exp(low), math.exp(high), n, total)

    def nll(self) -> np.ndarray:
        """[n_windows, T-1] in corpus order (complete evaluations only)."""
        return self.rows


def seeded(key, salt: str = "") -> np.random.Generator:
    """A random generator fixed per corpus (and model/windows): seeded by the key."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256((repr(key) + salt).encode()).digest()[:8], "little"))


def sample_windows(key, n_windows: int, size: int) -> np.ndarray:
    """The first windows every removal is evaluated on: one window drawn from each of
    `size` equal stretches of the corpus (stratified by position, hence by genre in the
    built-in corpus), fixed per key."""
    size = min(size, n_windows)
    rng = seeded(key, "sample")
    return np.array(sorted(int(rng.choice(stretch)) for stretch in np.array_split(np.arange(n_windows), size)),
                    dtype=np.int64)


def group_windows(key, n_windows: int, sample_size: int, group_size: int) -> list[np.ndarray]:
    """Window indices of each group of clean states: the stratified sample first (in two
    halves, every other stretch, when it has 4 windows or more and is not every window: the
    first estimate then comes from half of it, still spread over the whole corpus), then
    the other windows in groups of at most `group_size`, each group every n-th of them
    (spread over the corpus), the groups in an order fixed per key."""
    sample = sample_windows(key, n_windows, sample_size)
    rest = np.setdiff1d(np.arange(n_windows), sample)
    n_groups = math.ceil(rest.size / max(1, group_size))
    groups = [rest[g::n_groups] for g in seeded(key, "groups").permutation(n_groups)] if rest.size else []
    return ([sample[0::2], sample[1::2]] if 4 <= sample.size < n_windows else [sample]) + groups


class Scheduler:
    """The worker of one playground, one group at a time; finished evaluations go to the
    playground's memo. Each requester (a browser session: `owner`) is served its most
    recent removal first, and requesters take turns group by group (the one served least
    recently first), so a session that keeps clicking cannot starve the others (issue 31's
    soak). Requests that their owner has since replaced run last, most recent first. A new
    request stops the group being computed (between two blocks or readout chunks), so it
    is served at once."""

    def __init__(self, playground) -> None:
        self.playground = playground
        self._recent: list[Progressive] = []  # most recent last
        self._latest: dict = {}  # owner -> its most recent request
        self._served: dict = {}  # owner -> turn number when last served
        self._turns = itertools.count()
        self._changes = 0  # bumped by every request that changes what should run
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def request(self, removal: Removal, owner=None) -> Progressive:
        with self._lock:
            job = next((j for j in self._recent if j.removal == removal), None)
            if job is None:
                job = Progressive(removal, self.playground.windows.shape[0], self.playground.window_loss)
            if self._latest.get(owner) is not job:  # a new click (a rerun asking again for the same does not preempt)
                self._changes += 1
            if job in self._recent:
                self._recent.remove(job)
            self._recent.append(job)
            self._latest[owner] = job
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, daemon=True, name="playground-progressive")
                self._worker.start()
        return job

    def _next(self) -> tuple[Progressive, int, int] | None:
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
            group = next(g for g, windows in enumerate(self.playground.groups) if not job.done[windows].all())
            return job, group, self._changes

    def _run(self) -> None:
        while (item := self._next()) is not None:
            job, group, changes = item

            def check(changes=changes) -> None:
                if self._changes != changes:
                    raise Preempted

            try:
                self.playground.group_nll(group, job.removal, job.add, job.done, check=check)
            except Preempted:
                continue
            except BaseException as err:  # the page shows it; the worker goes on with others
                job.fail(err)
                continue
            if job.complete:
                self.playground.remember(job.removal, job.nll())


class Preempted(Exception):
    """A newer request stopped the group being computed."""
