"""One description of each kind of stored result, so that reading it, computing it with
the disk cache, and running it as a background job are written once.

A `Result` names the store kind, its schema version, its record class (with `to_dict`
and `from_dict`) and the job lane that computes it. The module that defines a record
declares its Result (sweep.REMOVAL, greedy.GREEDY, curves_run.CURVES, pipeline.LENS,
heal.run.HEAL); the CLI, the app and the jobs all go through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analysis.core import jobs, store
from analysis.core.kinds import Lane


@dataclass(frozen=True)
class Result:
    kind: str
    schema: int
    record: type
    lane: Lane = "default"

    @property
    def persist(self) -> jobs.Persist:
        return jobs.Persist(self.kind, self.schema, self.record.to_dict, self.record.from_dict)

    def load(self, key: str):
        """The stored record for `key`, or None (missing, stale or damaged); computes nothing."""
        return store.load_record(self.kind, key, self.schema, self.record.from_dict)

    def save(self, key: str, record) -> None:
        store.save(self.kind, key, self.schema, record.to_dict())

    def cached(self, key: str, compute: Callable[[], object], use_cache: bool = True):
        """The stored record for `key`, else `compute()`, stored (store.cached)."""
        return store.cached(self.kind, key, self.schema, compute, to_dict=self.record.to_dict,
                            from_dict=self.record.from_dict, use_cache=use_cache)

    def lookup(self, key: str) -> jobs.Job | None:
        """The background job for `key`: queued, running, or finished (in memory or on disk)."""
        return jobs.lookup(key, self.persist)

    def submit(self, key: str, fn: Callable, *, label: str, details: dict | None = None) -> jobs.Job:
        """Start (or join) `fn(job)` for `key` as a background job in this result's lane."""
        return jobs.submit(key, fn, label=label, lane=self.lane, persist=self.persist, details=details)
