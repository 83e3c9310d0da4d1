"""The shared sidebar: the source (a model and corpus, or a report file), model, corpus,
windowing and the evaluation windows, seeded once from the URL, and the server's
background jobs (ui/jobs.py) at the bottom.

A failed model load or a bad corpus shows a message and keeps the previous, working
choice, so nothing already computed is lost. With a report file as the source no model
is loaded: the pages read the report (ui/report_source.py).
"""
from __future__ import annotations

import streamlit as st

from analysis.data import corpus as corpora
from analysis.data import evaluation
from analysis.model import loading, sources
from ui import context, links, report_source
from ui import jobs as jobs_ui
from ui.context import plain

OTHER = "Other (hub name, local dir or .gguf)..."
PASTE = "Paste or upload..."


def seed_from_url() -> None:
    """Read the link once per session into widget defaults; remember what was ignored."""
    if st.session_state.get("_seeded"):
        return
    st.session_state["_seeded"] = True
    state = links.parse_link({k: st.query_params.get_all(k) for k in st.query_params.keys()})
    st.session_state["_link"] = state.values
    refused = state.refused_model  # shown at the top of every page (refused_model_banner), not in the list
    st.session_state["_link_notices"] = [n for n in state.notices if not refused or n != refused[2]]
    st.session_state["_link_refused_model"] = refused
    values = state.values
    if "model" in values and values["model"] != sources.DEFAULT_MODEL:
        st.session_state["model_choice"] = OTHER
        st.session_state["model_other"] = values["model"]
    if "corpus" in values:
        st.session_state["corpus_choice"] = values["corpus"]
    if "seq_len" in values:
        st.session_state["seq_len"] = values["seq_len"]
    if "max_windows" in values:
        st.session_state["max_windows"] = values["max_windows"]
    if "eval" in values:
        st.session_state["eval_choice"] = values["eval"]
    if "report" in values:
        st.session_state["source"] = report_source.FILE
        st.session_state["_report_sha"] = values["report"]
    view = {key: values[key] for key in ("rm_blocks", "rm_attn", "rm_mlp", "prompt", "show_on", *links.COMPARE_KEYS)
            if key in values}
    if view:  # kept in the address bar until the playground reads (and clamps) them
        st.session_state.setdefault("_view", {}).update(view)


def refused_model_banner(spec: str) -> None:
    """At the top of every page, while the model in use is not the one the link named
    (it may not be opened from a link): say so, and that the numbers are for another model."""
    refused = st.session_state.get("_link_refused_model")
    if not refused or spec == refused[0]:
        return
    name, why, _ = refused
    shown = sources.DEFAULT_DISPLAY_NAME if spec == sources.DEFAULT_MODEL else spec
    st.warning(f"**The numbers here are for another model than the link's.** The link named the model "
               f"“{plain(name)}”, but {plain(why)}. Every page shows **{plain(shown)}** instead, with the "
               "link's other settings (corpus, windows, removals). Pick a model in the sidebar to change it.",
               icon=":material/warning:")


def notice(message: str) -> None:
    st.session_state.setdefault("_link_notices", []).append(message)


def _load_model(spec: str, device: str | None, dtype: str):
    """Load the model, with a progress box at the top of the page only while it loads
    (a failure stays, with its message)."""
    slot = st.empty()
    status = slot.status(f"Loading {plain(spec)}...", expanded=True)
    bar = status.progress(0.0)
    try:
        model = loading.get_model(spec, device, dtype, progress=lambda f, m: bar.progress(f, text=m))
    except sources.ModelLoadError as err:
        status.update(label="Model failed to load", state="error", expanded=False)
        st.error(plain(str(err)))
        return None
    slot.empty()
    return model


def _use_pasted_text() -> None:
    """Store the pasted or uploaded text (a callback: it may still change corpus_choice).
    Text the loaded model cannot predict anything on (fewer than 2 tokens) is refused here,
    like empty text, and the previous corpus stays in use."""
    upload = st.session_state.get("corpus_upload")
    model = st.session_state.get("_model")
    try:
        if upload is not None:
            raw = corpora.decode_upload(upload.getvalue())
        else:
            raw = st.session_state.get("corpus_paste", "")
        if model is not None:
            corpora.token_ids(model.tokenizer, raw)
        stored = corpora.store_text(raw)
    except corpora.CorpusError as err:
        kept = st.session_state.get("_corpus")
        st.session_state["_corpus_error"] = str(err) + (f" Still using the corpus {_corpus_label(kept.corpus_id)}."
                                                        if kept is not None else "")
    else:
        st.session_state["_stored_corpus"] = stored.corpus_id
        st.session_state["corpus_choice"] = stored.corpus_id


def _corpus_label(corpus_id: str) -> str:
    return corpus_id if corpus_id.startswith("builtin:") or corpus_id == PASTE else f"upload {corpus_id[:12]}"


def _pick_corpus():
    ids = corpora.builtin_ids()
    stored = st.session_state.get("_stored_corpus")
    if stored:
        ids.append(stored)
    link_corpus = st.session_state.get("corpus_choice")
    if link_corpus and link_corpus != PASTE and link_corpus not in ids:
        try:
            corpora.load_corpus(link_corpus)
            ids.append(link_corpus)
        except corpora.CorpusError as err:
            notice(f"Ignored the link's corpus: {err}")
            st.session_state["corpus_choice"] = ids[0]
    choice = st.sidebar.selectbox("Corpus", ids + [PASTE], key="corpus_choice", format_func=_corpus_label)
    if choice == PASTE:
        st.sidebar.text_area("Paste text", height=120, key="corpus_paste")
        st.sidebar.file_uploader("...or upload a .txt file", type=["txt"], key="corpus_upload")
        st.sidebar.button("Use this text", on_click=_use_pasted_text)
        if message := st.session_state.pop("_corpus_error", None):
            st.sidebar.error(message)
        return st.session_state.get("_corpus")
    try:
        return corpora.load_corpus(choice)
    except corpora.CorpusError as err:
        st.sidebar.error(str(err))
        return st.session_state.get("_corpus")


def render() -> context.Context | None:
    """Draw the sidebar (settings, then the jobs area) and return the page context (or None)."""
    ctx = _settings()
    jobs_ui.sidebar_area()
    return ctx


# The sidebar's widget keys, and the window settings' starting values. Streamlit drops a
# widget's value when a run does not draw it (the model settings while the source is a
# report file) and on st.switch_page (which sends no widget values); the next run then
# used the defaults while the browser still showed the old values.
KEPT = ("source", "model_choice", "model_other", "device", "dtype", "corpus_choice", "seq_len", "max_windows",
        "eval_choice")
WINDOW_DEFAULTS = {"seq_len": 128, "max_windows": 0}


def _restore() -> None:
    """Put back the sidebar values Streamlit dropped (from the session's copy), also when
    the last run did not draw the model settings (a value kept in session state but not
    set again would show the widget's default in the browser), and give the window inputs
    their defaults through session state only (not also as `value`)."""
    kept = st.session_state.setdefault("_sidebar_kept", {})
    redraw = st.session_state.get("_from_file", False)
    for key in KEPT:
        if key in kept and (key not in st.session_state or (redraw and key != "source")):
            st.session_state[key] = kept[key]
    for key, default in WINDOW_DEFAULTS.items():
        st.session_state.setdefault(key, default)


def _keep() -> None:
    """Copy the sidebar's values of this run (for `_restore`)."""
    st.session_state["_sidebar_kept"].update({key: st.session_state[key] for key in KEPT if key in st.session_state})


def _settings() -> context.Context | None:
    seed_from_url()
    _restore()
    try:
        return _draw_settings()
    finally:
        _keep()


def _draw_settings() -> context.Context | None:
    sb = st.sidebar
    from_file = sb.radio("Source", report_source.SOURCES, key="source", horizontal=True) == report_source.FILE
    st.session_state["_from_file"] = from_file
    if from_file:
        ctx = report_source.render()
        for message in st.session_state.get("_link_notices", []):
            sb.warning(plain(message))
        context.set_current(ctx)
        return ctx
    sb.header("Model")
    choice = sb.selectbox("Model", [f"default ({sources.DEFAULT_DISPLAY_NAME})", OTHER], key="model_choice")
    spec = sources.DEFAULT_MODEL
    if choice == OTHER:
        spec = sb.text_input("Hub name, local directory or .gguf file", key="model_other").strip() or sources.DEFAULT_MODEL
    device = sb.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="device")
    dtype = sb.selectbox("dtype", list(loading.DTYPES), key="dtype")
    refused_model_banner(spec)
    wanted = (spec, None if device == "auto" else device, dtype)
    if st.session_state.get("_model_key") != wanted:
        model = _load_model(*wanted)
        if model is not None:
            st.session_state["_model"] = model
            st.session_state["_model_key"] = wanted
        elif st.session_state.get("_model") is not None:
            st.warning(f"Still using {plain(st.session_state['_model'].name)}: nothing computed so far is lost.")
    model = st.session_state.get("_model")

    sb.header("Corpus")
    corpus = _pick_corpus()
    if corpus is not None:
        st.session_state["_corpus"] = corpus
    seq_len = sb.number_input("Window length (seq_len)", 2, links.MAX_SEQ_LEN, step=32, key="seq_len")
    max_windows = sb.number_input("Max windows (0 = all)", 0, 100000, key="max_windows")
    for message in st.session_state.get("_link_notices", []):
        sb.warning(plain(message))
    if model is None or corpus is None:
        context.set_current(None)
        return None
    if seq_len + 1 > model.n_ctx:
        sb.error(f"seq_len {seq_len} exceeds the model's context of {model.n_ctx} tokens.")
        context.set_current(None)
        return None
    split = _pick_evaluation(model, corpus, int(seq_len), int(max_windows) or None)
    ctx = context.Context(model, corpus, int(seq_len), int(max_windows) or None, split=split)
    context.set_current(ctx)
    return ctx


def _eval_label(choice: str) -> str:
    if choice == evaluation.HOLDOUT:
        return f"held-out windows (every {corpora.HOLDOUT_EVERY}th)"
    return _corpus_label(choice)


def _pick_evaluation(model, corpus, seq_len: int, max_windows: int | None):
    """The 'Evaluate on' choice, resolved against the corpus (evaluation.resolve); the
    split says which windows calibrate and which evaluate, or why none evaluate."""
    sb = st.sidebar
    ids = [evaluation.HOLDOUT] + corpora.builtin_ids()
    stored = st.session_state.get("_stored_corpus")
    if stored:
        ids.append(stored)
    chosen = st.session_state.get("eval_choice")
    if chosen and chosen not in ids:
        try:
            corpora.load_corpus(chosen)
            ids.append(chosen)
        except corpora.CorpusError as err:
            notice(f"Ignored the link's eval: {err}")
            st.session_state["eval_choice"] = evaluation.HOLDOUT
    choice = sb.selectbox("Evaluate on", ids, key="eval_choice", format_func=_eval_label,
                          help="Methods choose what to remove on the calibration windows; curves, plans and the "
                               "playground can judge the choice on these windows instead.")
    try:
        n = context.corpus_windows(model, corpus, seq_len, max_windows).shape[0]
        split = evaluation.resolve(evaluation.EvalSpec.parse(choice), corpus, n)
    except corpora.CorpusError:
        return None  # the pages show the corpus problem
    if split.notice:
        sb.warning(plain(split.notice))
    elif split.spec.held_out:
        held = len(range(corpora.HOLDOUT_EVERY - 1, n, corpora.HOLDOUT_EVERY))
        sb.caption(f"Calibration: {corpora.plural(n - held, 'window')}; evaluation: "
                   f"{corpora.plural(held, 'held-out window')}.")
    else:
        sb.caption(f"Calibration: {'the only window' if n == 1 else f'all {n} windows'}; evaluation: corpus "
                   f"{plain(str(split.spec))}.")
    return split
