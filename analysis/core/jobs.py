"""Background jobs: long work (healing, the removal sweep, curves, long generations) that
runs in the server process, not in a browser session, so it survives page changes,
reloads and second tabs.

`submit(key, fn, label=..., lane=...)` is single-flight: a second request for the same
key gets the job already queued, running or done (with its progress), not a second
computation. `fn(ctx)` receives a `JobContext` with `progress(fraction, message)`,
`check_cancelled()` (cooperative cancellation: it raises `Cancelled`) and
`update(**details)` for partial data a page may show while the job runs (a loss
curve); `submit(..., details=...)` gives a job its first details (what it works on, so a
page can list it). A finished result goes through the disk cache (`store.save` under the job's
kind and key), so a reload, another session or a restarted server finds it at once
(`lookup`). Each lane runs at most `limit` jobs at a time (one healing job per server);
the others wait in order and know their position. Jobs never hold a model's lock for
their whole run: analysis code takes it per batch, so interactive work interleaves.

Time left is estimated from measured progress only: the rate between the first
progress report (after the first batch, so start-up costs are left out) and the last.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from analysis.core.kinds import Lane
from analysis.core import caches, store
from analysis.core.progress import Eta, format_duration

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
LANE_LIMITS: dict[Lane, int] = {"heal": 1, "sweep": 1, "pass": 2, "playground": 2}  # concurrent jobs per lane; other lanes: DEFAULT_LIMIT
DEFAULT_LIMIT = 1
KEEP_FINISHED = 32  # finished jobs remembered in memory (results also live on disk)


class Cancelled(Exception):
    """Raised inside a job by `JobContext.check_cancelled()` once cancel was requested."""


def _identity(value):
    return value


@dataclass(frozen=True)
class Persist:
    """How a job's result is stored in the disk cache: `store.save(kind, key, schema_version,
    to_dict(result))`, read back with `from_dict` (a stale or damaged entry is ignored)."""

    kind: str = "job"
    schema_version: int = 1
    to_dict: Callable = _identity
    from_dict: Callable = _identity
    save: bool = True  # False: the job's function caches its own result (e.g. through store.cached)


class JobContext:
    """What a job function gets: progress, cancellation and partial details."""

    def __init__(self, job: "Job") -> None:
        self._job = job

    def check_cancelled(self) -> None:
        if self._job._cancel.is_set():
            raise Cancelled(f"{self._job.label} was cancelled")

    @property
    def cancelled(self) -> bool:
        return self._job._cancel.is_set()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1) with a message; also a cancellation point."""
        self.check_cancelled()
        self._job._report(fraction, message)

    def update(self, **details) -> None:
        """Publish partial data (e.g. the loss curve so far) for pages to show."""
        with self._job._changed:
            self._job.details.update(details)


@dataclass(eq=False)
class Job:
    key: str
    label: str
    lane: Lane
    persist: Persist
    fn: Callable | None = None
    state: str = QUEUED
    fraction: float = 0.0
    message: str = ""
    details: dict = field(default_factory=dict)
    result: object = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)  # what a failed job raised
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    from_disk: bool = False
    _registry: "Registry | None" = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _eta: Eta = field(default_factory=Eta, repr=False)

    @property
    def id(self) -> str:
        return f"{self.persist.kind}-{self.key}"

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    @property
    def position(self) -> int | None:
        """1-based place in its lane's queue while queued, else None."""
        return self._registry.position(self) if self._registry is not None and self.state == QUEUED else None

    def _report(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        with self._changed:
            self.fraction = min(1.0, max(0.0, float(fraction)))
            self.message = str(message)
            self._eta.report(self.fraction, now)
            self._changed.notify_all()

    def time_left(self) -> float | None:
        """Seconds left at the measured rate (see `Eta`); None until it is known."""
        return self._eta.left(time.monotonic()) if self.state == RUNNING else None

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def cancel(self) -> None:
        """Ask the job to stop: a queued job is dropped at once, a running one stops at
        its next cancellation point; a finished job is left as it is."""
        self._cancel.set()
        if self._registry is not None:
            self._registry._drop_queued(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (True) or the timeout passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.done, timeout)

    def _finish(self, state: str, *, result=None, error: str | None = None,
                exception: BaseException | None = None) -> None:
        with self._changed:
            self.state, self.result, self.error, self.exception = state, result, error, exception
            self.finished = time.time()
            if state == DONE:
                self.fraction = 1.0
            self.fn = None
            self._changed.notify_all()

    def status_text(self) -> str:
        """One line: the state, queue position or progress, and time left."""
        if self.state == QUEUED:
            return f"queued, position {self.position or '?'}"
        if self.state == RUNNING:
            left = self.time_left()
            eta = f", about {format_duration(left)} left" if left is not None else ", estimating time left"
            return f"{self.fraction:.0%}{eta}" + (f": {self.message}" if self.message else "")
        if self.state == FAILED:
            return f"failed: {self.error}"
        return self.state


def describe_error(err: BaseException) -> str:
    """A clear one-line message for a failed job."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, MemoryError):
        return "out of memory" + (f": {text}" if text else "")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Registry:
    """All jobs of this server process, by (kind, key); one queue per lane."""

    def __init__(self, limits: dict | None = None) -> None:
        self.limits = dict(LANE_LIMITS if limits is None else limits)
        self._jobs: dict[tuple, Job] = {}
        self._queues: dict[str, list[Job]] = {}
        self._running: dict[str, list[Job]] = {}
        self._lock = threading.RLock()

    def limit(self, lane: Lane) -> int:
        return max(1, int(self.limits.get(lane, DEFAULT_LIMIT)))

    def _from_disk(self, key: str, persist: Persist) -> Job | None:
        if not persist.save:
            return None
        data = store.load(persist.kind, key, persist.schema_version)
        if data is None:
            return None
        try:
            result = persist.from_dict(data)
        except (store.SchemaError, KeyError, TypeError, ValueError):
            return None  # stale or damaged: as if missing
        job = Job(key, "", "", persist, state=DONE, fraction=1.0, result=result, from_disk=True, _registry=self)
        job.finished = time.time()
        return job

    def lookup(self, key: str, persist: Persist = Persist()) -> Job | None:
        """The job for `key` in memory (any state), else its finished result from disk, else None."""
        with self._lock:
            job = self._jobs.get((persist.kind, key))
            if job is not None:
                return job
            job = self._from_disk(key, persist)
            if job is not None:
                self._jobs[(persist.kind, key)] = job
                self._forget_old()
            return job

    def submit(self, key: str, fn: Callable, *, label: str, lane: Lane = "default",
               persist: Persist = Persist(), details: dict | None = None) -> Job:
        """The job for `key`: the one queued, running or done (in memory or on disk), or a
        new one running `fn(ctx)` (also after an earlier one failed or was cancelled),
        starting with `details`."""
        with self._lock:
            job = self.lookup(key, persist)
            if job is not None and job.state in (QUEUED, RUNNING, DONE):
                return job
            job = Job(key, label, lane, persist, fn=fn, details=dict(details or {}), _registry=self)
            self._jobs[(persist.kind, key)] = job
            self._queues.setdefault(lane, []).append(job)
            self._start_next(lane)
            return job

    def position(self, job: Job) -> int | None:
        with self._lock:
            queue = self._queues.get(job.lane, [])
            return queue.index(job) + 1 if job in queue else None

    def active(self) -> list[Job]:
        """Running jobs, then queued ones in queue order."""
        with self._lock:
            running = [j for jobs in self._running.values() for j in jobs]
            queued = [j for queue in self._queues.values() for j in queue]
            return sorted(running, key=lambda j: j.started or 0) + queued

    def recent(self, kind: str | None = None) -> list[Job]:
        """Every job in memory (of `kind` when given), newest first."""
        with self._lock:
            return sorted((j for j in self._jobs.values() if kind is None or j.persist.kind == kind),
                          key=lambda j: j.submitted, reverse=True)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.id == job_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def clear(self) -> None:
        """Forget every finished job (running and queued ones stay): what a restarted
        server knows, apart from live work."""
        with self._lock:
            self._jobs = {k: j for k, j in self._jobs.items() if not j.done}

    def _drop_queued(self, job: Job) -> None:
        with self._lock:
            queue = self._queues.get(job.lane, [])
            if job in queue:
                queue.remove(job)
                job._finish(CANCELLED)

    def _start_next(self, lane: Lane) -> None:
        with self._lock:
            queue, running = self._queues.setdefault(lane, []), self._running.setdefault(lane, [])
            while queue and len(running) < self.limit(lane):
                job = queue.pop(0)
                running.append(job)
                with job._changed:
                    job.state, job.started = RUNNING, time.time()
                threading.Thread(target=self._run, args=(job,), daemon=True, name=f"job-{job.id}").start()

    def _run(self, job: Job) -> None:
        try:
            ctx = JobContext(job)
            ctx.check_cancelled()
            result = job.fn(ctx)  # once it has returned, the result is kept even if cancel came late
            if job.persist.save:
                store.save(job.persist.kind, job.key, job.persist.schema_version, job.persist.to_dict(result))
            job._finish(DONE, result=result)
        except Cancelled:
            job._finish(CANCELLED)
        except BaseException as err:  # noqa: BLE001 - the job reports it; the server goes on
            traceback.print_exc()
            job._finish(FAILED, error=describe_error(err), exception=err)
        finally:
            with self._lock:
                running = self._running.get(job.lane, [])
                if job in running:
                    running.remove(job)
                self._start_next(job.lane)
                self._forget_old()

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.finished or 0)
        for job in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            self._jobs.pop((job.persist.kind, job.key), None)


REGISTRY = caches.register("core.jobs.registry", Registry())  # clear() forgets finished jobs only


def submit(key: str, fn: Callable, *, label: str, lane: Lane = "default", persist: Persist = Persist(),
           details: dict | None = None) -> Job:
    return REGISTRY.submit(key, fn, label=label, lane=lane, persist=persist, details=details)


def lookup(key: str, persist: Persist = Persist()) -> Job | None:
    return REGISTRY.lookup(key, persist)
