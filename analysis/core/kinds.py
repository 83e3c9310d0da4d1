"""The project's small vocabularies as types, so a misspelt value is a type error and a
reader sees every value in one place."""
from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["blocks", "attn", "mlp"]  # what a removal removes: whole blocks, attention or MLP sublayers
Part = Literal["all", "calibration", "evaluation"]  # which of a corpus's windows (data.evaluation.part_windows)
ShowOn = Literal["calibration", "evaluation"]  # which windows the playground's perplexity is measured on
Lane = Literal["default", "pass", "sweep", "playground", "heal", "tasks"]  # background job lanes (core.jobs.LANE_LIMITS)

KINDS: tuple[Kind, ...] = get_args(Kind)
PARTS: tuple[Part, ...] = get_args(Part)
SHOW_ON: tuple[ShowOn, ...] = get_args(ShowOn)
LANES: tuple[Lane, ...] = get_args(Lane)
