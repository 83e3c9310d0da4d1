"""Task accuracy by lm-eval on the tiny model: the in-process run with removals equals
lm-eval on its own run on the checkpoint (the full model's directory, and the one
`apply` writes), item by item; task files are checked line by line; results are cached;
flips are the items whose score changed; the offline suite is what its generator makes."""
import json

import pytest

from analysis.model.removal import Removal
from analysis.plans.apply import apply_plan
from analysis.plans.schema import make_plan
from analysis.tasks import engine, files, scores, suite

MC = [{"question": q, "choices": c, "answer": a} for q, c, a in [
    ("The cat sat on the", ["mat.", "moon.", "river."], 0), ("A dog barked at the", ["moon", "mill"], 1),
    ("ALICE: Where are you", ["going?", "gone?"], 0), ("| Mars |", ["2 |", "1 |", "3 |"], 2),
    ("def add(a, b):", ["return a + b", "return a - b"], 0), ("BOB: To the market, then", ["home.", "away."], 1),
    ("The river ran past the old", ["mill.", "cat."], 0), ("| planet |", ["moons |", "cats |"], 0)]]
GEN = [{"prompt": p, "target": t} for p, t in [("The cat sat on the", "mat."), ("A dog barked", "at the moon"),
                                               ("ALICE:", "Where"), ("| Earth |", "1 |"), ("def add(a, b):", "return")]]
REMOVAL = Removal.of(blocks=[1], attn=[2], mlp=[3])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def taskset(tmp_path, isolated_cache):
    return engine.resolve_tasks([], [write_jsonl(tmp_path / "mc.jsonl", MC), write_jsonl(tmp_path / "gen.jsonl", GEN)])


def assert_same_items(ours: dict, theirs: dict):
    assert ours.keys() == theirs.keys()
    for name, score in ours.items():
        other = theirs[name]
        assert score.metrics.keys() == other.metrics.keys()
        for metric, value in score.metrics.items():
            assert value == pytest.approx(other.metrics[metric])
        assert [i.doc_id for i in score.items] == [i.doc_id for i in other.items]
        for a, b in zip(score.items, other.items):
            assert a.score == b.score and a.target == b.target and a.prompt == b.prompt
            if score.output_type == "multiple_choice":
                assert a.loglikelihoods == pytest.approx(b.loglikelihoods, abs=1e-4)
            else:
                assert a.output == b.output


def test_full_and_pruned_in_process_equal_lm_eval_on_the_checkpoints(tiny, tiny_dir, taskset, tmp_path):
    full = engine.evaluate_tasks(tiny, Removal(), taskset)
    assert_same_items(full, engine.evaluate_checkpoint(str(tiny_dir), taskset))
    out = apply_plan(make_plan(tiny, REMOVAL, "manual", {}), tiny_dir, tmp_path / "pruned")
    pruned = engine.evaluate_tasks(tiny, REMOVAL, taskset)
    assert_same_items(pruned, engine.evaluate_checkpoint(str(out), taskset))
    mc = next(n for n in taskset.names if pruned[n].output_type == "multiple_choice")
    assert pruned[mc].items[0].loglikelihoods != pytest.approx(full[mc].items[0].loglikelihoods, abs=1e-3)
    assert pruned[mc].n == len(MC) and set(pruned[mc].metrics) >= {"acc", "acc_norm"}
    assert pruned[mc].metrics["acc"]["stderr"] > 0
    # the shared model is unchanged afterwards: a full run again gives the same numbers
    assert_same_items(engine.evaluate_tasks(tiny, Removal(), taskset, limit=3),
                      engine.evaluate_checkpoint(str(tiny_dir), taskset, limit=3))


def test_results_are_cached_by_removal_task_and_settings(tiny, taskset, monkeypatch):
    first = engine.evaluate_tasks(tiny, REMOVAL, taskset, limit=4)
    monkeypatch.setattr(engine, "run_lm", lambda *a, **k: pytest.fail("recomputed a cached task"))
    again = engine.evaluate_tasks(tiny, REMOVAL, taskset, limit=4)
    assert {n: s.to_dict() for n, s in again.items()} == {n: s.to_dict() for n, s in first.items()}
    with pytest.raises(pytest.fail.Exception):
        engine.evaluate_tasks(tiny, REMOVAL, taskset, limit=5)


def test_flips_are_the_items_whose_score_changed():
    def score(values):
        items = [scores.TaskItem(i, s, "0", [-1.0, -2.0]) for i, s in enumerate(values)]
        return scores.TaskScore("t", "v", "multiple_choice", len(items), 0, {"acc": {"value": 0, "stderr": 0}}, items)
    changed = scores.flips(score([1, 0, 1, 0]), score([1, 1, 0, 0]))
    assert [(f.doc_id, f.direction) for f in changed] == [(1, "wrong to right"), (2, "right to wrong")]


@pytest.mark.parametrize("line, problem", [
    ("{not json", "line 2: not valid JSON"),
    ('{"question": "q", "choices": ["a", "b"]}', "line 2: missing field 'answer'"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "line 2: field 'answer' must be an index"),
    ('{"question": "q", "choices": ["a"], "answer": 0}', "line 2: field 'choices' must be a list of at least 2"),
    ('{"prompt": "p", "target": "t"}', "line 2: a generate until item in a file of multiple choice items"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 0, "hint": 1}', "line 2: unknown field 'hint'"),
    ('[1, 2]', "line 2: expected a JSON object"),
    ('{"text": "x"}', "line 2: needs the field 'question'"),
])
def test_a_malformed_task_file_names_the_line_and_the_field(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(MC[0]) + "\n" + line + "\n")
    with pytest.raises(files.TaskFileError, match=problem.replace("(", r"\(")):
        files.read_task_file(path)


def test_empty_and_oversized_task_files_are_refused(tmp_path, monkeypatch):
    with pytest.raises(files.TaskFileError, match="has no items"):
        files.read_task_file(write_jsonl(tmp_path / "empty.jsonl", []))
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(files.TaskFileError, match="the limit is"):
        files.read_task_file(write_jsonl(tmp_path / "big.jsonl", MC))


def test_the_mapping_is_the_documented_one(tmp_path):
    mc = files.task_config(files.read_task_file(write_jsonl(tmp_path / "a.jsonl", MC)))
    assert (mc["output_type"], mc["doc_to_text"], mc["doc_to_choice"], mc["doc_to_target"]) == \
        ("multiple_choice", "{{question}}", "{{choices}}", "{{answer}}")
    assert [m["metric"] for m in mc["metric_list"]] == ["acc", "acc_norm"] and "target_delimiter" not in mc
    gen = files.task_config(files.read_task_file(write_jsonl(tmp_path / "b.jsonl", GEN)))
    assert (gen["output_type"], gen["doc_to_text"], gen["doc_to_target"]) == ("generate_until", "{{prompt}}", "{{target}}")
    assert gen["generation_kwargs"]["until"] == ["\n"] and gen["generation_kwargs"]["do_sample"] is False
    assert [m["metric"] for m in gen["metric_list"]] == ["exact_match"]


def test_the_offline_suite_is_what_its_generator_makes():
    built = suite.build()
    assert set(built) == set(suite.TASKS)
    for name, items in built.items():
        shipped = [json.loads(line) for line in (suite.SUITE_DIR / f"{name}.jsonl").read_text().splitlines()]
        assert shipped == items
        assert len(items) >= 200 and len({json.dumps(i) for i in items}) == len(items)
        task = files.read_task_file(suite.SUITE_DIR / f"{name}.jsonl", name=name)
        assert task.output_type == suite.TASKS[name][0]
    answers = [i["answer"] for i in built["layerlab_agreement"]]
    assert 0.35 < sum(answers) / len(answers) < 0.65  # the right choice is not always first


def test_an_unknown_task_lists_the_available_ones(isolated_cache):
    with pytest.raises(engine.TaskError, match="unknown task 'no_such_task'; available offline: layerlab_agreement"):
        engine.resolve_tasks(["no_such_task"])
    with pytest.raises(engine.TaskError, match="no task given"):
        engine.resolve_tasks([" "])


def test_few_shot_in_process_equals_lm_eval_on_the_checkpoint_and_leaves_global_seeds_alone(tiny, tiny_dir, taskset):
    import numpy as np
    import torch
    np.random.seed(7)
    torch.manual_seed(7)
    expected = (np.random.rand(), torch.rand(1).item())
    np.random.seed(7)
    torch.manual_seed(7)
    ours = engine.evaluate_tasks(tiny, Removal(), taskset, num_fewshot=2, limit=4)
    assert (np.random.rand(), torch.rand(1).item()) == expected  # lm-eval did not reseed numpy or torch
    assert_same_items(ours, engine.evaluate_checkpoint(str(tiny_dir), taskset, num_fewshot=2, limit=4))
    assert all(s.num_fewshot == 2 for s in ours.values())
    assert any("\n\n" in item.prompt for s in ours.values() for item in s.items)  # the shots are in the prompt


def test_cancel_stops_a_run_between_batches_and_keeps_nothing(tiny, taskset, monkeypatch):
    from analysis.core import jobs
    from analysis.model import unwrapped as unwrapped_module
    calls = []

    def stop():
        calls.append(1)
        if len(calls) > 1:
            raise jobs.Cancelled("cancelled")
    with pytest.raises(jobs.Cancelled):
        engine.compare(tiny, REMOVAL, taskset, limit=4, check=stop)
    assert len(calls) == 2  # the first batch ran, the second stopped
    assert unwrapped_module.unwrapped(tiny).removal == Removal()  # the shared decoder is back to the full model
    def stored(name):
        return scores.TASK_RESULT.load(engine.task_key(tiny, Removal(), name, taskset.version_of(name), None, 4))
    assert stored(taskset.names[0]) is not None  # the task that finished (one batch) is kept
    assert stored(taskset.names[1]) is None  # the stopped one is not
