"""The Pruning curves page (AppTest, tiny model): computed as a background job on
request, then drawn from the finished job or the disk cache: a chart per kind, the k = 3
winners table, the point's metrics equal the stored curve, the point's plan is valid, and
"Open in the playground here" sets exactly that removal."""
from apptest import no_traceback, open_app
from analysis import jobs
from analysis.pruning.plan_check import parse_plan

TIMEOUT = 900


def test_curves_page_computes_in_the_background_and_opens_a_point(tiny, tiny_dir, isolated_cache):
    at = open_app("curves", model=str(tiny_dir), seq_len=16, max_windows=10)
    assert any("Not computed yet" in i.value for i in at.info)
    at.button(key="curves_run").click().run()
    no_traceback(at)
    running = [j for j in jobs.REGISTRY.active() if j.label == "Pruning curves"]
    assert len(running) == 1
    assert running[0].wait(TIMEOUT) and running[0].state == jobs.DONE, running[0].error
    jobs.REGISTRY.clear()  # as after a restart: the result comes from the disk cache
    at.run()
    no_traceback(at)
    result = jobs.lookup(running[0].key, running[0].persist).result
    assert len(at.get("plotly_chart")) >= 3  # one chart per kind (+ the oracle's)
    curve = result.curve("blocks", at.selectbox(key="curves_method_blocks").value)
    k = int(at.number_input(key="curves_k_blocks").value)
    shown = [m.value for m in at.metric if m.label == "Evaluation perplexity"]  # one per tab: blocks first
    assert shown[0] == f"{curve.eval_ppl[curve.k.index(k)]:.3f}"
    assert "Layer skipping: mean fraction of blocks" in {m.label for m in at.metric}
    at.button(key="curves_open_blocks").click().run()
    removal = at.session_state["_pg_method"][tiny.fingerprint]["removal"]
    assert sorted(removal.blocks) == sorted(curve.removal(k).blocks)


def test_curves_page_needs_evaluation_windows(tiny_dir, isolated_cache):
    at = open_app("curves", model=str(tiny_dir), seq_len=16, max_windows=3)
    assert any("too few to hold out" in w.value for w in at.warning)
