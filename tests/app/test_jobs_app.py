"""Background jobs in the app (AppTest, tiny model): a job started on one page keeps
running after switching page and the page joins it when opened again; Cancel stops it;
a finished result shows at once, also from the disk cache (the healing page and the
Attention vs MLP removal sweep). The sidebar's jobs area is checked in the browser
(tests/e2e/test_jobs_browser.py): AppTest drops the sidebar after the first run."""
import pytest

from apptest import no_traceback, open_app
from analysis.core import jobs
from analysis.heal import run as heal_run
from analysis.model.removal import Removal
from analysis.heal.train import HealSettings

TIMEOUT = 600


def active_job(label_words: str) -> jobs.Job:
    found = [j for j in jobs.REGISTRY.active() if label_words in j.label]
    assert found, [j.label for j in jobs.REGISTRY.recent()]
    return found[0]


def removed_block_1(tiny) -> dict:
    """The playground's saved toggles (ui/toggles.py) with block 1 removed."""
    return {tiny.fingerprint: {"blocks": [1], "attn": [], "mlp": []}}


def test_healing_job_survives_a_page_change_and_can_be_cancelled(tiny, tiny_dir, isolated_cache):
    state = {"_pg_toggles": removed_block_1(tiny), "heal_steps": 5000, "heal_batch": 2, "heal_rank": 2}
    at = open_app("healing", model=str(tiny_dir), seq_len=16, state=state)
    assert any("Removed blocks 1" in m.value for m in at.markdown)
    at.button(key="heal_start").click().run()
    no_traceback(at)
    job = active_job("Healing")
    at.switch_page("pages/overview.py").run()
    no_traceback(at)
    assert not job.done, job.status_text()  # still running after the page change
    at.switch_page("pages/healing.py").run()  # back: the page joins the running job
    no_traceback(at)
    assert not job.done and active_job("Healing") is job
    assert any(job.label in m.value for m in at.markdown)
    at.button(key=f"page_cancel_{job.id}").click().run()
    assert job.wait(TIMEOUT) and job.state == jobs.CANCELLED
    at.run()
    no_traceback(at)
    assert at.button(key="heal_start")  # offered again; nothing of the cancelled run is kept
    assert not heal_run.checkpoint_dir(job.key).exists()


def test_finished_healing_shows_at_once_with_the_three_models(tiny, tiny_dir, isolated_cache):
    state = {"_pg_toggles": removed_block_1(tiny), "heal_steps": 8, "heal_batch": 2, "heal_rank": 2}
    at = open_app("healing", model=str(tiny_dir), seq_len=16, state=state)
    ctx = at.session_state["_ctx"]
    settings = HealSettings(steps=8, batch_size=2, rank=2)
    job = heal_run.submit_healing(tiny, Removal.of(blocks=[1]), settings, ctx.corpus, 16, None)
    assert job.wait(TIMEOUT) and job.state == jobs.DONE, job.error
    jobs.REGISTRY.clear()  # as after a server restart: the record comes from the disk cache
    at.run()
    no_traceback(at)
    assert any(s.value == "Full, pruned and healed" for s in at.subheader)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["full", "pruned", "healed"]
    assert table["evaluation perplexity"][2] == pytest.approx(job.result.perplexity["healed"]["evaluation"], abs=1e-4)
    assert len(at.code) == 3  # the three continuations of the same prompt
    assert all(c.value for c in at.code)


def test_removal_sweep_is_a_background_job(tiny, tiny_dir, isolated_cache):
    at = open_app("sublayers", model=str(tiny_dir), seq_len=16)
    at.button(key="sub_measure_removal").click().run()
    no_traceback(at)
    job = active_job("Removal sweep")
    assert job.lane == "sweep"
    at.switch_page("pages/similarity.py").run()
    no_traceback(at)
    assert job.state in (jobs.RUNNING, jobs.DONE)  # not abandoned by the page change
    assert job.wait(TIMEOUT) and job.state == jobs.DONE, job.error
    at.switch_page("pages/sublayers.py").run()
    no_traceback(at)
    assert any("Does similarity predict damage" in m.value for m in at.markdown)
    jobs.REGISTRY.clear()  # as after a server restart: the result comes from the disk cache
    at.run()
    assert any("Does similarity predict damage" in m.value for m in at.markdown)


def test_two_sessions_on_the_same_uncached_setting_share_one_pass(tiny, tiny_dir, isolated_cache, monkeypatch):
    """Issue 18: identical in-flight computations are single-flight. Two sessions open the
    same uncached view at the same time; the pass runs once (the second joins it) and
    both show its perplexity."""
    import threading
    import time

    from ui import context

    calls, real = [], context.analyse

    def slow_analyse(*args, **kwargs):
        calls.append(kwargs.get("with_lens"))
        time.sleep(2.0)  # long enough for the second session to arrive while it runs
        return real(*args, **kwargs)

    monkeypatch.setattr(context, "analyse", slow_analyse)
    sessions: list = [None, None]

    def open_one(i: int) -> None:
        sessions[i] = open_app("overview", model=str(tiny_dir), seq_len=16, max_windows=3)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    for t in threads:
        t.join(TIMEOUT)
    assert calls == [False]  # one lens-free pass for both sessions
    shown = [{m.label: m.value for m in at.metric}["Perplexity"] for at in sessions]
    assert shown[0] == shown[1]


def test_healing_on_few_windows_warns_and_gives_intervals(tiny, tiny_dir, isolated_cache):
    """Issue 29 (4): 10 windows of 16 tokens hold out 2 for evaluation. The page says the
    set is too small and shows 95% intervals over those windows for each model's
    evaluation perplexity and for the recovery, checked against per-window losses of plain
    transformers models (full, blocks deleted, the healed checkpoint) and a
    finite-difference delta method."""
    import math
    import re
    import statistics

    import numpy as np

    import reference
    from analysis.data.evaluation import windows_for

    state = {"_pg_toggles": removed_block_1(tiny), "heal_steps": 4, "heal_batch": 2, "heal_rank": 2}
    at = open_app("healing", model=str(tiny_dir), seq_len=16, max_windows=10, state=state)
    assert any("Only 2 evaluation windows (32 predicted tokens)" in w.value for w in at.warning)  # before healing
    ctx = at.session_state["_ctx"]
    job = heal_run.submit_healing(tiny, Removal.of(blocks=[1]), HealSettings(steps=4, batch_size=2, rank=2),
                                  ctx.corpus, 16, 10)
    assert job.wait(TIMEOUT) and job.state == jobs.DONE, job.error
    at.run()
    no_traceback(at)
    assert any("Only 2 evaluation windows (32 predicted tokens)" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    evaluation = windows_for(tiny, ctx.corpus, 16, 10, "evaluation")
    plain = reference.plain_model(tiny_dir)
    nll = {"full": reference.window_nll(plain, evaluation), "pruned": reference.window_nll(reference.without_layers(plain, {1}), evaluation),
           "healed": reference.window_nll(reference.plain_model(heal_run.checkpoint_dir(job.key)), evaluation)}
    caption = next(c.value for c in at.caption if c.value.startswith("95% intervals"))
    for name, values in nll.items():
        m, half = statistics.fmean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))
        low, high = map(float, re.search(rf"{name} (\d+\.\d+) to (\d+\.\d+)", caption).groups())
        assert (low, high) == pytest.approx((math.exp(m - half), math.exp(m + half)), rel=2e-3), name
    means = np.array([statistics.fmean(nll[k]) for k in ("full", "pruned", "healed")])
    F, P, H = np.exp(means)
    assert P > F  # removing block 1 costs perplexity here, so the recovery is shown

    def recovery(mu):
        f, p, h = np.exp(mu)
        return (p - h) / (p - f)

    grad = np.array([(recovery(means + e) - recovery(means - e)) / 2e-6 for e in np.eye(3) * 1e-6])
    se = math.sqrt(grad @ np.cov(np.array([nll[k] for k in ("full", "pruned", "healed")])) @ grad / 2)
    info = next(i.value for i in at.info if i.value.startswith("Healing recovered"))
    shown = re.search(r"recovered (-?[\d.]+)% \(95% interval (-?[\d.]+)% to (-?[\d.]+)%\)", info)
    assert shown, info
    r = recovery(means)
    assert float(shown.group(1)) == pytest.approx(100 * r, abs=0.15)
    assert (float(shown.group(2)), float(shown.group(3))) == pytest.approx((100 * (r - 1.96 * se),
                                                                            100 * (r + 1.96 * se)), abs=0.15)
