"""Shareable-link state: what a URL may carry, and how tampered values are handled.

A link carries model, corpus (a built-in id or the sha256 of a stored upload), seq_len,
max_windows, eval (the evaluation windows: `holdout` or an evaluation corpus id, see
analysis.data.evaluation.EvalSpec), page, removed components (rm_blocks, rm_attn, rm_mlp as
comma-separated 0-based layers), the playground prompt, show_on (which windows the
playground's perplexity is measured on: calibration or evaluation), a stored report
(report: the sha256 of a file kept under cache/reports/) and the two sides of a
comparison (cmp_a, cmp_b: `current`, a stored report's sha256, or a model as the `model`
key allows it). Parsing never raises: whatever is unusable is dropped and described in a
notice, and the rest of the link still applies. A link can never name a model the
operator has not allowed, nor a local path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from analysis.core import settings
from analysis.core.kinds import SHOW_ON
from analysis.data.corpus import MAX_SEQ_LEN, CorpusError
from analysis.data.evaluation import EvalSpec
from analysis.playground.live import KIND_WORDS

# Every page, in navigation order: URL path -> (title, Material icon). The first is the
# default page, served at "/".
PAGE_INFO = {
    "overview": ("Overview", "home"),
    "similarity": ("Hidden-state similarity", "grid_on"),
    "sublayers": ("Attention vs MLP", "compare_arrows"),
    "sparsity": ("Activation sparsity", "scatter_plot"),
    "logit_lens": ("Logit lens & early exit", "visibility"),
    "playground": ("Layer playground", "tune"),
    "curves": ("Pruning curves", "trending_down"),
    "healing": ("Heal a pruned model", "healing"),
    "compare": ("Compare two runs", "difference"),
}
PAGES = tuple(PAGE_INFO)
KEYS = ("model", "corpus", "seq_len", "max_windows", "eval", "page", "rm_blocks", "rm_attn", "rm_mlp", "prompt",
        "show_on", "report", "cmp_a", "cmp_b")
COMPARE_KEYS = ("cmp_a", "cmp_b")
CURRENT = "current"
REMOVAL_KEYS = {"rm_blocks": "blocks", "rm_attn": "attn", "rm_mlp": "mlp"}
MAX_VALUE_CHARS = 2000
_CORPUS = re.compile(r"^(builtin:[a-z_]+|[0-9a-f]{64})$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class LinkState:
    values: dict = field(default_factory=dict)
    notices: list = field(default_factory=list)
    refused_model: tuple | None = None  # (name shortened, why, its notice) of a model the link may not open


def _first(value) -> tuple[str, bool]:
    if isinstance(value, (list, tuple)):
        return (str(value[0]) if value else ""), len(value) > 1
    return str(value), False


def _int_in(text: str, low: int, high: int) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if low <= value <= high else None


def parse_link(params) -> LinkState:
    """Query parameters (a mapping of key -> str or list of str) -> cleaned values + notices."""
    state = LinkState()
    for key in params:
        raw, repeated = _first(params[key])
        shown = key[:40]
        if key not in KEYS:
            state.notices.append(f"Ignored unknown link parameter {shown!r}.")
            continue
        if repeated:
            state.notices.append(f"Link parameter {shown!r} was repeated; used the first value.")
        if len(raw) > MAX_VALUE_CHARS:
            state.notices.append(f"Ignored link parameter {shown!r}: its value is too long.")
            continue
        value, problem = _clean(key, raw)
        if problem:
            state.notices.append(problem)
        if key == "model" and value is None and raw.strip():
            state.refused_model = (raw.strip()[:60], refusal(raw.strip()), problem)
        if value is not None:
            state.values[key] = value
    return state


LOCAL_REFUSAL = "local paths cannot be opened from a link"


def refusal(name: str) -> str | None:
    """Why a link may not open the model `name` (None when it may)."""
    if settings.is_local_spec(name) and name not in settings.allowed_patterns():
        return LOCAL_REFUSAL
    try:
        settings.check_model_allowed(name)
    except settings.NotAllowedError:
        return "not allowed on this server"
    return None


def is_sha(text: str) -> bool:
    return bool(_SHA.match(text or ""))


def clean_value(key: str, raw: str):
    """(value, None) when a link may carry `raw` under `key`, else (None or a cleaned value, the problem)."""
    return _clean(key, raw)


def _clean(key: str, raw: str):
    if key == "model":
        name = raw.strip()
        if not name:
            return None, "Ignored an empty model in the link."
        reason = refusal(name)
        if reason == LOCAL_REFUSAL:
            return None, f"Ignored the link's model: {reason}."
        if reason:
            return None, f"Ignored the link's model {name[:60]!r}: {reason}."
        return name, None
    if key == "corpus":
        if not _CORPUS.match(raw):
            return None, "Ignored the link's corpus: not a built-in id or a sha256."
        return raw, None
    if key == "eval":
        try:
            return str(EvalSpec.parse(raw)), None
        except CorpusError:
            return None, "Ignored the link's eval: not 'holdout', a built-in id or a sha256."
    if key == "show_on":
        return (raw, None) if raw in SHOW_ON else (None, f"Ignored show_on {raw[:20]!r}: expected calibration or "
                                                         "evaluation.")
    if key == "seq_len":
        value = _int_in(raw, 2, MAX_SEQ_LEN)
        return (value, None) if value else (None, f"Ignored seq_len {raw[:20]!r}: expected 2..{MAX_SEQ_LEN}.")
    if key == "max_windows":
        value = _int_in(raw, 0, 100000)
        return (value, None) if value is not None else (None, f"Ignored max_windows {raw[:20]!r}.")
    if key == "page":
        return (raw, None) if raw in PAGES else (None, f"Ignored unknown page {raw[:40]!r}.")
    if key in REMOVAL_KEYS:
        layers, bad = [], []
        for part in filter(None, (p.strip() for p in raw.split(","))):
            value = _int_in(part, 0, 100000)
            (bad if value is None else layers).append(part if value is None else value)
        problem = f"Ignored {key} entries that are not layer indices: {', '.join(map(str, bad))[:80]}." if bad else None
        return sorted(set(layers)), problem
    if key == "prompt":
        return raw, None
    if key == "report":
        return (raw, None) if is_sha(raw) else (None, "Ignored the link's report: not a sha256.")
    if key in COMPARE_KEYS:
        if raw == CURRENT or is_sha(raw):
            return raw, None
        name, problem = _clean("model", raw)
        return name, problem and f"{key}: {problem}"
    return None, f"Ignored {key!r}."


def clamp_layers(values: dict, n_layers: int) -> tuple[dict, list]:
    """Removal lists restricted to 0..n_layers-1, with a notice for what was dropped."""
    out, notices = {}, []
    for key, kind in REMOVAL_KEYS.items():
        layers = values.get(key, [])
        kept = [l for l in layers if 0 <= l < n_layers]
        dropped = [l for l in layers if l not in kept]
        if dropped:
            notices.append(f"Ignored {KIND_WORDS[kind]} out of range 0..{n_layers - 1}: {dropped[:10]}.")
        out[kind] = kept
    return out, notices


def build_query(values: dict) -> dict:
    """Clean values -> query parameters (layer lists joined with commas, empty ones left out)."""
    query = {}
    for key in KEYS:
        value = values.get(key)
        if value is None or value == [] or value == "":
            continue
        query[key] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return query
