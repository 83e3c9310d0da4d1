"""Every process-wide cache, registered in one place.

A module that keeps state for the whole process (loaded models, unwrapped decoders,
shared playgrounds, the memo of measured removals, prompts, healed models, the app's
shared windows) registers it here with `register(name, cache)`; `clear_all()` empties
them all (tests call it between tests, keeping the loaded models their fixtures own),
and `sizes()` says what each holds. A cache is anything with `clear()` and `len()`.
"""
from __future__ import annotations

import threading

_CACHES: dict = {}
_LOCK = threading.Lock()
MODELS = ("model.loading.models", "model.unwrapped.decoders")  # what loading a model builds


def register(name: str, cache):
    """Register `cache` (anything with clear() and len()) under `name`; returns it."""
    with _LOCK:
        if name in _CACHES and _CACHES[name] is not cache:
            raise ValueError(f"a process cache is already registered as {name!r}")
        _CACHES[name] = cache
    return cache


def clear_all(keep: tuple = ()) -> list[str]:
    """Empty every registered cache but those named in `keep`; returns the names cleared."""
    with _LOCK:
        chosen = [(n, c) for n, c in _CACHES.items() if n not in keep]
    for _, cache in chosen:
        cache.clear()
    return [n for n, _ in chosen]


def sizes() -> dict[str, int]:
    """Entries held by each registered cache."""
    with _LOCK:
        return {n: len(c) for n, c in _CACHES.items()}
