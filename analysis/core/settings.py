"""Server-operator settings, read from environment variables (see README, "Security").

LAYERLAB_CACHE_DIR            where converted models, corpora and results live (default ./cache)
LAYERLAB_ALLOWED_MODELS       comma-separated allow-list; `default` is the embedded model,
                              `hub:*` any hub name, `hub:org/*` one organisation, `local:*`
                              any local directory or .gguf file, or exact names
                              (default "default,hub:*,local:*")
LAYERLAB_TRUST_REMOTE_CODE    "1" to let transformers run model code from the hub (default off)
LAYERLAB_DEVICE_MAP           e.g. "auto" to shard a big model over devices with accelerate
LAYERLAB_MAX_UPLOAD_MB        largest pasted or uploaded corpus (default 5)
LAYERLAB_MAX_REPORT_MB        largest uploaded report.json (default 50)
LAYERLAB_COMPILE              "0" to run the fused reductions eagerly instead of compiling them (analysis/measure/fused.py)
LAYERLAB_BATCH_TOKENS         tokens per batch of every forward over the corpus (default: what fits
                              a quarter of the free memory, at most 1 GiB of activations)
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class NotAllowedError(Exception):
    """The server operator has not allowed this."""


def cache_dir() -> Path:
    path = Path(os.environ.get("LAYERLAB_CACHE_DIR", ROOT / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    return cache_dir() / "models"


def trust_remote_code() -> bool:
    return os.environ.get("LAYERLAB_TRUST_REMOTE_CODE", "0") == "1"


def device_map() -> str | None:
    return os.environ.get("LAYERLAB_DEVICE_MAP") or None


BATCH_MEMORY_CAP = 1 << 30


def batch_tokens(bytes_per_token: int) -> int:
    """Tokens per batch for a forward that holds `bytes_per_token` per token:
    LAYERLAB_BATCH_TOKENS when set, else the largest power of two whose activations fit
    a quarter of the free memory and at most BATCH_MEMORY_CAP (a power of two, so that
    small changes in free memory do not change the batches)."""
    raw = os.environ.get("LAYERLAB_BATCH_TOKENS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"LAYERLAB_BATCH_TOKENS must be a positive integer, not {raw!r}")
        return int(raw)
    import psutil
    budget = min(psutil.virtual_memory().available // 4, BATCH_MEMORY_CAP)
    return 1 << max(0, (budget // max(1, bytes_per_token)).bit_length() - 1)


RESUME_MEMORY_CAP = 2 << 30


def resume_bytes() -> int:
    """Memory iterative greedy may fill with the residuals it keeps to resume candidates
    (LAYERLAB_RESUME_MB when set, else a quarter of the free memory, at most
    RESUME_MEMORY_CAP)."""
    raw = os.environ.get("LAYERLAB_RESUME_MB", "").strip()
    if raw:
        try:
            return max(0, int(float(raw) * (1 << 20)))
        except ValueError:
            raise ValueError(f"LAYERLAB_RESUME_MB must be a number of megabytes, not {raw!r}") from None
    import psutil
    return min(psutil.virtual_memory().available // 4, RESUME_MEMORY_CAP)


def max_upload_bytes() -> int:
    return int(float(os.environ.get("LAYERLAB_MAX_UPLOAD_MB", "5")) * 1024 * 1024)


def max_report_mb() -> int:
    return max(1, int(float(os.environ.get("LAYERLAB_MAX_REPORT_MB", "50"))))


def allowed_patterns() -> list[str]:
    raw = os.environ.get("LAYERLAB_ALLOWED_MODELS", "default,hub:*,local:*")
    return [p.strip() for p in raw.split(",") if p.strip()]


def is_local_spec(name: str) -> bool:
    return name.endswith(".gguf") or name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def check_model_allowed(name: str) -> None:
    """Raise NotAllowedError unless the operator's allow-list admits this model spec."""
    name = name.strip()
    kind = "local" if is_local_spec(name) else ("default" if name == "default" else "hub")
    for pattern in allowed_patterns():
        if pattern == name:
            return
        if kind == "default" and pattern == "default":
            return
        prefix, _, rest = pattern.partition(":")
        if rest and prefix == kind and fnmatch.fnmatchcase(name, rest):
            return
    raise NotAllowedError(f"Model {name!r} is not on this server's allow-list.")
