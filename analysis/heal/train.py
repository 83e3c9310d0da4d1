"""Healing a pruned model: a short LoRA fine-tune on the calibration windows, and what
it brings back, measured on held-out windows it never saw (DESIGN.md section 3).

The pruned model is built exactly as `apply.prune_model` builds the checkpoint (removed
blocks deleted, removed sublayers of kept blocks zeroed) from a plain transformers copy
of the source weights, in float32. LoRA adapters (`peft`) go on every linear layer of
the decoder except the zeroed output projections, so a removed sublayer stays removed.
Training minimises the mean next-token cross-entropy over batches drawn, seeded, from
the calibration windows only. Afterwards the adapters are merged into the weights: the
result is a plain transformers model of the pruned shape.

Perplexity of the full and the pruned model comes from the shared model with removal
hooks (`apply.evaluate`, the numbers the playground shows); the healed model's from a
plain forward of the merged weights. Both over the calibration and the evaluation
windows. Each model's per-window mean NLL on the evaluation windows is kept too
(`window_nll`), for the intervals the page shows (`evaluation.evaluation_intervals`).
Writing the checkpoint lives in `heal_output.py`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from analysis.core import store
from analysis.measure.collect import batches, token_nll
from analysis.model.removal import Removal
from analysis.search.curves import ppl, window_nll
from analysis.model.anatomy import decoder_layers, output_params
from analysis.plans.apply import evaluate, prune_model
from analysis.model.sources import resolve_source
from analysis.core.settings import trust_remote_code
from analysis.core import settings

SCHEMA_VERSION = 2  # 2: window_nll (per evaluation window, for intervals)
METHOD = "lora"
TRAIN_SPAN = (0.0, 0.92)  # training's share of a healing run's progress (set-up reports 0: see core.progress.Eta)


def step_fraction(step: int, steps: int) -> float:
    """Overall progress after training step `step` of `steps` (evaluations before and after)."""
    low, high = TRAIN_SPAN
    return low + (high - low) * step / steps


@dataclass(frozen=True)
class HealSettings:
    """Every knob of LoRA healing. The defaults heal the default model with 3 blocks
    removed in under 2 minutes on a 2-core CPU; a higher rate or more steps
    memorises the 36 calibration windows (README, "Healing")."""

    steps: int = 60
    rank: int = 8
    alpha: float = 16.0
    lr: float = 3e-4
    batch_size: int = 4
    warmup_steps: int = 6
    seed: int = 0
    target_modules: str = "all-linear"

    def problems(self) -> list[str]:
        out = []
        for name in ("steps", "rank", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                out.append(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            out.append(f"warmup_steps must be a non-negative integer, not {self.warmup_steps!r}")
        for name in ("alpha", "lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                out.append(f"{name} must be a positive number, not {value!r}")
        if not isinstance(self.seed, int):
            out.append(f"seed must be an integer, not {self.seed!r}")
        return out

    def check(self) -> "HealSettings":
        problems = self.problems()
        if problems:
            raise ValueError("invalid healing settings: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HealSettings":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class HealResult(store.Record):
    """One healing run: settings, the training loss per step, and the perplexity of the
    full, pruned and healed model on both splits ({model: {calibration, evaluation}})."""

    schema_version: int
    method: str
    settings: dict
    removal: dict
    loss_curve: list
    perplexity: dict
    windows: dict  # calibration / evaluation window counts, seq_len, corpus hashes
    params: dict  # full, pruned, healed, trainable
    latency: dict | None  # seconds per forward of full / pruned / healed and the ratios to full
    train_seconds: float
    wall_seconds: float
    window_nll: dict | None = None  # {full, pruned, healed}: [W] mean NLL per evaluation window

    @classmethod
    def from_dict(cls, data: dict) -> "HealResult":
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise store.SchemaError("stale healing record")
        return super().from_dict(data)

    @property
    def steps_per_second(self) -> float:
        return len(self.loss_curve) / self.train_seconds if self.train_seconds > 0 else float("nan")

    def table(self) -> list[dict]:
        """Rows full, pruned, healed: perplexity on both splits, parameters, forward-time ratio."""
        latency = self.latency or {}
        ratio = {"full": 1.0 if latency else None, "pruned": latency.get("pruned_ratio"),
                 "healed": latency.get("healed_ratio")}
        return [{"model": name, "calibration perplexity": self.perplexity[name]["calibration"],
                 "evaluation perplexity": self.perplexity[name]["evaluation"], "parameters": self.params[name],
                 "forward-time ratio": ratio[name]} for name in ("full", "pruned", "healed")]


def source_of(model) -> str:
    """The directory holding the model's plain transformers weights."""
    return model.source_dir or resolve_source(model.name)[0]


def pruned_copy(model, removal: Removal) -> torch.nn.Module:
    """A float32 plain transformers copy of `model` with `removal` applied as `apply` does."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(source_of(model), dtype=torch.float32,
                                              trust_remote_code=trust_remote_code())
    return prune_model(hf, removal).to(model.device).eval()


def zeroed_projections(hf, removal: Removal, n_layers: int) -> list[str]:
    """Module names (in the pruned model) of the zeroed output projections of kept blocks."""
    kept = [l for l in range(n_layers) if l not in removal.blocks]
    _, _, layers = decoder_layers(hf, len(kept))
    hidden = int(getattr(hf.config, "hidden_size", 0) or 0)
    layer_names = {id(m): n for n, m in hf.named_modules()}
    names = []
    for kind, indices in (("attn", removal.attn), ("mlp", removal.mlp)):
        for l in sorted(set(indices) - set(removal.blocks)):
            layer = layers[kept.index(l)]
            for param_name, _ in output_params(layer, kind, hidden):
                name = f"{layer_names[id(layer)]}.{param_name.rpartition('.')[0]}"
                if name not in names:
                    names.append(name)
    return names


def add_lora(hf, settings: HealSettings, exclude: list[str]):
    """`hf` wrapped with trainable LoRA adapters (seeded init); base weights frozen."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings.seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, bias="none",
                        target_modules=settings.target_modules, exclude_modules=exclude or None,
                        task_type="CAUSAL_LM")
    return get_peft_model(hf, config)


def lr_factor(step: int, settings: HealSettings) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to 0 at the last step."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * (step - settings.warmup_steps) / span))


def batch_indices(n_windows: int, settings: HealSettings):
    """Window indices of each training batch: seeded shuffles of all windows, epoch after epoch."""
    generator = torch.Generator().manual_seed(settings.seed)
    pending: list[int] = []
    for _ in range(settings.steps):
        while len(pending) < settings.batch_size:
            pending += torch.randperm(n_windows, generator=generator).tolist()
        yield pending[:settings.batch_size]
        pending = pending[settings.batch_size:]


def train(lora, windows: torch.Tensor, settings: HealSettings, *, on_step=None, check_cancelled=None,
          seen=None) -> list[float]:
    """Fine-tune the adapters on `windows` (the calibration windows); the loss per step.

    on_step(step, loss) after each step; check_cancelled() before each (raises to stop);
    seen(batch) receives every training batch (tests use it to prove what was trained on).
    """
    params = [p for p in lora.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings))
    device = next(lora.parameters()).device
    losses = []
    lora.train()
    try:
        for step, rows in enumerate(batch_indices(windows.shape[0], settings), start=1):
            if check_cancelled:
                check_cancelled()
            batch = windows[rows].to(device)
            if seen:
                seen(batch)
            with torch.enable_grad():
                logits = lora(input_ids=batch, use_cache=False).logits
                loss = token_nll(logits, batch).mean()
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step:
                on_step(step, losses[-1])
    finally:
        lora.eval()
    return losses


def hf_window_nll(hf, windows: torch.Tensor, batch_tokens: int | None = None) -> np.ndarray:
    """[W]: each window's mean next-token NLL under a plain transformers model (batches
    from the memory budget: logits plus a few hidden states per layer, float32, per token)."""
    if batch_tokens is None:
        cfg = hf.config
        batch_tokens = settings.batch_tokens(4 * (cfg.vocab_size + 4 * cfg.hidden_size * cfg.num_hidden_layers))
    out = []
    device = next(hf.parameters()).device
    with torch.inference_mode():
        for _, chunk in batches(windows, batch_tokens):
            chunk = chunk.to(device)
            out.append(token_nll(hf(input_ids=chunk, use_cache=False).logits, chunk).double().mean(1).cpu().numpy())
    return np.concatenate(out)


def hf_perplexity(hf, windows: torch.Tensor, batch_tokens: int | None = None) -> float:
    """Corpus perplexity of a plain transformers model over `windows` (equally long, so
    exp of the mean of the per-window means)."""
    return ppl(hf_window_nll(hf, windows, batch_tokens))


def check_disjoint(calibration: torch.Tensor, evaluation: torch.Tensor) -> None:
    """Refuse an evaluation text whose windows also occur, token for token, among the
    calibration windows (a separately named evaluation corpus that overlaps the training text)."""
    if calibration.shape[1] != evaluation.shape[1]:
        return
    train_rows = {tuple(row) for row in calibration.tolist()}
    shared = sum(tuple(row) in train_rows for row in evaluation.tolist())
    if shared:
        raise ValueError(f"{shared} of {evaluation.shape[0]} evaluation windows also occur in the calibration "
                         "windows; name an evaluation text that does not overlap the training text")


def heal(model, removal: Removal, calibration: torch.Tensor, evaluation: torch.Tensor, settings: HealSettings, *,
         windows_info: dict | None = None, progress=None, on_step=None, check_cancelled=None, seen=None):
    """Heal `model` pruned by `removal` on `calibration`; (HealResult, merged plain model).

    progress(fraction, message) reports the phases (evaluations, building, merging);
    on_step(step, loss) and seen(batch) see every training step (`step_fraction` places a
    step in the overall progress); check_cancelled() raising stops the run.
    """
    start = time.monotonic()
    settings.check()
    report = progress or (lambda f, m: None)
    cancel_point = check_cancelled or (lambda: None)
    report(0.0, "Perplexity of the full and the pruned model (calibration windows)...")
    full_c, pruned_c = evaluate(model, removal, calibration)
    cancel_point()
    report(0.0, "Perplexity of the full and the pruned model (evaluation windows)...")
    full_w, pruned_w = window_nll(model, evaluation, [removal])
    full_e, pruned_e = ppl(full_w), ppl(pruned_w[:, 0])
    cancel_point()
    report(0.0, "Building the pruned model and its LoRA adapters...")
    hf = pruned_copy(model, removal)
    n_pruned = sum(p.numel() for p in hf.parameters())
    lora = add_lora(hf, settings, zeroed_projections(hf, removal, model.n_layers))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)

    report(TRAIN_SPAN[0], f"Training {trainable:,} LoRA parameters for {settings.steps} steps...")
    train_start = time.monotonic()
    losses = train(lora, calibration, settings, on_step=on_step, check_cancelled=check_cancelled, seen=seen)
    train_seconds = time.monotonic() - train_start
    merged = lora.merge_and_unload().eval()
    report(TRAIN_SPAN[1], "Perplexity of the healed model...")
    healed_w = hf_window_nll(merged, evaluation)
    healed_c, healed_e = hf_perplexity(merged, calibration), ppl(healed_w)
    info = dict(windows_info or {}) | {"calibration": int(calibration.shape[0]),
                                       "evaluation": int(evaluation.shape[0]), "seq_len": int(calibration.shape[1] - 1)}
    result = HealResult(
        schema_version=SCHEMA_VERSION, method=METHOD, settings=settings.to_dict(), removal=removal.to_dict(),
        loss_curve=losses,
        perplexity={"full": {"calibration": full_c, "evaluation": full_e},
                    "pruned": {"calibration": pruned_c, "evaluation": pruned_e},
                    "healed": {"calibration": healed_c, "evaluation": healed_e}},
        windows=info, params={"full": int(model.n_params), "pruned": n_pruned, "healed": n_pruned,
                              "trainable": trainable},
        latency=None, train_seconds=train_seconds, wall_seconds=time.monotonic() - start,
        window_nll={"full": full_w.tolist(), "pruned": pruned_w[:, 0].tolist(), "healed": healed_w.tolist()})
    return result, merged
