"""ui.internals (every use of Streamlit internals). rerun_pending: the playground's refinement loop and its streamed generation
end early only for a rerun that will run them again. The sidebar's jobs area refreshes
itself (a fragment with run_every); ending for its rerun left an estimate on screen that
nothing refined (a browser test saw "estimate (34 of 36 windows)" for two minutes)."""
from types import SimpleNamespace

import pytest
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequests

from ui import internals

PLAYGROUND, JOBS_AREA = "fragment-playground", "fragment-jobs-area"


@pytest.fixture
def requests(monkeypatch):
    requests = ScriptRequests()
    run = SimpleNamespace(script_requests=requests, current_fragment_id=PLAYGROUND)
    monkeypatch.setattr(internals, "get_script_run_ctx", lambda *a, **k: run)
    monkeypatch.setattr(internals, "current_fragment_id", lambda: run.current_fragment_id)
    return requests, run


def test_the_current_fragment_is_read_from_streamlit():
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st
        from ui import internals
        st.write(f"outside {internals.current_fragment_id()}")
        st.fragment(lambda: st.write(f"inside {internals.current_fragment_id()}"))()

    at = AppTest.from_function(script).run()
    texts = [m.value for m in at.markdown]
    assert texts[0] == "outside None"
    assert texts[1].startswith("inside ") and texts[1] != "inside None"
    assert internals.current_fragment_id() is None  # no script run on this thread


def test_nothing_requested(requests):
    assert internals.rerun_pending() is False


def test_a_click_in_this_fragment_ends_the_run(requests):
    reqs, _ = requests
    reqs.request_rerun(RerunData(fragment_id=PLAYGROUND))
    assert internals.rerun_pending() is True


def test_a_whole_page_rerun_ends_the_run(requests):
    reqs, _ = requests
    reqs.request_rerun(RerunData(query_string="rm_blocks=3"))
    assert internals.rerun_pending() is True


def test_another_fragments_refresh_does_not(requests):
    reqs, _ = requests
    reqs.request_rerun(RerunData(fragment_id=JOBS_AREA, is_auto_rerun=True))
    assert internals.rerun_pending() is False
    reqs.request_rerun(RerunData(fragment_id=PLAYGROUND))  # then a click: both queued
    assert internals.rerun_pending() is True


def test_outside_a_fragment_only_a_whole_page_rerun_counts(requests):
    reqs, run = requests
    run.current_fragment_id = None
    reqs.request_rerun(RerunData(fragment_id=JOBS_AREA, is_auto_rerun=True))
    assert internals.rerun_pending() is False


def test_moved_internals_degrade_a_feature_not_the_app(monkeypatch):
    """What a Streamlit upgrade that moves the internals leaves: no early end of fragment
    tails, no session id (first come first served), no pages-mode switch; nothing raises."""
    monkeypatch.setattr(internals, "ScriptRequestType", None)
    monkeypatch.setattr(internals, "ThreadState", None)
    monkeypatch.setattr(internals, "PagesManager", None)
    monkeypatch.setattr(internals, "get_script_run_ctx", lambda *a, **k: None)
    assert internals.rerun_pending() is False and internals.current_fragment_id() is None
    assert internals.session_id() is None and internals.main_script_name() is None
    assert internals.leave_pages_directory_mode(force=True) is False


def test_the_pages_directory_switch_is_turned_off_once(monkeypatch):
    switch = SimpleNamespace(uses_pages_directory=True)
    monkeypatch.setattr(internals, "PagesManager", switch)
    assert internals.leave_pages_directory_mode(force=False) is True and switch.uses_pages_directory is False
    assert internals.leave_pages_directory_mode(force=False) is False
    assert internals.leave_pages_directory_mode(force=True) is True and switch.uses_pages_directory is False
