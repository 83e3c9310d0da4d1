"""The playground's Tasks panel in AppTest on the tiny model: Run starts a background job
for the current toggles; once done, the scores equal lm-eval's on the same removal and
the flips are listed; an unknown task name is refused with the list of offline tasks and
the page keeps working."""
from analysis.model.removal import Removal
from analysis.tasks import engine, scores, suite
from apptest import no_traceback, open_app


def _app(tiny_dir):
    return open_app("playground", model=str(tiny_dir), seq_len=32, max_windows=3, query={"rm_blocks": "1"})


def test_tasks_panel_runs_the_current_removal_in_the_background(tiny, tiny_dir, isolated_cache):
    at = _app(tiny_dir)
    at.number_input(key="pg_tasks_limit").set_value(4).run()
    at.button(key="pg_tasks_run").click().run()
    no_traceback(at)
    taskset = engine.resolve_tasks(list(suite.TASKS))
    removal = Removal.of(blocks=[1])
    job = scores.COMPARISON.lookup(engine.comparison_key(tiny, removal, taskset, 4, None))
    assert job is not None and job.wait(timeout=600) and job.error is None, job and job.error
    at.run()
    no_traceback(at)
    expected = engine.compare(tiny, removal, taskset, limit=4)
    table = next(df.value for df in at.dataframe if "metric" in df.value.columns)
    for _, row in table.iterrows():
        assert row["full"] == round(expected.full[row["task"]].metrics[row["metric"]]["value"], 4)
        assert row["pruned"] == round(expected.pruned[row["task"]].metrics[row["metric"]]["value"], 4)
    assert set(table["task"]) == set(suite.TASKS)
    assert sum("items right → wrong" in m.value for m in at.markdown) == len(suite.TASKS)


def test_an_unknown_task_name_is_refused_and_the_page_works(tiny, tiny_dir, isolated_cache):
    at = _app(tiny_dir)
    at.text_input(key="pg_tasks_other").set_value("no_such_task").run()
    no_traceback(at)
    assert any("unknown task" in e.value and "layerlab\\_agreement" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "pg_tasks_run"]
    assert any(m.label == "Pruned perplexity" for m in at.metric)


def test_healing_page_judges_full_pruned_and_healed_on_tasks(tiny, tiny_dir, isolated_cache):
    from analysis.core import jobs
    from analysis.heal import run as heal_run
    from analysis.heal.train import HealSettings
    state = {"_pg_toggles": {tiny.fingerprint: {"blocks": [1], "attn": [], "mlp": []}}, "heal_steps": 8,
             "heal_batch": 2, "heal_rank": 2}
    at = open_app("healing", model=str(tiny_dir), seq_len=16, state=state)
    ctx = at.session_state["_ctx"]
    removal = Removal.of(blocks=[1])
    heal = heal_run.submit_healing(tiny, removal, HealSettings(steps=8, batch_size=2, rank=2), ctx.corpus, 16, None)
    assert heal.wait(600) and heal.state == jobs.DONE, heal.error
    at.run()
    assert any(s.value == "Tasks before and after healing (lm-eval)" for s in at.subheader)
    at.number_input(key="heal_tasks_limit").set_value(3).run()
    at.button(key="heal_tasks_run").click().run()
    no_traceback(at)
    taskset = engine.resolve_tasks(list(suite.TASKS))
    healed = engine.Healed(str(heal_run.checkpoint_dir(heal.key)), heal.key)
    job = scores.COMPARISON.lookup(engine.comparison_key(tiny, removal, taskset, 3, None, healed))
    assert job is not None and job.wait(timeout=600) and job.error is None, job and job.error
    at.run()
    no_traceback(at)
    by_path = engine.evaluate_checkpoint(healed.path, taskset, limit=3)
    table = next(df.value for df in at.dataframe if "healed" in df.value.columns)
    for _, row in table.iterrows():
        assert row["healed"] == round(by_path[row["task"]].metrics[row["metric"]]["value"], 4)
