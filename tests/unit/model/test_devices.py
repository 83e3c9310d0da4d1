"""Device discipline (issue 11): the analyses work on whatever device the model is on,
GPU placement goes through the bridge's own device_map support, and no hot path moves
activation-sized tensors to the CPU except to store a result.

Without a GPU the check is a mock: the model is addressed as device "cpu:0" (the same
memory, another name), so a move to the model's device is `.to("cpu:0")`, while
Tensor.cpu / Tensor.to("cpu") (a move to the host) are wrapped to record
every call made from analysis/ code while the instrumented pass, the removal sweep, a
playground evaluation and generation run; anything as large as a batch of residual
vectors must come from a function that stores it (the playground's clean-state cache).
A static scan forbids `.cuda()` and `device="cuda"` in analysis/ (devices come from the
loaded model, only loading.auto_device names one).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import torch

from analysis.data.corpus import Corpus, make_windows
from analysis.measure.pipeline import analyse
from analysis.model.removal import Removal
from tiny import TEXT

ROOT = Path(__file__).resolve().parents[3]
ANALYSIS = ROOT / "analysis"
STORES = {"Playground.build",  # keeps the clean residuals on the CPU on purpose (its memory budget)
          "Playground._keep_stream.<locals>.<dictcomp>",  # and the last removals' streams, the same way
          "SimilarityReducer._fold"}  # the CKA sample: at most 1,024 positions, kept for the result


def test_no_cuda_calls_or_device_names_in_analysis():
    found = []
    for path in ANALYSIS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "cuda" and not (
                    isinstance(node.value, ast.Name) and node.value.id == "torch"):
                found.append(f"{path.name}:{node.lineno} .cuda")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"cuda(:\d+)?", node.value) and path.name != "loading.py":
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found


class MoveRecorder:
    """Wraps Tensor.cpu and Tensor.to to record (caller, numel) of every move to the CPU
    requested by code under analysis/."""

    def __init__(self, monkeypatch) -> None:
        self.moves: list[tuple[str, int]] = []
        real_cpu, real_to = torch.Tensor.cpu, torch.Tensor.to

        def record(tensor) -> None:
            frame = sys._getframe(2)
            if frame.f_code.co_filename.startswith(str(ANALYSIS)):
                self.moves.append((frame.f_code.co_qualname, tensor.numel()))

        def cpu(tensor, *args, **kwargs):
            record(tensor)
            return real_cpu(tensor, *args, **kwargs)

        def to(tensor, *args, **kwargs):
            target = kwargs.get("device", args[0] if args else None)
            if isinstance(target, (str, torch.device)) and str(target) == "cpu":
                record(tensor)
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "cpu", cpu)
        monkeypatch.setattr(torch.Tensor, "to", to)


def test_hot_paths_move_no_activations_to_the_cpu(tiny, monkeypatch):
    from dataclasses import replace
    from analysis.playground.live import Playground
    tiny = replace(tiny, device="cpu:0")
    from analysis.playground.prompts import run_prompt
    from analysis.ablate.sweep import exact_sweep
    windows = make_windows(tiny.tokenizer, TEXT, 32, max_windows=4)
    playground = Playground(tiny, windows).build()
    recorder = MoveRecorder(monkeypatch)
    analyse(tiny, Corpus("t", TEXT), 32, max_windows=4, use_cache=False)
    exact_sweep(tiny, windows)
    playground.evaluate(Removal.of(blocks=[1], mlp=[2]), memo=False)
    run_prompt(tiny, windows[:1, :8], Removal.of(attn=[0]), max_new=4)
    assert recorder.moves, "the recorder saw nothing: the check would be vacuous"
    activation = windows.numel() * tiny.d_model // 2  # half a batch of residual vectors
    big = [(where, n) for where, n in recorder.moves if n >= activation and where not in STORES]
    assert not big, big


def test_device_map_goes_through_the_bridge(tiny, tiny_dir, monkeypatch):
    """LAYERLAB_DEVICE_MAP is handed to transformers' from_pretrained (accelerate's
    dispatch; the bridge then takes its device from the placed model, never moving it),
    here "auto" on the one device this machine has; the numbers equal the ordinary load's."""
    from analysis.model import loading
    seen = []
    real = loading.load_with_attention
    monkeypatch.setattr(loading, "load_with_attention", lambda load, source, kwargs: seen.append(kwargs) or
                        real(load, source, kwargs))
    monkeypatch.setenv("LAYERLAB_DEVICE_MAP", "auto")
    mapped = loading.get_model(f"{tiny_dir}/./", None)
    assert seen and seen[0]["device_map"] == "auto"
    assert mapped.device == mapped.bridge.cfg.device == "cpu"
    a = analyse(mapped, Corpus("t", TEXT), 32, max_windows=3, use_cache=False, with_lens=False)
    b = analyse(tiny, Corpus("t", TEXT), 32, max_windows=3, use_cache=False, with_lens=False)
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-6)
