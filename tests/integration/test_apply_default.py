"""plan -> evaluate -> apply on the embedded default model, as subprocesses, checked
against plain transformers on the written checkpoint (2 windows x 32 tokens)."""
import json
import re
import subprocess
import sys

import pytest
import yaml

import reference
from analysis.data.corpus import make_windows
from analysis.plans.check import parse_plan

ROOT = reference.__file__.rsplit("/tests/", 1)[0]
TEXT = (
    "The orchard behind the school had twelve apple trees and one stubborn pear. Every autumn the children "
    "counted the fruit, argued about the totals, and wrote the numbers on the blackboard in yellow chalk. "
    "def total(counts):\n    return sum(counts.values())\n"
    "NINA: How many did you get?\nOSKAR: Forty-one, but three were wormy.\n"
) * 2
ARGS = ["--corpus", "CORPUS", "--seq-len", "32", "--max-windows", "2"]
PPL = re.compile(r"perplexity full ([0-9.]+) pruned ([0-9.]+)")


def run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "analysis", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plans")
    corpus = tmp / "corpus.txt"
    corpus.write_text(TEXT)
    args = [str(corpus) if a == "CORPUS" else a for a in ARGS]
    plan_file, out, yaml_file = tmp / "plan.json", tmp / "pruned", tmp / "plan.yaml"
    made = run("plan", "--model", "default", "--method", "reverse_order", "--target", "3", *args,
               "--out", str(plan_file), "--mergekit", str(yaml_file))
    assert made.returncode == 0, made.stderr[-2000:]
    evaluated = run("evaluate", "--plan", str(plan_file), *args)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    applied = run("apply", "--plan", str(plan_file), "--out", str(out), *args, "--repeats", "1")
    assert applied.returncode == 0, applied.stderr[-2000:]
    return {"plan": plan_file, "out": out, "yaml": yaml_file, "made": made, "evaluated": evaluated,
            "applied": applied, "tmp": tmp}


def test_plan_file(flow, default_model):
    check = parse_plan(flow["plan"].read_text(), default_model)
    assert check.errors == [] and check.warnings == []
    plan = check.plan
    assert plan.remove == {"blocks": [26, 27, 28], "attn": [], "mlp": []}
    assert plan.model["fingerprint"] == default_model.fingerprint and plan.model["n_layers"] == 30
    assert plan.method == {"name": "reverse_order", "parameters": plan.method["parameters"]}
    assert plan.method["parameters"]["k"] == 3 and plan.evaluation["seq_len"] == 32
    text = flow["yaml"].read_text()
    config = yaml.safe_load(text)
    assert [s["sources"][0]["layer_range"] for s in config["slices"]] == [[0, 26], [29, 30]]
    # a colleague can build it: the hub's model, not this server's cache path, and the
    # comment says the plan was measured on weights dequantised from the Q4_1 GGUF
    assert {s["sources"][0]["model"] for s in config["slices"]} == {"HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert "measured on weights dequantised from the 4-bit Q4_1 GGUF" in text and "cache/models" not in text
    assert default_model.card()["weights"] in text


def test_checkpoint_perplexity_matches_evaluate(flow, default_model, plain_default):
    from transformers import AutoModelForCausalLM

    full, pruned = map(float, PPL.search(flow["evaluated"].stdout).groups())
    plan = json.loads(flow["plan"].read_text())
    assert plan["evaluation"]["perplexity_pruned"] == pytest.approx(pruned, rel=1e-6)
    windows = make_windows(default_model.tokenizer, TEXT, 32, max_windows=2)
    assert windows.shape == (2, 33)
    model = AutoModelForCausalLM.from_pretrained(flow["out"]).eval()
    assert model.config.num_hidden_layers == 27
    assert reference.perplexity(model, windows) == pytest.approx(pruned, rel=1e-3)
    assert reference.perplexity(plain_default, windows) == pytest.approx(full, rel=1e-3)
    independent = reference.without_layers(plain_default, {26, 27, 28})
    assert reference.perplexity(independent, windows) == pytest.approx(pruned, rel=1e-3)
    assert pruned > full


def test_apply_reports_latency_and_note(flow):
    out = flow["applied"].stdout
    ratio = float(re.search(r"ratio pruned/full ([0-9.]+)", out).group(1))
    assert ratio > 0 and "only removed blocks save compute" in out
    assert "parameters 134,515,008 -> " in out
    assert (flow["out"] / "layer-lab-plan.json").is_file()


@pytest.mark.parametrize("content", ["{\"schema\": \"layer-lab/pruning-plan\", ", "[]"])
def test_malformed_plan_exits_with_one_line(flow, content):
    bad = flow["tmp"] / "bad.json"
    bad.write_text(content)
    for args in (["evaluate", "--plan", str(bad), "--corpus", "builtin:all", "--seq-len", "32"],
                 ["apply", "--plan", str(bad), "--out", str(flow["tmp"] / "never")]):
        proc = run(*args, timeout=300)
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-1500:]
        assert lines[0].startswith("error: invalid plan") and "Traceback" not in proc.stderr
    assert not (flow["tmp"] / "never").exists()
