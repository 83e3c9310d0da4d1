"""Keep the address bar equal to the session's view, so copying it shares the view."""
from __future__ import annotations

import streamlit as st

from analysis import links

_LINKED = ("model", "corpus", "seq_len", "max_windows", "rm_blocks", "rm_attn", "rm_mlp", "prompt")


def current_values(page: str) -> dict:
    ctx = st.session_state.get("_ctx")
    values = dict(st.session_state.get("_view", {}))
    if ctx is not None:
        values.update(model=ctx.model.name, corpus=ctx.corpus.corpus_id, seq_len=ctx.seq_len,
                      max_windows=ctx.max_windows)
    values["page"] = page
    return values


def set_view(**values) -> None:
    """Pages record the parts of their state that a link should carry (removals, prompt)."""
    st.session_state.setdefault("_view", {}).update(values)


def sync(page: str) -> None:
    query = links.build_query(current_values(page))
    query.pop("page", None)  # the page is the URL path itself
    if dict(st.query_params) != query:
        st.query_params.from_dict(query)
