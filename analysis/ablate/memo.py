"""The shared memo of measured removals: per-token losses of a corpus's windows under
one removal, kept for every session. The exact sweep seeds it with every single
removal; the playground reads and fills it, so a toggle someone has measured costs a
lookup. Keyed by `playground_key` (model, device, dtype, corpus, seq_len, max_windows,
part) and the Removal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.core.kinds import Part
from analysis.core import store
from analysis.model.removal import Removal

EVALUATIONS = store.LRU(512, name="ablate.memo.evaluations")  # (playground key, Removal) -> Evaluation, for every session


@dataclass(frozen=True)
class Evaluation:
    """Per-token next-token loss [n_windows, T-1] of the corpus under one removal."""

    removal: Removal
    nll: np.ndarray

    @property
    def perplexity(self) -> float:
        return math.exp(float(self.nll.mean()))


def playground_key(model, corpus, seq_len: int, max_windows: int | None, part: Part = "all") -> tuple:
    """Key of the shared evaluation memo; `part` ("all", "calibration", "evaluation") names
    which of the corpus's windows (evaluation.part_windows)."""
    key = (model.fingerprint, model.device, model.dtype, corpus.sha256, seq_len, max_windows)
    return key if part == "all" else key + (part,)


def seed_evaluations(key: tuple, per_token: dict) -> None:
    """Put measured per-token losses {Removal: [n_windows, T-1]} (e.g. every single
    removal from the 3L sweep) into the shared memo: a toggle then costs a lookup."""
    for removal, nll in per_token.items():
        if not removal.is_empty():
            EVALUATIONS.put((key, removal), Evaluation(removal, np.asarray(nll, dtype=np.float64)))
