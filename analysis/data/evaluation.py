"""Calibration and evaluation windows (DESIGN.md section 3): which windows a method may
look at to choose what to remove, and which windows judge the choice.

`EvalSpec` is the user's choice, one small frozen value with a stable string form used
in links (`eval=`), plans and report.json:

- `holdout` (the default): every 5th window of the calibration corpus (windows 4, 9,
  14, ...) is held out for evaluation (`corpus.split_windows`), the rest calibrates;
- a corpus id (`builtin:<name>`, `builtin:all` or the sha256 of a stored upload): every
  window of the calibration corpus calibrates, every window of that corpus evaluates.

`resolve` turns the choice into a `Split` for a given corpus: which *part* of the
calibration corpus's windows calibrates ("all" or "calibration") and which windows
evaluate ("evaluation" part of the same corpus, "all" windows of another corpus, or
none, with the reason in `notice`: too few windows to hold one in five out, or an
evaluation text that overlaps the calibration text). Methods, the analysis pages and
presets work on the calibration part only; `part_windows` cuts any part out of a
corpus's windows.

How much a number on the evaluation windows says: `evaluation_intervals` gives 95%
intervals over windows (DESIGN.md section 3, "Intervals over windows") for perplexity,
a pruned model's change against the full one and healing's recovery, all from
`mean_interval` (which the playground's progressive estimate uses too), and
`too_few_evaluation` the warning for sets below MIN_EVAL_WINDOWS / MIN_EVAL_TOKENS.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.kinds import PARTS, Part
from analysis.data.corpus import HOLDOUT_EVERY, Corpus, CorpusError, load_corpus, make_windows, plural, split_windows

HOLDOUT = "holdout"
MIN_EVAL_WINDOWS = 8  # fewer evaluation windows (or predicted tokens) than this: the page warns
MIN_EVAL_TOKENS = 1000
Z95 = 1.96  # two-sided 95% normal quantile
_CORPUS_ID = re.compile(r"^(builtin:[a-z_]+|[0-9a-f]{64})$")


@dataclass(frozen=True)
class EvalSpec:
    """Held-out split (corpus_id None) or a named evaluation corpus."""

    corpus_id: str | None = None

    def __str__(self) -> str:
        return self.corpus_id or HOLDOUT

    @classmethod
    def parse(cls, text: str | None) -> "EvalSpec":
        """'holdout' (or empty) -> the held-out split; a corpus id -> that corpus.
        Anything else is a CorpusError with the accepted forms."""
        text = (text or HOLDOUT).strip()
        if text == HOLDOUT:
            return cls()
        if not _CORPUS_ID.match(text):
            raise CorpusError(f"Unknown evaluation choice {text[:80]!r}: use 'holdout', a built-in corpus id "
                              "(builtin:all, builtin:<name>) or the sha256 of a stored corpus.")
        return cls(text)

    @property
    def held_out(self) -> bool:
        return self.corpus_id is None

    def describe(self) -> str:
        if self.held_out:
            return f"held-out windows (every {HOLDOUT_EVERY}th window of the calibration corpus)"
        return f"corpus {self.corpus_id}"


@dataclass(frozen=True)
class Split:
    """Where calibration and evaluation windows come from, for one corpus and spec."""

    spec: EvalSpec
    corpus: Corpus  # the calibration corpus
    calibration_part: str  # "all" or "calibration" (of the calibration corpus's windows)
    eval_corpus: Corpus | None  # whose windows evaluate (the calibration corpus itself for holdout)
    eval_part: str | None  # "evaluation" (held out) or "all" (another corpus); None: no evaluation windows
    notice: str | None = None  # why there are no evaluation windows

    @property
    def available(self) -> bool:
        return self.eval_part is not None

    def calibration_label(self) -> str:
        if self.calibration_part == "calibration":
            return f"calibration windows (every {HOLDOUT_EVERY}th window held out)"
        return "calibration windows (every window of the corpus)"

    def evaluation_label(self) -> str:
        if not self.available:
            return "no evaluation windows"
        return "evaluation windows (" + ("held out" if self.spec.held_out else f"corpus {self.spec.corpus_id}") + ")"

    def info(self, n_calibration: int | None = None, n_evaluation: int | None = None) -> dict:
        """The split as it goes into plans and report.json."""
        out = {"eval": str(self.spec), "calibration_corpus_sha256": self.corpus.sha256,
               "calibration_part": self.calibration_part, "evaluation_corpus_sha256":
                   self.eval_corpus.sha256 if self.available else None, "evaluation_part": self.eval_part,
               "holdout_every": HOLDOUT_EVERY if self.spec.held_out else None, "notice": self.notice}
        if n_calibration is not None:
            out["n_calibration_windows"] = int(n_calibration)
        if n_evaluation is not None:
            out["n_evaluation_windows"] = int(n_evaluation)
        return out


def part_windows(windows: torch.Tensor, part: Part) -> torch.Tensor:
    """The `part` ("all", "calibration", "evaluation") of a corpus's windows."""
    if part not in PARTS:
        raise ValueError(f"unknown window part {part!r}; choose one of {', '.join(PARTS)}")
    if part == "all":
        return windows
    calibration, evaluation = split_windows(windows)
    return calibration if part == "calibration" else evaluation


def windows_for(model, corpus: Corpus, seq_len: int, max_windows: int | None, part: Part = "all") -> torch.Tensor:
    """The corpus protocol's windows (at most max_windows of them), then the part."""
    return part_windows(make_windows(model.tokenizer, corpus.text, seq_len, model.n_ctx, max_windows), part)


def split_windows_of(model, split: Split, seq_len: int, max_windows: int | None):
    """(calibration windows, evaluation windows or None) of a split."""
    calibration = windows_for(model, split.corpus, seq_len, max_windows, split.calibration_part)
    if not split.available:
        return calibration, None
    return calibration, windows_for(model, split.eval_corpus, seq_len, max_windows, split.eval_part)


def overlaps(a: Corpus, b: Corpus) -> bool:
    """True when one text contains the other (e.g. builtin:all contains every built-in genre)."""
    return a.sha256 == b.sha256 or a.text in b.text or b.text in a.text


def resolve(spec: EvalSpec, corpus: Corpus, n_windows: int, eval_corpus: Corpus | None = None) -> Split:
    """The split for a calibration corpus that gives `n_windows` windows.

    A held-out split needs at least 5 windows; a named evaluation corpus (loaded by id
    unless `eval_corpus` is given) must not overlap the calibration text. When either
    fails, every window calibrates and nothing evaluates, with the reason in `notice`."""
    if spec.held_out:
        if n_windows < HOLDOUT_EVERY:
            return Split(spec, corpus, "all", None, None,
                         f"The corpus gives {plural(n_windows, 'window')}, too few to hold out every {HOLDOUT_EVERY}th: "
                         "nothing is held out, so every perplexity here is measured on the windows the choices "
                         "were made on. Use a longer corpus or a shorter seq_len, or name an evaluation corpus.")
        return Split(spec, corpus, "calibration", corpus, "evaluation")
    other = eval_corpus if eval_corpus is not None else load_corpus(spec.corpus_id)
    if overlaps(corpus, other):
        return Split(spec, corpus, "all", None, None,
                     f"The evaluation corpus {spec.corpus_id} overlaps the calibration corpus {corpus.corpus_id} "
                     "(one contains the other), so it cannot judge choices made on it; nothing is evaluated "
                     "separately. Choose held-out windows or a disjoint corpus.")
    return Split(spec, corpus, "all", other, "all")


def mean_interval(values, population: int | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of per-window values: mean +- 1.96 s / sqrt(n), s the sample
    standard deviation (ddof 1), times sqrt(1 - n / population) when the n windows are a
    sample of `population` windows (then exact, low = high = mean, once n reaches it).
    One window gives an unbounded interval (-inf, inf)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n, mean = v.size, float(v.mean())
    if population is not None and n >= population:
        return mean, mean, mean
    if n < 2:
        return mean, -math.inf, math.inf
    se = float(v.std(ddof=1)) / math.sqrt(n) * (math.sqrt(1 - n / population) if population else 1.0)
    return mean, mean - Z95 * se, mean + Z95 * se


@dataclass(frozen=True)
class Interval:
    """A number and its 95% interval over windows (low/high may be -inf/inf: one window)."""

    value: float
    low: float
    high: float

    def text(self, fmt: str = "{:.3f}") -> str:
        """'low to high' in `fmt`, or why there is none (a single window)."""
        if math.isinf(self.low) or math.isinf(self.high):
            return "unbounded (one window gives no interval)"
        return f"{fmt.format(self.low)} to {fmt.format(self.high)}"


def evaluation_intervals(full, pruned=None, healed=None) -> dict:
    """95% intervals over the evaluation windows from each model's per-window mean NLL
    ([W] each, the same windows in the same order, so the comparisons are paired):

    - "full" / "pruned" / "healed": perplexity exp(m), interval exp(mean_interval(nll));
    - "delta" (with pruned): pruned / full - 1, interval from the per-window differences
      pruned - full, exp(mean_interval(d)) - 1;
    - "recovery" (with pruned and healed, when pruned > full): (P - H) / (P - F) of the
      perplexities, interval by the delta method: mean_interval of each window's
      linearised contribution sum_m dR/dm_m (nll_m - mean_m), around R.
    """
    arrays = {"full": full, "pruned": pruned, "healed": healed}
    nll = {name: np.asarray(v, dtype=np.float64) for name, v in arrays.items() if v is not None}
    out = {}
    for name, v in nll.items():
        mean, low, high = mean_interval(v)
        out[name] = Interval(math.exp(mean), math.exp(low), math.exp(high))
    if "pruned" in nll:
        _, low, high = mean_interval(nll["pruned"] - nll["full"])
        ratio = out["pruned"].value / out["full"].value
        out["delta"] = Interval(ratio - 1, math.exp(low) - 1, math.exp(high) - 1)
    if "healed" in nll and "pruned" in nll and out["pruned"].value > out["full"].value:
        F, P, H = (out[name].value for name in ("full", "pruned", "healed"))
        recovery = (P - H) / (P - F)
        gradient = {"full": recovery * F / (P - F), "pruned": P * (H - F) / (P - F) ** 2, "healed": -H / (P - F)}
        linear = sum(g * (nll[name] - nll[name].mean()) for name, g in gradient.items())
        mean, low, high = mean_interval(linear)
        out["recovery"] = Interval(recovery, recovery + low - mean, recovery + high - mean)
    return out


def too_few_evaluation(n_windows: int, n_tokens: int) -> str | None:
    """The warning for an evaluation set below MIN_EVAL_WINDOWS windows or MIN_EVAL_TOKENS
    predicted tokens (None when it is large enough)."""
    if n_windows >= MIN_EVAL_WINDOWS and n_tokens >= MIN_EVAL_TOKENS:
        return None
    return (f"Only {n_windows} evaluation window{'s' if n_windows != 1 else ''} ({n_tokens:,} predicted tokens): "
            f"fewer than {MIN_EVAL_WINDOWS} windows or {MIN_EVAL_TOKENS:,} tokens, so the numbers below say little "
            "and can swing widely (see their 95% intervals). Use a longer corpus or more windows.")
