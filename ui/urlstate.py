"""Keep the address bar equal to the session's view, so copying it shares the view, and
one page change one browser-history entry.

Streamlit's page navigation drops the query (only widget-bound parameters survive), pushes
"/page" without it, and then our `sync` writes the view back, which Streamlit pushes as a
second entry: Back led to the same page without its query. `HISTORY_GUARD` (installed once
per browser tab by `install_history_guard`) turns a push to the path already shown into a
replace, so query changes never add entries and a page change adds exactly one, which
keeps the query.
"""
from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import streamlit as st

from ui import links

HISTORY_GUARD = """<script>
(() => {
  if (window.__layerLabHistoryGuard) return;
  window.__layerLabHistoryGuard = true;
  const push = window.history.pushState.bind(window.history);
  window.history.pushState = (state, title, url) => {
    const next = url == null ? null : new URL(url, window.location.href);
    if (next && next.pathname === window.location.pathname) {
      return window.history.replaceState(state, title, url);
    }
    return push(state, title, url);
  };
})();
</script>"""


def install_history_guard() -> None:
    """Put HISTORY_GUARD into the page (a no-op after the first time in a browser tab)."""
    st.sidebar.html(HISTORY_GUARD, unsafe_allow_javascript=True)


def current_values(page: str) -> dict:
    ctx = st.session_state.get("_ctx")
    values = dict(st.session_state.get("_view", {}))
    if ctx is not None and ctx.report is not None:  # a report file: its sha256 names the whole view
        values = {k: v for k, v in values.items() if k in links.COMPARE_KEYS} | {"report": ctx.report.sha256}
    elif ctx is not None:
        values.update(model=ctx.model.name, corpus=ctx.corpus.corpus_id, seq_len=ctx.seq_len,
                      max_windows=ctx.max_windows)
    values["page"] = page
    return values


def set_view(**values) -> None:
    """Pages record the parts of their state that a link should carry (removals, prompt)."""
    st.session_state.setdefault("_view", {}).update(values)


def query_for(page: str, **changes) -> dict:
    query = links.build_query(current_values(page) | changes)
    query.pop("page", None)  # the page is the URL path itself
    if page != "compare":
        for key in links.COMPARE_KEYS:
            query.pop(key, None)
    return query


def sync(page: str) -> None:
    """Write the view into the address bar (also callable from a fragment rerun)."""
    query = query_for(page)
    if dict(st.query_params) != query:
        st.query_params.from_dict(query)


def share_url(page: str, **changes) -> str:
    """The full link to `page` with the current view: the browser's host and base path
    (st.context.url, whatever page it was opened on) + the page + the query string."""
    parts = urlsplit(st.context.url or "http://localhost:8501/")
    segments = parts.path.rstrip("/").split("/")
    if segments and segments[-1] in links.PAGES:
        segments = segments[:-1]
    path = "/".join(segments + ([] if page == links.PAGES[0] else [page]))  # the default page lives at /
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query_for(page, **changes)), ""))
