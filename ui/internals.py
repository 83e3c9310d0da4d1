"""Every use of Streamlit's non-public internals, in one place.

Streamlit moves its internals between releases. Each import here fails soft: when a
name is gone, the feature that reads it degrades (a fragment tail runs to its end, a
deep link on a fresh server shows the page without the sidebar until the next click,
sessions are served first come first served) and the app keeps working. Nothing else in
the project imports from `streamlit.runtime`.

- rerun_pending / current_fragment_id: the script-request and thread state, so the
  playground's long fragment tails end early for a click waiting behind them;
- session_id / main_script_name: the script run context;
- leave_pages_directory_mode: PagesManager's pages/-directory switch (issue 31).
"""
from __future__ import annotations

from pathlib import Path

try:
    from streamlit.runtime.scriptrunner import get_script_run_ctx
except ImportError:  # moved: no run context, every reader below degrades
    def get_script_run_ctx(*args, **kwargs):
        return None
try:
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
except ImportError:
    ScriptRequestType = None
try:
    from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState
except ImportError:
    ThreadState = None
try:
    from streamlit.runtime.pages_manager import PagesManager
except ImportError:
    PagesManager = None


def rerun_pending() -> bool:
    """True when the user has already asked for another run, e.g. clicked a toggle while
    this fragment run still refines its estimate or streams text. Streamlit queues a
    widget's fragment rerun behind the running one instead of interrupting it, so the
    long tails of a fragment run check this and end early. Reads Streamlit's request
    state (not a public API); False when it cannot be read.

    Only a rerun that will run this code again counts: a whole-page rerun, or one whose
    fragment queue holds the current fragment. The sidebar's jobs area refreshes itself
    (a fragment with run_every); ending for its rerun would leave an estimate on screen
    that nothing refines."""
    if ScriptRequestType is None:
        return False
    try:
        requests = get_script_run_ctx().script_requests
        if requests._state != ScriptRequestType.RERUN:
            return False
        queue = list(requests._rerun_data.fragment_id_queue or [])
    except AttributeError:
        return False
    current = current_fragment_id()
    return not queue or (current is not None and current in queue)


def current_fragment_id() -> str | None:
    """The id of the fragment this code runs in (Streamlit's thread state, not a public
    API), or None outside a fragment or when it cannot be read."""
    try:
        return ThreadState.get().fragment_id
    except (AttributeError, RuntimeError):
        return None


def session_id() -> str | None:
    """This browser session's id (None outside a script run or when it cannot be read):
    who asks, for shared work that serves sessions in turn (the playground's progressive
    evaluation)."""
    return getattr(get_script_run_ctx(), "session_id", None)


def main_script_name() -> str | None:
    """The file name of the script this run executes (app.py, or a page file run on its
    own), None when unknown."""
    path = getattr(get_script_run_ctx(), "main_script_path", None)
    return Path(path).name if path else None


def leave_pages_directory_mode(force: bool) -> bool:
    """Switch Streamlit's old pages/-directory mode off when it is on, or when `force`
    (this session's runs have not gone through app.py yet); True when the caller should
    rerun (the rerun executes app.py, which routes to the same page). False, changing
    nothing, when the switch cannot be found."""
    if PagesManager is None or not hasattr(PagesManager, "uses_pages_directory"):
        return False
    if PagesManager.uses_pages_directory or force:
        PagesManager.uses_pages_directory = False
        return True
    return False
