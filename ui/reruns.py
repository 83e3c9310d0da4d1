"""What Streamlit is about to run next, read from its non-public request and thread
state: the playground's long fragment tails end early for a click waiting behind them."""


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
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
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
        from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState
        return ThreadState.get().fragment_id
    except (ImportError, AttributeError, RuntimeError):
        return None


def session_id() -> str | None:
    """This browser session's id (None outside a script run): who asks, for shared work
    that serves sessions in turn (the playground's progressive evaluation)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    run = get_script_run_ctx()
    return run.session_id if run is not None else None
