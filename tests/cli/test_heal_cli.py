"""`python -m analysis heal` on the tiny model: a merged checkpoint that plain transformers
loads, the record with the three perplexities on both splits, the plan's healing section,
and one `error:` line for bad input."""
import json
import random
import subprocess
import sys

import pytest
import torch

import reference
from tiny import TEXT
from analysis.cli import main
from analysis.data.corpus import make_windows, split_windows
from analysis.model.removal import Removal
from analysis.plans.apply import PLAN_FILE
from analysis.heal.train import hf_perplexity
from analysis.heal.run import RECORD_FILE
from analysis.plans.schema import make_plan
from analysis.plans.check import parse_plan

ROOT = reference.__file__.rsplit("/tests/", 1)[0]
SHUFFLED = " ".join(random.Random(1).sample((TEXT * 3).split(" "), len((TEXT * 3).split(" "))))


@pytest.fixture()
def files(tiny, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(make_plan(tiny, Removal.of(blocks=[2], mlp=[0]), "manual", {}).to_json())
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHUFFLED)
    return plan, corpus


def test_cli_heal_writes_a_plain_checkpoint_and_the_record(tiny, tiny_dir, files, tmp_path):
    plan, corpus = files
    out = tmp_path / "healed"
    proc = subprocess.run([sys.executable, "-m", "analysis", "heal", "--plan", str(plan), "--model", str(tiny_dir),
                           "--device", "cpu", "--corpus", str(corpus), "--seq-len", "24", "--max-windows", "20",
                           "--steps", "6", "--rank", "4", "--lr", "0.01", "--batch-size", "2", "--repeats", "1",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss=" in proc.stderr and "6/6" in proc.stderr  # the progress bar shows the loss
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["settings"]["steps"] == 6 and record["settings"]["seed"] == 0 and len(record["loss_curve"]) == 6
    assert record["windows"]["calibration"] == 16 and record["windows"]["evaluation"] == 4
    stored_plan = json.loads((out / PLAN_FILE).read_text())
    assert stored_plan["version"] == 2 and stored_plan["healing"]["loss_curve"] == record["loss_curve"]
    assert parse_plan(stored_plan, tiny).errors == []
    healed = reference.plain_model(out)
    assert healed.config.num_hidden_layers == 3 and torch.count_nonzero(healed.model.layers[0].mlp.down_proj.weight) == 0
    calibration, evaluation = split_windows(make_windows(tiny.tokenizer, SHUFFLED, 24, max_windows=20))
    assert record["perplexity"]["healed"]["evaluation"] == pytest.approx(hf_perplexity(healed, evaluation), rel=1e-5)
    assert record["perplexity"]["full"]["calibration"] == pytest.approx(
        reference.perplexity(reference.plain_model(tiny_dir), calibration), rel=1e-5)
    for name in ("full", "pruned", "healed"):
        assert f"{name}: perplexity calibration" in proc.stdout


@pytest.mark.parametrize("extra, words", [
    (["--steps", "0"], "expected a positive integer"),
    (["--lr", "-1"], "expected a positive number"),
    (["--eval-corpus", "SAME"], "evaluation windows also occur in the calibration windows"),
    (["--seq-len", "4000"], "seq_len"),
])
def test_cli_heal_bad_input_is_one_error_line(tiny_dir, files, tmp_path, capsys, extra, words):
    plan, corpus = files
    extra = [str(corpus) if e == "SAME" else e for e in extra]
    args = ["heal", "--plan", str(plan), "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus),
            "--seq-len", "24", "--max-windows", "20", "--out", str(tmp_path / "healed")]
    code = main(args + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("error:") and words in err[-1], err
    assert not (tmp_path / "healed").exists()


def test_cli_heal_refuses_to_overwrite_a_foreign_directory(tiny_dir, files, tmp_path, capsys):
    plan, corpus = files
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code = main(["heal", "--plan", str(plan), "--model", str(tiny_dir), "--corpus", str(corpus), "--seq-len", "24",
                 "--out", str(foreign)])
    assert code == 2 and "is not a Layer Lab checkpoint" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
