"""The pruning-curves page in AppTest on the tiny model: the curves run as a background
job started from the page; once done, the page shows the numbers of the computed curves
(checked against `pruning_curves` itself, whose values tests/unit/search/test_curves.py checks
against plain transformers), a point opens the playground with exactly its toggles and
on the evaluation windows, and each point downloads as a valid plan."""
import pytest

from apptest import no_traceback, open_app, toggles
from analysis.core import jobs
from analysis.plans.check import parse_plan

SEQ, WINDOWS, TIMEOUT = 16, 10, 900


def _page(tiny_dir):
    return open_app("curves", model=str(tiny_dir), seq_len=SEQ, max_windows=WINDOWS)


def test_curves_job_then_points_open_the_playground_and_export_plans(tiny, tiny_dir, isolated_cache):
    at = _page(tiny_dir)
    assert any("Not computed yet" in i.value for i in at.info)
    at.button(key="curves_run").click().run()
    no_traceback(at)
    found = [j for j in jobs.REGISTRY.active() + jobs.REGISTRY.recent() if "Pruning curves" in j.label]
    assert found and found[0].lane == "sweep"  # one heavy sweep-like job at a time
    job = found[0]
    assert job.wait(TIMEOUT) and job.state == jobs.DONE, job.error
    result = job.result
    jobs.REGISTRY.clear()  # as after a server restart: the curves come from the disk cache
    at.run()
    no_traceback(at)
    assert [t.label for t in at.tabs][:3] == ["whole blocks", "attention sublayers only", "MLP sublayers only"]

    curve = result.curve("blocks", "reverse_order")
    at.selectbox(key="curves_method_blocks").set_value("reverse_order")
    at.number_input(key="curves_k_blocks").set_value(2)
    at.run()
    no_traceback(at)
    metrics = {m.label: m.value for m in at.tabs[0].metric}  # the blocks tab
    assert metrics["Evaluation perplexity"] == f"{curve.eval_ppl[1]:.3f}"
    assert metrics["Full model (evaluation)"] == f"{result.full_ppl['evaluation']:.3f}"
    assert curve.removed[1] == [tiny.n_layers - 3, tiny.n_layers - 2]
    check_intervals_and_warning(at, tiny, tiny_dir, curve.removed[1])
    check_charts(at, result)
    depth = result.dynamic_depth
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layer skipping: mean fraction of blocks"] == f"{100 * depth.skipping.mean_fraction:.1f}%"
    assert metrics["Early exit: mean fraction of blocks"] == f"{100 * depth.early_exit.mean_fraction:.1f}%"

    plan = parse_plan(next(c.value for c in at.tabs[0].code if "layer-lab/pruning-plan" in c.value))
    assert plan.ok, plan.message()
    assert plan.plan.remove["blocks"] == curve.removed[1] and plan.plan.method["name"] == "reverse_order"
    assert plan.plan.evaluation["windows"] == "evaluation"
    assert plan.plan.evaluation["perplexity_pruned"] == pytest.approx(curve.eval_ppl[1])

    check_tasks_along_the_curves(at, tiny, result)
    at.button(key="curves_open_blocks").click().run()
    no_traceback(at)
    fp = tiny.fingerprint
    assert toggles(at, fp)["blocks"] == curve.removed[1]
    assert at.session_state["pg_show_on"] == "evaluation"
    shown = {m.label: m.value for m in at.metric}
    assert shown["Pruned perplexity"] == f"{curve.eval_ppl[1]:.3f}"  # the same windows, the same number
    assert shown["Full perplexity"] == f"{result.full_ppl['evaluation']:.3f}"
    assert at.query_params["show_on"] == "evaluation" and at.query_params["rm_blocks"] == "1,2"


def test_too_few_windows_to_hold_out_says_so(tiny, tiny_dir, isolated_cache):
    at = open_app("curves", model=str(tiny_dir), seq_len=SEQ, max_windows=3)
    assert any("Pruning curves need evaluation windows" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.button


def check_intervals_and_warning(at, tiny, tiny_dir, removed):
    """Issue 29 (4): 10 windows hold out 2 for evaluation: the page warns, and the point's
    evaluation perplexity and change vs full carry 95% intervals over those windows
    (checked against plain transformers' per-window losses, blocks deleted)."""
    import math
    import re
    import statistics

    import reference
    from analysis.data.corpus import load_corpus
    from analysis.data.evaluation import windows_for

    assert any("Only 2 evaluation windows (32 predicted tokens)" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    evaluation = windows_for(tiny, load_corpus("builtin:all"), SEQ, WINDOWS, "evaluation")
    plain = reference.plain_model(tiny_dir)
    full = reference.window_nll(plain, evaluation)
    pruned = reference.window_nll(reference.without_layers(plain, set(removed)), evaluation)
    diff = [p - f for p, f in zip(pruned, full)]
    half = lambda v: 1.96 * statistics.stdev(v) / math.sqrt(len(v))
    caption = next(c.value for c in at.tabs[0].caption if c.value.startswith("95% intervals over the 2"))
    number = r"([+-]?\d+\.\d+)"
    ppl = re.search(f"evaluation perplexity {number} to {number}", caption).groups()
    m = statistics.fmean(pruned)
    assert tuple(map(float, ppl)) == pytest.approx((math.exp(m - half(pruned)), math.exp(m + half(pruned))), rel=2e-3)
    delta = re.search(f"change vs full {number}% to {number}%", caption).groups()
    d = statistics.fmean(diff)
    assert tuple(map(float, delta)) == pytest.approx((100 * math.expm1(d - half(diff)), 100 * math.expm1(d + half(diff))),
                                                      abs=0.06)


def check_charts(at, result):
    """Issue 29 (5): the y axis of the curves spans the useful methods (reverse order and
    the random band do not set it); a point above it is drawn at the top with its value
    written; the dynamic-depth chart spans every number of blocks."""
    import json

    import numpy as np

    from analysis.reporting.figures.curves import RANGE_EXCLUDED

    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    spec = charts[0]  # the blocks tab's curves
    low, high = spec["layout"]["yaxis"]["range"]
    useful = [v for c in result.curves.values() if c.kind == "blocks" and c.method not in RANGE_EXCLUDED
              for v in c.eval_ppl] + [result.full_ppl["evaluation"]]
    assert low <= np.log10(min(useful)) and np.log10(max(useful)) <= high < np.log10(max(useful)) + 0.5
    top = 10 ** high
    notes = [a["text"] for a in spec["layout"]["annotations"] if "↑" in a["text"]]
    for trace in spec["data"]:
        for y, data in zip(trace.get("y", []), trace.get("customdata") or []):
            if len(data) == 4 and data[3] > top:
                assert y == pytest.approx(top) and f"{data[3]:.3g} ↑" in notes
    depth = next(c for c in charts if "blocks run by the oracle" in c["layout"]["xaxis"]["title"]["text"])
    L = result.model["n_layers"]
    assert depth["layout"]["xaxis"]["range"][0] < 0 and depth["layout"]["xaxis"]["range"][1] > 100
    assert len(depth["layout"]["xaxis"]["tickvals"]) == L + 1
    assert any("mean" in a["text"] for a in depth["layout"]["annotations"])


def _curves_jobs():
    return [j for j in jobs.REGISTRY.active() + jobs.REGISTRY.recent() if "Pruning curves" in j.label]


def test_kinds_and_k_max_choose_what_is_computed(tiny, tiny_dir, isolated_cache):
    at = _page(tiny_dir)
    assert at.multiselect(key="curves_kinds").value == ["blocks", "attn", "mlp"]
    assert at.number_input(key="curves_k_max").value == tiny.n_layers - 1
    at.multiselect(key="curves_kinds").set_value([]).run()
    assert any("Pick at least one kind" in w.value for w in at.warning) and not at.button
    at.multiselect(key="curves_kinds").set_value(["mlp"])
    at.number_input(key="curves_k_max").set_value(2)
    at.run()
    assert any("--kinds mlp --k-max 2" in i.value for i in at.info), [i.value for i in at.info]
    at.button(key="curves_run").click().run()
    no_traceback(at)
    job = _curves_jobs()[0]
    assert job.wait(TIMEOUT) and job.state == jobs.DONE, job.error
    assert job.result.kinds() == ["mlp"] and job.result.curve("mlp", "reverse_order").k == [1, 2]
    jobs.REGISTRY.clear()
    at.run()
    no_traceback(at)
    assert [t.label for t in at.tabs] == ["MLP sublayers only"]
    assert at.number_input(key="curves_k_mlp").max == 2


def test_page_reads_a_cli_run_of_the_chosen_or_more_kinds(tiny, tiny_dir, isolated_cache, tmp_path):
    from analysis import cli
    code = cli.main(["curves", "--model", str(tiny_dir), "--device", "cpu", "--corpus", "builtin:all", "--seq-len",
                     str(SEQ), "--max-windows", str(WINDOWS), "--kinds", "mlp,blocks", "--k-max", "2",
                     "--out", str(tmp_path / "curves.json")])
    assert code == 0
    at = _page(tiny_dir)
    assert any("Not computed yet" in i.value for i in at.info)  # all kinds, every k: not what the CLI ran
    at.multiselect(key="curves_kinds").set_value(["blocks", "mlp"])
    at.number_input(key="curves_k_max").set_value(2)
    at.run()
    no_traceback(at)
    assert "curves_run" not in [b.key for b in at.button]
    assert [t.label for t in at.tabs] == ["whole blocks", "MLP sublayers only"]
    assert not any("stored run of" in c.value for c in at.caption)
    at.multiselect(key="curves_kinds").set_value(["blocks"])
    at.number_input(key="curves_k_max").set_value(1)
    at.run()
    no_traceback(at)
    assert [t.label for t in at.tabs] == ["whole blocks"]  # read from the run of more kinds and a larger k
    assert any("From a stored run of blocks, mlp up to k = 2" in c.value for c in at.caption)
    at.multiselect(key="curves_kinds").set_value(["attn"]).run()
    assert any("Not computed yet" in i.value for i in at.info) and not _curves_jobs()


def check_tasks_along_the_curves(at, tiny, result):
    """Issue 25: each method's accuracy at the chosen k (here k = 3, the tiny model having
    4 blocks, and the k where perplexity doubles), from lm-eval on that removal, drawn
    under the perplexity of the same points."""
    import json

    from analysis.search import curve_tasks as ct
    from analysis.tasks import engine, suite
    from plotly_json import array

    at.number_input(key="curves_tasks_blocks_limit").set_value(3).run()
    at.button(key="curves_tasks_blocks_run").click().run()
    no_traceback(at)
    taskset = engine.resolve_tasks(list(suite.TASKS))
    job = ct.CURVE_TASKS.lookup(ct.curve_tasks_key(tiny, result, "blocks", taskset, 3))
    assert job is not None and job.wait(TIMEOUT) and job.state == jobs.DONE, job and job.error
    at.run()
    no_traceback(at)
    found = job.result
    assert found.ks == ct.chosen_ks(result, "blocks") and 3 in found.ks
    curve = result.curve("blocks", "reverse_order")
    for point in found.points["reverse_order"]:
        scores = engine.evaluate_tasks(tiny, curve.removal(point["k"]), taskset, limit=3)
        assert point["tasks"]["layerlab_agreement"]["value"] == scores["layerlab_agreement"].accuracy
        assert point["eval_ppl"] == curve.eval_ppl[curve.k.index(point["k"])]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    figure = next(c for c in charts if any("layerlab_agreement" in a.get("text", "")
                                            for a in c["layout"].get("annotations", [])))
    lines = [t for t in figure["data"] if t["name"] == "reverse_order"]
    assert list(array(lines[1]["y"])) == [p["tasks"]["layerlab_agreement"]["value"]
                                          for p in found.points["reverse_order"]]
