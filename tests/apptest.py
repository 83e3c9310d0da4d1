"""Open the Streamlit app in AppTest on a page, with a link's query and seeded state.

AppTest cannot change sidebar widgets after the first run (st.navigation), so the model,
window length and window cap are seeded into session state before it; the first run
lands on the overview, then the page is switched to.
"""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
OTHER = "Other (hub name, local dir or .gguf)..."


def open_app(page: str = "overview", *, model: str | None = None, seq_len: int = 32, max_windows: int | None = None,
             query: dict | None = None, state: dict | None = None, timeout: int = 600,
             check: bool = True) -> AppTest:
    """The app on `page` (a file name in pages/ without .py). `model` is a local path or
    hub name typed into the sidebar (None: the default model). With `check`, a traceback
    on the way fails the test."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    seeds = {"seq_len": seq_len}
    if model is not None:
        seeds |= {"model_choice": OTHER, "model_other": model}
    if max_windows is not None:
        seeds["max_windows"] = max_windows
    for key, value in (seeds | (state or {})).items():
        at.session_state[key] = value
    at.run()
    if check:
        no_traceback(at)
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
        at.run()
        if check:
            no_traceback(at)
    return at


def no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def toggles(at: AppTest, fp: str) -> dict:
    """The playground's toggles for model `fp`, under their current keys."""
    from ui.toggles import toggle_key
    generations = at.session_state["_pg_generation"] if "_pg_generation" in at.session_state else {}
    return {kind: at.session_state[toggle_key(kind, fp, generations)] for kind in ("blocks", "attn", "mlp")}
