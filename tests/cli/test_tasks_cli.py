"""`python -m analysis tasks` on the tiny model: full, pruned and healed accuracy side by
side with lm-eval's standard errors, the flips, the plan's evaluation.tasks, and one
`error:` line with a non-zero exit for bad input."""
import json

import pytest

from analysis.cli import main
from analysis.model.removal import Removal
from analysis.plans.apply import apply_plan
from analysis.plans.check import parse_plan
from analysis.plans.schema import make_plan
from analysis.tasks import engine, scores
from unit.tasks.test_tasks import GEN, MC, write_jsonl

REMOVAL = Removal.of(blocks=[2], mlp=[0])


@pytest.fixture()
def inputs(tiny, tmp_path, isolated_cache):
    plan = tmp_path / "plan.json"
    plan.write_text(make_plan(tiny, REMOVAL, "manual", {}).to_json())
    return plan, write_jsonl(tmp_path / "mc.jsonl", MC), write_jsonl(tmp_path / "gen.jsonl", GEN)


def test_tasks_full_pruned_and_healed_side_by_side(tiny, tiny_dir, inputs, tmp_path, capsys):
    plan, mc, gen = inputs
    healed = apply_plan(make_plan(tiny, REMOVAL, "manual", {}), tiny_dir, tmp_path / "healed")
    out, plan_out = tmp_path / "tasks.json", tmp_path / "plan-tasks.json"
    assert main(["tasks", "--plan", str(plan), "--model", str(tiny_dir), "--device", "cpu", "--task-file", str(mc),
                 "--task-file", str(gen), "--healed", str(healed), "--out", str(out), "--write-plan",
                 str(plan_out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    taskset = engine.resolve_tasks([], [mc, gen])
    expected = {"full": engine.evaluate_tasks(tiny, Removal(), taskset),
                "pruned": engine.evaluate_checkpoint(str(healed), taskset),  # the apply checkpoint, by path
                "healed": engine.evaluate_checkpoint(str(healed), taskset)}
    assert set(report["tasks"]) == set(taskset.names)
    for name, entry in report["tasks"].items():
        for side, by_task in expected.items():
            for metric, value in by_task[name].metrics.items():
                assert entry[side][metric]["value"] == pytest.approx(value["value"])
                assert entry[side][metric]["stderr"] == pytest.approx(value["stderr"])
        flips = scores.flips(expected["full"][name], expected["pruned"][name])
        assert entry["flips"]["right_to_wrong"] + entry["flips"]["wrong_to_right"] == len(flips)
        assert [f["doc_id"] for f in entry["flips"]["items"]] == [f.doc_id for f in flips]
        assert f"{name} {entry['main_metric']}: full " in printed
    assert report["removal"] == REMOVAL.to_dict()
    check = parse_plan(plan_out.read_bytes(), tiny)
    assert not check.errors, check.errors
    assert set(check.plan.evaluation["tasks"]) == set(taskset.names)


def test_a_checkpoint_by_path(tiny_dir, inputs, tmp_path):
    _, mc, _ = inputs
    out = tmp_path / "tasks.json"
    assert main(["tasks", "--checkpoint", str(tiny_dir), "--task-file", str(mc), "--limit", "3", "--out",
                 str(out)]) == 0
    entry = next(iter(json.loads(out.read_text())["tasks"].values()))
    assert entry["n"] == 3 and "acc" in entry["checkpoint"]


@pytest.mark.parametrize("extra, code, message", [
    (["--tasks", "no_such_task"], 1, "unknown task 'no_such_task'; available offline: layerlab_agreement"),
    (["--tasks", "piqa", "--limit", "1"], 1, "dataset cannot be reached"),
    (["--task-file", "BAD"], 1, "bad.jsonl line 1: missing field 'target'"),
    (["--task-file", "MISSING"], 1, "cannot read task file"),
    ([], 1, "no task given"),
    (["--limit", "0"], 2, "expected a positive integer"),
])
def test_bad_input_exits_nonzero_with_one_line(tiny_dir, inputs, tmp_path, capsys, extra, code, message):
    plan, _, _ = inputs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    extra = [str(bad) if e == "BAD" else str(tmp_path / "nope.jsonl") if e == "MISSING" else e for e in extra]
    assert main(["tasks", "--plan", str(plan), "--model", str(tiny_dir), "--device", "cpu", "--out",
                 str(tmp_path / "t.json")] + extra) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("error:")
    assert not (tmp_path / "t.json").exists()


def test_plan_or_checkpoint_is_required(tmp_path, capsys):
    assert main(["tasks", "--tasks", "layerlab_agreement", "--out", str(tmp_path / "t.json")]) == 2
    assert "give --plan plan.json or --checkpoint DIR" in capsys.readouterr().err


def test_report_has_a_tasks_section_and_the_html_report_shows_it(tiny_dir, inputs, tmp_path):
    _, mc, _ = inputs
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    assert main(["report", "--model", str(tiny_dir), "--device", "cpu", "--corpus", "builtin:all", "--seq-len", "24",
                 "--max-windows", "4", "--skip-removal", "--skip-lens", "--task-file", str(mc), "--task-limit", "5",
                 "--out", str(out), "--html", str(page)]) == 0
    section = json.loads(out.read_text())["tasks"]
    taskset = engine.resolve_tasks([], [mc])
    by_path = engine.evaluate_checkpoint(str(tiny_dir), taskset, limit=5)
    assert set(section) == set(by_path)
    for name, score in by_path.items():
        assert section[name]["n"] == 5 and section[name]["main_metric"] == "acc"
        for metric, value in score.metrics.items():
            assert section[name]["metrics"][metric]["value"] == pytest.approx(value["value"])
    assert "Tasks (lm-eval)" in page.read_text()


def test_report_refuses_a_bad_task_file_before_the_long_work(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 5}\n')
    assert main(["report", "--model", str(tiny_dir), "--corpus", "builtin:all", "--seq-len", "24", "--task-file",
                 str(bad), "--out", str(tmp_path / "r.json")]) == 1
    assert "bad.jsonl line 1: field 'answer' must be an index" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
