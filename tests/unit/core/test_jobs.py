"""Background jobs (issue 17): single-flight by key, lanes with queue positions,
cooperative cancel, clear failure messages, results kept on disk, no half-written output."""
import threading

import pytest

from analysis.core import caches, jobs, store
from analysis.core.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Persist, Registry
from analysis.core.progress import Eta

TIMEOUT = 30


@pytest.fixture()
def registry(isolated_cache):
    return Registry({"heal": 1, "sweep": 1})


def blocking(gate: threading.Event, calls: list, result=None):
    """A job function that reports progress until `gate` is set."""
    def fn(ctx):
        calls.append(1)
        ctx.progress(0.1, "started")
        while not gate.wait(0.01):
            ctx.check_cancelled()
        ctx.progress(0.9, "finishing")
        return result if result is not None else {"value": len(calls)}
    return fn


def wait_for(predicate, timeout=TIMEOUT):
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return predicate()


def test_identical_requests_share_one_job_and_its_progress(registry):
    gate, calls = threading.Event(), []
    first = registry.submit("k1", blocking(gate, calls), label="a", lane="heal")
    assert wait_for(lambda: first.message == "started")
    second = registry.submit("k1", blocking(gate, calls), label="a again", lane="heal")
    assert second is first and second.fraction == pytest.approx(0.1) and second.state == RUNNING
    gate.set()
    assert first.wait(TIMEOUT) and first.state == DONE and first.result == {"value": 1}
    assert calls == [1]  # computed once
    assert registry.submit("k1", blocking(gate, calls), label="a", lane="heal") is first  # done: served as is


def test_one_job_per_lane_others_queue_with_their_position(registry):
    gates = [threading.Event() for _ in range(3)]
    calls = []
    a, b, c = (registry.submit(f"q{i}", blocking(g, calls), label=f"job {i}", lane="heal")
               for i, g in enumerate(gates))
    assert wait_for(lambda: a.state == RUNNING and a.message == "started")
    assert (b.state, b.position, c.state, c.position) == (QUEUED, 1, QUEUED, 2)
    assert "position 2" in c.status_text()
    other = registry.submit("s0", blocking(threading.Event(), []), label="sweep", lane="sweep")
    assert wait_for(lambda: other.state == RUNNING)  # another lane does not wait for healing
    other.cancel()
    assert other.wait(TIMEOUT) and other.state == CANCELLED
    gates[0].set()
    assert a.wait(TIMEOUT) and wait_for(lambda: b.state == RUNNING)
    assert c.position == 1
    assert [j.key for j in registry.active()] == ["q1", "q2"]
    gates[1].set(), gates[2].set()
    assert b.wait(TIMEOUT) and c.wait(TIMEOUT) and c.state == DONE


def test_cancel_running_and_queued_jobs(registry):
    running = registry.submit("c0", blocking(threading.Event(), []), label="runs", lane="heal")
    queued_calls = []
    queued = registry.submit("c1", blocking(threading.Event(), queued_calls), label="waits", lane="heal")
    assert wait_for(lambda: running.message == "started")
    queued.cancel()
    assert queued.state == CANCELLED and queued.position is None
    running.cancel()
    assert running.wait(TIMEOUT) and running.state == CANCELLED
    assert queued_calls == []  # never started
    assert store.load("job", "c0", 1) is None  # nothing stored for a cancelled job
    gate = threading.Event()
    gate.set()
    again = registry.submit("c0", blocking(gate, []), label="restart", lane="heal")
    assert again is not running and again.wait(TIMEOUT) and again.state == DONE  # a restart runs afresh


def test_failure_gives_a_clear_message_and_can_be_retried(registry):
    def broken(ctx):
        raise ValueError("the plan removes every block\nsecond line")
    job = registry.submit("f0", broken, label="broken", lane="heal")
    assert job.wait(TIMEOUT) and job.state == FAILED
    assert job.error == "ValueError: the plan removes every block"
    assert job.status_text() == "failed: ValueError: the plan removes every block"
    assert store.load("job", "f0", 1) is None
    retry = registry.submit("f0", lambda ctx: {"ok": True}, label="fixed", lane="heal")
    assert retry is not job and retry.wait(TIMEOUT) and retry.result == {"ok": True}


def test_result_is_persisted_and_served_from_disk_after_the_registry_is_cleared(registry):
    persist = Persist("demo", 3, to_dict=lambda r: {"squares": r}, from_dict=lambda d: tuple(d["squares"]))
    job = registry.submit("p0", lambda ctx: (1, 4, 9), label="squares", persist=persist)
    assert job.wait(TIMEOUT) and job.result == (1, 4, 9)
    assert store.load("demo", "p0", 3) == {"squares": [1, 4, 9]}
    registry.clear()
    fresh = Registry()  # a restarted server: nothing in memory
    for reg in (registry, fresh):
        found = reg.lookup("p0", persist)
        assert found is not None and found.from_disk and found.state == DONE and found.result == (1, 4, 9)

    def must_not_run(ctx):
        raise AssertionError("recomputed a finished result")
    served = Registry().submit("p0", must_not_run, label="again", persist=persist)
    assert served.state == DONE and served.result == (1, 4, 9)
    assert Registry().lookup("p0", Persist("demo", 4)) is None  # another schema version: not trusted


def test_cancel_leaves_no_half_written_output(registry, tmp_path):
    out = tmp_path / "outputs" / "checkpoint"
    written = threading.Event()

    def build(ctx):
        with store.building_dir(out) as tmp:
            (tmp / "weights.bin").write_bytes(b"x" * 1000)
            written.set()
            while True:
                ctx.check_cancelled()
                threading.Event().wait(0.01)
    job = registry.submit("w0", build, label="write", lane="heal")
    assert written.wait(TIMEOUT)
    job.cancel()
    assert job.wait(TIMEOUT) and job.state == CANCELLED
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_time_left_comes_from_measured_progress_after_the_first_report():
    eta = Eta()
    assert eta.left(0.0) is None
    eta.report(0.1, 100.0)  # first batch done at t=100 (start-up before it is not counted)
    assert eta.left(100.0) is None
    eta.report(0.3, 120.0)  # 0.2 in 20 s
    assert eta.left(120.0) == pytest.approx(70.0)
    assert eta.left(130.0) == pytest.approx(60.0)


def test_module_level_submit_and_lookup_share_one_process_registry(isolated_cache):
    """jobs.submit and jobs.lookup (what the app and the CLI call) reach one registry for
    the process: a second submit of a running key joins the first job, and the finished
    job is in memory until the process caches are cleared (core.caches.clear_all); then,
    as after a restart, only its stored result is found."""
    gate, calls = threading.Event(), []
    first = jobs.submit("shared-key", blocking(gate, calls), label="one", lane="test-shared")
    second = jobs.submit("shared-key", blocking(gate, calls), label="two", lane="test-shared")
    assert second is first and jobs.lookup("shared-key") is first and first in jobs.REGISTRY.active() + jobs.REGISTRY.recent()
    gate.set()
    assert first.wait(TIMEOUT) and first.state == DONE and calls == [1]
    assert jobs.lookup("shared-key") is first and caches.sizes()["core.jobs.registry"] >= 1
    assert "core.jobs.registry" in caches.clear_all(keep=caches.MODELS)
    again = jobs.lookup("shared-key")
    assert again is not first and again.from_disk and again.result == first.result == {"value": 1}


def test_jobs_carry_their_first_details_and_are_listed_by_kind(registry):
    gate, calls = threading.Event(), []
    heal = registry.submit("h1", blocking(gate, calls), label="heal", lane="heal", persist=Persist("heal"),
                           details={"removal": {"blocks": [14, 17]}})
    sweep = registry.submit("s1", blocking(gate, calls), label="sweep", lane="sweep", persist=Persist("removal"))
    assert heal.details == {"removal": {"blocks": [14, 17]}} and sweep.details == {}
    assert registry.recent("heal") == [heal]
    assert set(registry.recent()) == {heal, sweep}
    gate.set()
    assert heal.wait(TIMEOUT) and heal.state == DONE
    assert registry.recent("heal") == [heal] and heal.details["removal"] == {"blocks": [14, 17]}


def test_every_module_level_cache_is_registered():
    """A process cache made at module level (store.LRU) names itself, so core.caches can
    clear it: an unnamed one would keep state between tests and sessions unseen."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[3]
    unnamed = []
    for path in [*root.glob("analysis/**/*.py"), *root.glob("ui/*.py")]:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            value = getattr(node, "value", None)
            if isinstance(value, ast.Call) and getattr(value.func, "attr", getattr(value.func, "id", "")) == "LRU" \
                    and not any(k.arg == "name" for k in value.keywords):
                unnamed.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not unnamed, unnamed
    names = set(caches.sizes())
    from analysis.playground import live, prompts  # noqa: F401 (importing registers their caches)
    from analysis.heal import run  # noqa: F401
    from ui import context  # noqa: F401
    assert {"ablate.memo.evaluations", "playground.live.playgrounds", "playground.prompts.texts", "heal.run.models",
            "ui.context.shared", "core.jobs.registry", *caches.MODELS} <= set(caches.sizes()) | names
