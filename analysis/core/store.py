"""The IO primitives: disk cache for computed results, atomic writes, a small LRU.

Entries live in cache/results/<kind>-<key>.json, keyed by model fingerprint + corpus
sha256 + settings + result schema version. Every entry repeats its key and schema
version inside; a corrupt, truncated or stale entry is treated as missing (and later
replaced), never trusted: `cached(...)` is the one compute-or-load. Files and whole
directories are written under a temporary name and renamed into place, so a crash
never leaves half a result. `LRU` is the bounded, thread-safe memo every in-memory
cache uses.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from dataclasses import fields
from typing import Callable, ClassVar

import numpy as np

from analysis.core import caches, settings


def jsonable(value):
    """numpy / torch values and Records -> plain JSON types, recursively."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


class Record:
    """Base of the frozen result dataclasses: `to_dict` gives plain JSON types (for the
    disk cache and report.json), `from_dict` rebuilds the record, turning the fields
    named in ARRAYS into float arrays (JSON null -> nan) and those in NESTED / NESTED_MAPS
    into records (a record, or a dict of records). A missing field raises KeyError, a
    payload that is not an object SchemaError: callers treat both as stale."""

    ARRAYS: ClassVar[tuple] = ()
    NESTED: ClassVar[dict] = {}
    NESTED_MAPS: ClassVar[dict] = {}

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise SchemaError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        values = {}
        for f in fields(cls):
            value = data[f.name]
            if f.name in cls.ARRAYS:
                value = np.asarray(value, dtype=float)
            elif f.name in cls.NESTED and value is not None:
                value = cls.NESTED[f.name].from_dict(value)
            elif f.name in cls.NESTED_MAPS:
                value = {k: cls.NESTED_MAPS[f.name].from_dict(v) for k, v in value.items()}
            values[f.name] = value
        return cls(**values)


def make_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class SchemaError(ValueError):
    """A stored result, plan or report from another schema version (or not one at all)."""


def require_version(data, expected: int, what: str) -> None:
    """SchemaError unless `data` is a dict whose `schema_version` is `expected`."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != expected:
        raise SchemaError(f"{what} schema version {version!r} is not the supported {expected}.")


def write_atomic(path: Path, write: Callable) -> None:
    """Call `write(file)` on a temporary file in the same folder, then rename it to
    `path`; on any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: Path, payload: dict) -> None:
    write_atomic(path, lambda fh: json.dump(jsonable(payload), fh))


def replace_dir_atomic(tmp: Path, out: Path, may_replace: Callable[[Path], bool] = lambda old: True) -> None:
    """Move the finished directory `tmp` to `out`. An existing `out` is replaced only
    when `may_replace(out)` says so (ValueError otherwise); the old one is moved aside
    first and deleted last, so `out` is always either the old or the new directory."""
    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        os.replace(tmp, out)
        return
    if not may_replace(out):
        raise ValueError(f"{out} exists and is not ours to replace; choose another output directory")
    old = Path(tempfile.mkdtemp(prefix=out.name + ".old-", dir=out.parent))
    os.replace(out, old / "x")
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building_dir(out: Path, may_replace: Callable[[Path], bool] = lambda old: True, keep_existing: bool = False):
    """Yield a temporary directory next to `out`; when the block finishes without error
    it becomes `out` (see `replace_dir_atomic`; with keep_existing=True an `out` that
    appeared meanwhile, e.g. from a concurrent build, wins). On error, or after the
    move, nothing temporary is left behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        yield tmp
        if not (keep_existing and out.exists()):
            replace_dir_atomic(tmp, out, may_replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class LRU:
    """A bounded, thread-safe least-recently-used map."""

    def __init__(self, size: int, name: str | None = None) -> None:
        """`name`: register it as a process cache (core.caches) under that name."""
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        if name:
            caches.register(name, self)

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_create(self, key, factory: Callable[[], object]):
        """The value for `key`, created by `factory()` under the lock when missing."""
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            self._items.move_to_end(key)
            value = self._items[key]
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return value

    def items(self) -> list:
        """(key, value) pairs, most recently used last (a copy)."""
        with self._lock:
            return list(self._items.items())

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def entry_path(kind: str, key: str) -> Path:
    return settings.cache_dir() / "results" / f"{kind}-{key}.json"


def save(kind: str, key: str, schema_version: int, data: dict) -> None:
    write_json_atomic(entry_path(kind, key), {"key": key, "schema_version": schema_version, "data": data})


def load(kind: str, key: str, schema_version: int) -> dict | None:
    """The cached data, or None when missing, unreadable, or for another key/version."""
    path = entry_path(kind, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or entry.get("schema_version") != schema_version:
        return None
    data = entry.get("data")
    return data if isinstance(data, dict) else None


def load_record(kind: str, key: str, schema_version: int, from_dict: Callable):
    """The stored result for (kind, key) rebuilt by `from_dict`, or None when it is
    missing, unreadable, stale or damaged (the caller recomputes and replaces it)."""
    data = load(kind, key, schema_version)
    if data is None:
        return None
    try:
        return from_dict(data)
    except (SchemaError, KeyError, TypeError, ValueError):
        return None


def cached(kind: str, key: str, schema_version: int, compute: Callable[[], object], *,
           to_dict: Callable, from_dict: Callable, use_cache: bool = True):
    """The stored result for (kind, key) when it is readable and of this schema,
    otherwise `compute()`, stored. A damaged or stale entry is recomputed and replaced."""
    if use_cache:
        found = load_record(kind, key, schema_version, from_dict)
        if found is not None:
            return found
    result = compute()
    if use_cache:
        save(kind, key, schema_version, to_dict(result))
    return result
