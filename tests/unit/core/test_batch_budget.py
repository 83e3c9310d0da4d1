"""Batch sizes come from a memory budget (issue 11): LAYERLAB_BATCH_TOKENS, or a quarter
of the free memory (at most 1 GiB of activations) over what one token holds; no
function in analysis/ hard-codes a batch size."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.core import settings
from analysis.measure.collect import activation_bytes_per_token, batch_tokens_for, run_pass

ROOT = Path(__file__).resolve().parents[3]


def test_the_environment_decides(monkeypatch):
    monkeypatch.setenv("LAYERLAB_BATCH_TOKENS", "37")
    assert settings.batch_tokens(10 ** 9) == 37
    for bad in ("0", "-3", "lots", "1.5"):
        monkeypatch.setenv("LAYERLAB_BATCH_TOKENS", bad)
        with pytest.raises(ValueError, match="LAYERLAB_BATCH_TOKENS must be a positive integer"):
            settings.batch_tokens(100)


@pytest.mark.parametrize("free_gib, per_token, want", [(64, 1 << 20, 1024), (1, 1 << 20, 256), (1, 3 << 20, 64),
                                                        (0.001, 1 << 20, 1)])
def test_derived_from_free_memory(monkeypatch, free_gib, per_token, want):
    import psutil
    monkeypatch.delenv("LAYERLAB_BATCH_TOKENS", raising=False)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=int(free_gib * 2 ** 30)))
    assert settings.batch_tokens(per_token) == want


def test_the_pass_uses_the_budget(tiny, monkeypatch):
    from analysis.data.corpus import make_windows
    from tiny import TEXT
    windows = make_windows(tiny.tokenizer, TEXT, 32, max_windows=5)
    monkeypatch.setenv("LAYERLAB_BATCH_TOKENS", str(2 * windows.shape[1]))
    sizes = []

    class Sizes:
        sites = ()
        hooks = lambda self, model, first: []
        update = lambda self, model, batch: sizes.append(batch.tokens.shape[0])
    run_pass(tiny, windows, [Sizes()])
    assert sizes == [2, 2, 1] and batch_tokens_for(tiny) == 2 * windows.shape[1]
    L, d = tiny.n_layers, tiny.d_model
    assert activation_bytes_per_token(tiny) == ((4 * L + 1) * d + 3 * tiny.d_mlp) * 4 + 4 * tiny.bridge.cfg.d_vocab


def test_no_hard_coded_batch_sizes():
    found = []
    for path in (ROOT / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args[-len(node.args.defaults):] if node.args.defaults else []
                pairs = list(zip(args, node.args.defaults)) + list(zip(node.args.kwonlyargs, node.args.kw_defaults))
                found += [f"{path.name}:{node.name}" for arg, default in pairs
                          if arg.arg == "batch_tokens" and isinstance(default, ast.Constant) and default.value]
    assert not found, found
