"""Disk cache for computed results: atomic writes, verified reads.

Entries live in cache/results/<kind>-<key>.json, keyed by model fingerprint + corpus
sha256 + settings + result schema version. Every entry repeats its key and schema
version inside; a corrupt, truncated or stale entry is treated as missing (and later
replaced), never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from analysis import settings


def jsonable(value):
    """numpy / torch values -> plain JSON types, recursively."""
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


def make_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(jsonable(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
