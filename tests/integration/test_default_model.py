"""The embedded default model end to end: CLI report vs plain transformers."""
import json
import subprocess
import sys

import pytest

import reference
from analysis.data.corpus import load_file, make_windows

ROOT = reference.__file__.rsplit("/tests/", 1)[0]
FIXED_TEXT = reference.MIXED_TEXT * 3


def test_model_card(default_model):
    assert default_model.n_layers == 30
    assert default_model.d_model == 576 and default_model.d_mlp == 1536
    assert default_model.architecture == "LlamaForCausalLM"
    assert 130e6 < default_model.n_params < 140e6


def test_cli_report_perplexity_matches_transformers(tmp_path, default_model, plain_default):
    corpus = tmp_path / "fixed.txt"
    corpus.write_text(FIXED_TEXT)
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--model", "default", "--corpus", str(corpus),
         "--seq-len", "48", "--skip-removal", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    windows = make_windows(default_model.tokenizer, FIXED_TEXT, 48)
    expected = reference.perplexity(plain_default, windows)
    assert report["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert report["model"]["n_layers"] == 30 and report["model"]["fingerprint"] == default_model.fingerprint
    assert report["model"]["weights"] == default_model.weights and "Q4_1 GGUF" in default_model.weights
    assert report["corpus"]["n_windows"] == windows.shape[0]
    assert report["corpus"]["n_predicted_tokens"] == windows.shape[0] * 48
    assert report["corpus"]["sha256"] == load_file(corpus).sha256


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-org/no-such-model-xyz", "--corpus", "builtin:all", "--seq-len", "32"], None),
    (["--corpus", "/nonexistent.txt", "--seq-len", "32"], "not found"),
    (["--corpus", "builtin:all", "--seq-len", "-4"], "positive"),
    (["--corpus", "builtin:all", "--seq-len", "100000"], "context"),
])
def test_cli_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, message):
    if message is None:  # an unknown hub name would wait ~20 s for the hub: use an unlisted local path
        args = ["--model", str(tmp_path / "missing.gguf")] + args[2:]
        message = "not found"
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", *args, "--out", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
