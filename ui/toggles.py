"""The playground's toggle state machine: which blocks and sublayers are switched off,
per model (by fingerprint) and session; seeded once from a link (clamped to the model),
otherwise from earlier visits; changed by the pills, a preset or an imported plan.
On the playground the pills' keys hold the toggles; every change is copied into the saved
copy (`_pg_toggles`), which is what other pages read (`current`): Streamlit drops a
widget's key on a page that does not draw it, so the Heal page never sees the pills' keys.

When the server sets the toggles (a preset, a plan, a curve point), the pills get new keys
(a generation number per model). A rerun the browser sent before it drew the new pills
still carries the old pills' values; under the old keys they cannot switch the new
toggles back (the lost plan import of an earlier CI run).
"""
from __future__ import annotations

import streamlit as st

from analysis.core.kinds import Kind
from analysis.search import presets
from analysis.model.removal import KINDS, Removal
from ui import links

DEFAULT_PROMPT = "The capital of France is"


def toggle_key(kind: Kind, fp: str, generations: dict | None = None) -> str:
    """The pills' key for this model's current generation (generation 0 has no suffix);
    `generations` is the session's map (read from it when not given)."""
    generation = (st.session_state.get("_pg_generation", {}) if generations is None else generations).get(fp, 0)
    return f"pg_{kind}_{fp}" + (f"_{generation}" if generation else "")


def set_toggles(fp: str, removal: Removal, method: dict | None) -> None:
    for kind in KINDS:
        st.session_state.pop(toggle_key(kind, fp), None)
    generations = st.session_state.setdefault("_pg_generation", {})
    generations[fp] = generations.get(fp, 0) + 1
    for kind in KINDS:
        st.session_state[toggle_key(kind, fp)] = sorted(getattr(removal, kind))
    remember(fp, removal)
    st.session_state.setdefault("_pg_method", {})[fp] = dict(method or {}, removal=removal) if method else None


def _seed_from_link(fp: str, n_layers: int) -> None:
    """The link's removals (clamped) and prompt become the saved toggles, once per session,
    on whichever page reads the toggles first."""
    if st.session_state.get("_pg_link_done"):
        return
    st.session_state["_pg_link_done"] = True
    link = st.session_state.get("_link", {})
    if any(key in link for key in links.REMOVAL_KEYS):
        values, st.session_state["_pg_notices"] = links.clamp_layers(link, n_layers)
        st.session_state.setdefault("_pg_toggles", {})[fp] = values
        for kind in KINDS:
            st.session_state.pop(toggle_key(kind, fp), None)
    if "prompt" in link:
        st.session_state["_pg_prompt"] = link["prompt"]


def seed_state(fp: str, n_layers: int) -> None:
    """Toggles and prompt from the link (once per session, clamped) or from earlier visits."""
    _seed_from_link(fp, n_layers)
    saved = st.session_state.setdefault("_pg_toggles", {})
    for kind in KINDS:
        if toggle_key(kind, fp) not in st.session_state:
            st.session_state[toggle_key(kind, fp)] = list(saved.get(fp, {}).get(kind, []))
    for key, default in (("pg_prompt", st.session_state.get("_pg_prompt", DEFAULT_PROMPT)),
                         ("pg_new", st.session_state.get("_pg_new", 20))):
        if key not in st.session_state:
            st.session_state[key] = default


def apply_preset(fp: str, n_layers: int, analysis, removal_cost, greedy_order=None) -> None:
    method, k = st.session_state["pg_preset"], int(st.session_state["pg_k"])
    try:
        removal = presets.suggest(method, k, n_layers, similarity=analysis.similarity,
                                  sublayers=analysis.sublayers, removal_cost=removal_cost, greedy_order=greedy_order)
    except ValueError as err:
        st.session_state["_pg_preset_error"] = str(err)
        return
    set_toggles(fp, removal, {"name": method, "parameters": {"k": k}})


def current(fp: str, n_layers: int) -> Removal:
    """The playground's removals for this model, read on any page: the saved copy (seeded
    from the link when the playground has not read it yet)."""
    _seed_from_link(fp, n_layers)
    return Removal.of(**st.session_state.get("_pg_toggles", {}).get(fp, {}))


def remember(fp: str, removal: Removal) -> None:
    """Keep the toggles for this model, so they survive leaving the page."""
    st.session_state.setdefault("_pg_toggles", {})[fp] = {kind: sorted(getattr(removal, kind)) for kind in KINDS}
