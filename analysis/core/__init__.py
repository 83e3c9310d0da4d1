"""Plumbing every layer may use: settings (environment, cache dir, allow-lists, memory
budget), the disk store (keys, atomic JSON, cached records, LRU), background jobs and
their lanes, progress and time-left estimates, the registry of process caches.

May import: nothing else of the project.
"""
