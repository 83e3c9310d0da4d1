"""MergeKit passthrough configs (PruneMe style) into Layer Lab plans: what is accepted,
what is refused and why, and `plan --from-mergekit` end to end on the tiny model, with
the plan's removal checked against plain transformers."""
import json

import pytest
import yaml

import reference
from tiny import TEXT
from analysis import cli
from analysis.data.corpus import make_windows
from analysis.model.removal import Removal
from analysis.plans.mergekit import dropped_blocks, mergekit_yaml, read_passthrough
from analysis.plans.schema import make_plan

PRUNEME = """slices:
  - sources:
    - model: {model}
      layer_range: [0, 1]
  - sources:
    - model: {model}
      layer_range: [3, 4]
merge_method: passthrough
dtype: bfloat16
"""


def config(**changes) -> str:
    data = yaml.safe_load(PRUNEME.format(model="org/base"))
    data.update(changes)
    return yaml.safe_dump(data)


def test_pruneme_config_gives_the_dropped_layers():
    source, ranges = read_passthrough(PRUNEME.format(model="org/base"))
    assert source == "org/base" and ranges == [(0, 1), (3, 4)]
    assert dropped_blocks(ranges, 4) == [1, 2]
    assert dropped_blocks(ranges, 6) == [1, 2, 4, 5]  # layers after the last slice are dropped too


def test_our_own_export_reads_back(tiny):
    plan = make_plan(tiny, Removal.of(blocks=[0, 2]), "manual", {})
    source, ranges = read_passthrough(mergekit_yaml(plan, "/models/tiny", tiny.hf_model))
    assert source == "/models/tiny" and dropped_blocks(ranges, 4) == [0, 2]


def _slices(*ranges, models=None, extra=None):
    models = models or ["org/base"] * len(ranges)
    out = [{"sources": [{"model": m, "layer_range": list(r)}]} for m, r in zip(models, ranges)]
    if extra:
        out[0].update(extra)
    return out


@pytest.mark.parametrize("text, words", [
    ("slices: [unclosed", "not valid YAML"),
    ("- 1\n- 2\n", "a YAML mapping"),
    (config(merge_method="slerp"), "merges weights"),
    (config(merge_method="passthrough", parameters={"t": 0.5}), "top-level parameters would change the weights"),
    (config(slices=[]), "no 'slices' list"),
    (config(slices=_slices((0, 2), (1, 4))), "repeats or reorders layers"),
    (config(slices=_slices((2, 4), (0, 2))), "repeats or reorders layers"),
    (config(slices=_slices((0, 2), (2, 4), models=["org/a", "org/b"])), "come from 2 models"),
    (config(slices=[{"sources": [{"model": "org/base", "layer_range": [0, 2]},
                                 {"model": "org/base", "layer_range": [0, 2]}]}]), "exactly one source"),
    (config(slices=_slices((0, 2), extra={"parameters": {"scale": 0.5}})), "has parameters"),
    (config(slices=[{"sources": [{"model": "org/base", "layer_range": [0, 2],
                                  "parameters": {"scale": [{"filter": "o_proj", "value": 0.0}]}}]}]),
     "has parameters"),
    (config(slices=_slices((2, 2))), "0 <= start < end"),
    (config(slices=[{"sources": [{"model": "org/base", "layer_range": "0-2"}]}]), "0 <= start < end"),
    (config(base_model="org/other"), "base_model names another model"),
])
def test_anything_but_a_drop_is_refused(text, words):
    with pytest.raises(ValueError, match=words):
        read_passthrough(text)


def test_a_range_past_the_model_is_refused():
    with pytest.raises(ValueError, match="goes past the model's 4 layers"):
        dropped_blocks([(0, 2), (3, 6)], 4)


def test_cli_from_mergekit_writes_an_evaluated_plan(tiny, tiny_dir, tmp_path, isolated_cache, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT)
    yaml_file = tmp_path / "pruneme.yaml"
    yaml_file.write_text(PRUNEME.format(model=json.dumps(str(tiny_dir))))
    out = tmp_path / "plan.json"
    code = cli.main(["plan", "--from-mergekit", str(yaml_file), "--device", "cpu", "--corpus",
                     str(tmp_path / "corpus.txt"), "--seq-len", "32", "--max-windows", "4", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert plan["remove"] == {"blocks": [1, 2], "attn": [], "mlp": []}
    assert plan["method"]["name"] == "mergekit_passthrough"
    assert plan["method"]["parameters"]["layer_ranges"] == [[0, 1], [3, 4]]
    assert plan["model"]["n_layers"] == 4 and plan["model"]["fingerprint"] == tiny.fingerprint
    windows = make_windows(tiny.tokenizer, TEXT, 32, max_windows=4)
    hf = reference.plain_model(tiny_dir)
    ev = plan["evaluation"]
    assert ev["perplexity_full"] == pytest.approx(reference.perplexity(hf, windows), rel=1e-4)
    assert ev["perplexity_pruned"] == pytest.approx(reference.perplexity(reference.without_layers(hf, {1, 2}), windows),
                                                    rel=1e-4)


@pytest.mark.parametrize("args, words", [
    (["--method", "reverse_order"], "leave out --method and --target"),
    ([], "merges weights"),
])
def test_cli_from_mergekit_refuses_with_one_line(tmp_path, capsys, args, words):
    yaml_file = tmp_path / "merge.yaml"
    yaml_file.write_text(config(merge_method="linear"))
    code = cli.main(["plan", "--from-mergekit", str(yaml_file), "--out", str(tmp_path / "p.json"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not (tmp_path / "p.json").exists()


def test_cli_plan_without_method_or_mergekit_is_a_usage_error(tmp_path, capsys):
    code = cli.main(["plan", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "give --method and --target (or --from-mergekit FILE)" in err
