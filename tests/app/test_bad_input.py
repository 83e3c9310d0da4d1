"""Bad input in the app (AppTest on the tiny model): every one gives a clear message in the
UI and never a traceback. Corpora pasted or uploaded in the sidebar, model specs, tampered
links, extreme playground settings, HTML/Markdown in a prompt and broken pruning plans.

AppTest quirk (streamlit 1.67 + st.navigation): sidebar state is seeded before the first
run; later runs only use callbacks and main-area widgets.
"""
import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest import no_traceback, open_app, toggles

ROOT = Path(__file__).resolve().parents[2]
OTHER = "Other (hub name, local dir or .gguf)..."
PASTE = "Paste or upload..."
SEQ = 32
HOSTILE = "<script>alert(1)</script> **bold** <b>x</b> [click](https://evil.example)"
RAW_MARKUP = ("<script>", "<b>x</b>", "**bold**", "](https://")


def start(model_spec: str, query: dict | None = None, state: dict | None = None) -> AppTest:
    """First run (on the overview) with everything the sidebar needs seeded beforehand."""
    return open_app(model=model_spec, seq_len=SEQ, max_windows=2, query=query, state=state)


def to_playground(at: AppTest) -> AppTest:
    at.switch_page("pages/playground.py")
    at.run()
    no_traceback(at)
    return at




def shown(text: str) -> str:
    """An element's Markdown as the reader sees it (backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", text)


def messages(at: AppTest, kinds=("error", "warning", "info")) -> list[str]:
    return [shown(e.value) for kind in kinds for e in getattr(at, kind)]


def assert_message(at: AppTest, words: str, kinds=("error", "warning", "info")) -> None:
    found = messages(at, kinds)
    assert any(words in m for m in found), found


def markdown_texts(at: AppTest) -> list[str]:
    """Everything rendered as Markdown/HTML (not code, dataframes or widget values)."""
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader")
    texts = [e.value for kind in kinds for e in getattr(at, kind)]
    ours = "__layerLabHistoryGuard"  # the app's own history script (ui/urlstate.py), not user text
    return texts + [m.label for m in at.metric] + [str(e.proto) for e in at.get("html") if ours not in str(e.proto)]


# ---- corpus: pasted or uploaded in the sidebar ------------------------------------------

def paste(tiny_dir, text: str = "", upload: bytes | None = None, seq_len: int = SEQ) -> AppTest:
    at = start(str(tiny_dir), state={"corpus_choice": PASTE, "corpus_paste": text, "seq_len": seq_len})
    if upload is not None:
        at.sidebar.file_uploader(key="corpus_upload").set_value(("corpus.txt", upload, "text/plain"))
    at.sidebar.button[0].click()
    at.run()
    no_traceback(at)
    return at


@pytest.mark.parametrize("text, upload, words", [
    ("", None, "empty or whitespace only"),
    ("  \n\t \r\n ", None, "empty or whitespace only"),
    ("plain start\x00\x01\x02 binary tail", None, "binary file (it contains NUL bytes)"),
    ("", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary (it contains NUL bytes)"),
    ("", b"caf\xe9 \xff\xfe", "not UTF-8 text"),
], ids=["empty", "whitespace", "nul-in-paste", "binary-upload", "latin1-upload"])
def test_unusable_corpus_is_refused_with_a_message(text, upload, words, tiny_dir, isolated_cache):
    at = paste(tiny_dir, text, upload)
    assert_message(at, words, kinds=("error",))
    assert "_stored_corpus" not in at.session_state
    assert not list((isolated_cache / "corpora").glob("*.txt"))


@pytest.mark.parametrize("upload", [False, True], ids=["paste", "upload"])
def test_corpus_above_the_upload_limit(upload, tiny_dir, isolated_cache, monkeypatch):
    monkeypatch.setenv("LAYERLAB_MAX_UPLOAD_MB", "0.5")
    big = "The cat sat on the mat. " * 25_000  # 600,000 bytes
    at = paste(tiny_dir, "" if upload else big, big.encode() if upload else None)
    assert_message(at, "larger than this server's limit of 0.5 MB", kinds=("error",))
    assert "_stored_corpus" not in at.session_state


def test_corpus_shorter_than_one_window_gives_one_shorter_window(tiny_dir, isolated_cache):
    at = paste(tiny_dir, "The cat sat on the mat.")
    stored = at.session_state["_stored_corpus"]
    assert at.session_state["_ctx"].corpus.corpus_id == stored
    assert not at.error, messages(at)
    to_playground(at)
    assert not at.error, messages(at)
    assert any(c.value.startswith("Corpus: 1 window (") for c in at.caption), [c.value for c in at.caption]
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Full perplexity"]) > 1


def test_one_token_corpus_is_refused_at_paste_time(tiny_dir, isolated_cache):
    at = paste(tiny_dir, "a")
    errors = [shown(e.value) for e in at.sidebar.error]  # in the sidebar, where it was pasted (the browser
    assert errors == ["The corpus has fewer than 2 tokens; nothing can be predicted."], errors  # test: corpus kept)
    assert "_stored_corpus" not in at.session_state
    assert not list((isolated_cache / "corpora").glob("*.txt"))


@pytest.mark.parametrize("query, state", [({}, {"seq_len": 300}), ({"seq_len": "4000"}, {})],
                         ids=["sidebar", "link"])
def test_seq_len_above_the_model_context(query, state, tiny_dir, isolated_cache):
    at = start(str(tiny_dir), query, state)
    assert_message(at, "exceeds the model's context of 256 tokens", kinds=("error",))
    assert_message(at, "Pick a model and a corpus", kinds=("info",))
    assert at.session_state["_ctx"] is None


# ---- model specs typed into the sidebar -----------------------------------------------

def _not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    return str(tmp_path)


def _broken_config(tmp_path):
    (tmp_path / "config.json").write_text("{ this is not json")
    return str(tmp_path)


@pytest.mark.parametrize("make_spec, words", [
    (lambda tmp: "bad name with spaces", ["Unknown model 'bad name with spaces'"]),
    (_not_a_model, ["is not a model directory (no config.json)"]),
    (_broken_config, ["Could not load model"]),
    (lambda tmp: "../../etc/passwd", ["not a model directory", "not a local path"]),
    (lambda tmp: str(tmp / "nothing" / "here.gguf"), ["GGUF file not found"]),
    (lambda tmp: HOSTILE, ["Unknown model '<script>alert(1)</script> **bold**"]),
], ids=["spaces", "dir-not-a-model", "broken-config", "path-traversal", "missing-gguf", "markup"])
def test_bad_model_spec_gives_a_message(make_spec, words, tmp_path, isolated_cache):
    at = start(make_spec(tmp_path))
    errors = messages(at, kinds=("error",))
    assert any(w in e for e in errors for w in words), errors
    assert_message(at, "Pick a model and a corpus", kinds=("info",))
    for text in markdown_texts(at):  # a model name is quoted, never rendered as markup
        assert not any(raw in text for raw in RAW_MARKUP), text


def test_local_model_refused_when_the_operator_allows_none(tiny_dir, isolated_cache, monkeypatch):
    monkeypatch.setenv("LAYERLAB_ALLOWED_MODELS", "default,hub:*")
    at = start(f"{tiny_dir}/")  # not the spec already loaded (and allowed) by other tests
    assert_message(at, "is not on this server's allow-list", kinds=("error",))


# ---- tampered links ----------------------------------------------------------------------

LINK_CASES = {
    "unknown-key": ({"evil": "1", "pg_new": "10000"}, "Ignored unknown link parameter 'evil'", {}),
    "out-of-range": ({"rm_blocks": "1,999"}, "Ignored blocks out of range 0..3: [999]", {}),
    "only-out-of-range": ({"rm_blocks": "999"}, "Ignored blocks out of range 0..3: [999]", {"blocks": []}),
    "bad-layers": ({"rm_attn": "-1,x,1.5,2,2"}, "not layer indices: -1, x, 1.5", {"attn": [2]}),
    "unknown-corpus": ({"corpus": "a" * 64}, "No stored corpus with sha256 aaaaaaaaaaaa", {}),
    "huge-seq-len": ({"seq_len": str(10 ** 9)}, "Ignored seq_len '1000000000': expected 2..4096", {}),
    "negative-seq-len": ({"seq_len": "-5"}, "Ignored seq_len '-5': expected 2..4096", {}),
    "fractional-max-windows": ({"max_windows": "2.5"}, "Ignored max_windows '2.5'", {}),
    "huge-max-windows": ({"max_windows": str(10 ** 9)}, "Ignored max_windows '1000000000'", {}),
    "long-value": ({"prompt": "p" * 100_000}, "Ignored link parameter 'prompt': its value is too long", {}),
    "long-key": ({"k" * 100_000: "1"}, "Ignored unknown link parameter '" + "k" * 40 + "'", {}),
    "repeated": ({"rm_blocks": ["1", "2"]}, "'rm_blocks' was repeated; used the first value", {}),
    "corpus-traversal": ({"corpus": "../../etc/passwd"}, "Ignored the link's corpus: not a built-in id", {}),
    "model-traversal": ({"model": "../../etc/passwd"}, "local paths cannot be opened from a link", {}),
    "markup-key": ({HOSTILE: "1"}, "Ignored unknown link parameter '<script>alert(1)</script> **bol", {}),
}


@pytest.mark.parametrize("case", list(LINK_CASES))
def test_tampered_link_names_what_was_ignored_and_keeps_the_rest(case, tiny, tiny_dir, isolated_cache):
    query, words, expected = LINK_CASES[case]
    query = {"rm_blocks": "1", "rm_mlp": "3", "prompt": "Where are", **query}
    at = start(str(tiny_dir), query)
    ctx = at.session_state["_ctx"]
    if "out-of-range" not in case:  # link notices: shown in the sidebar from the first run
        assert_message(at, words, kinds=("warning",))
    for text in markdown_texts(at):
        assert not any(raw in text for raw in RAW_MARKUP), text
    # the rest of the link still applies: model, corpus and windowing, then the playground toggles
    assert ctx is not None and ctx.model.name == str(tiny_dir)
    assert ctx.corpus.corpus_id == "builtin:all" and ctx.seq_len == SEQ and ctx.max_windows == 2
    to_playground(at)
    if "out-of-range" in case:
        assert_message(at, "From the link: " + words, kinds=("warning",))
    assert not at.error, messages(at)
    assert toggles(at, tiny.fingerprint) == {"blocks": [1], "attn": [], "mlp": [3], **expected}
    prompt = at.text_input(key="pg_prompt").value
    if case == "unknown-key":
        assert at.number_input(key="pg_new").value == 20  # pg_new=10000 in a link is not a parameter
    assert prompt == ("The capital of France is" if case == "long-value" else "Where are")
    assert at.query_params.get("rm_blocks") == ("1" if case != "only-out-of-range" else None)
    assert at.query_params["rm_mlp"] == "3"
    assert set(at.query_params) <= {"model", "corpus", "seq_len", "max_windows", "eval", "rm_blocks", "rm_attn",
                                    "rm_mlp", "prompt", "show_on"}, dict(at.query_params)


# ---- the playground: extreme settings and a hostile prompt ------------------------------

@pytest.fixture(scope="module")
def playground_app(tiny, tiny_dir, tmp_path_factory):
    """One playground session shared by the cases below (the page only reads main-area widgets)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERLAB_CACHE_DIR", str(tmp_path_factory.mktemp("bad-input-cache")))
        yield to_playground(start(str(tiny_dir)))


def test_every_block_removed_is_explained_with_a_perplexity(tiny_dir, isolated_cache):
    at = to_playground(start(str(tiny_dir), {"rm_blocks": "0,1,2,3"}))
    assert not at.error, messages(at)
    assert_message(at, "All 4 blocks removed: the prediction is the unembedding", kinds=("info",))
    assert_message(at, "No plan to export: a plan cannot remove every block", kinds=("info",))
    metrics = {m.label: m.value for m in at.metric}
    assert 1 < float(metrics["Pruned perplexity"]) < float("inf")


def continuations(at: AppTest) -> list[str]:
    return [c.value for c in at.code if not c.value.startswith("http")]


def test_generation_length_zero(playground_app):
    at = playground_app
    at.number_input(key="pg_new").set_value(0).run()
    no_traceback(at)
    assert any(c.value == "Generation length 0: no continuation." for c in at.caption)
    assert continuations(at) == []
    assert at.dataframe, "the top next tokens are still shown"


def test_ten_thousand_tokens_cannot_be_requested(playground_app, tiny):
    at = playground_app
    at.number_input(key="pg_new").set_value(10_000).run()  # beyond max=200: Streamlit refuses it
    no_traceback(at)
    assert not at.error, messages(at)
    new = at.number_input(key="pg_new").value
    assert 0 <= new <= 200 and at.session_state["_pg_new"] == new
    for text in continuations(at):
        assert len(tiny.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 200
    from analysis.model.removal import Removal
    from analysis.playground.prompts import prompt_result
    with pytest.raises(ValueError, match=r"generation length must be 0\.\.200"):  # the page shows this as st.error
        prompt_result(tiny, "The cat", Removal(), 10_000)


def test_html_and_markdown_in_the_prompt_stay_text(playground_app):
    at = playground_app
    at.number_input(key="pg_new").set_value(5)
    at.text_input(key="pg_prompt").set_value(HOSTILE).run()
    no_traceback(at)
    assert not at.error, messages(at)
    assert at.session_state["_pg_prompt"] == HOSTILE
    assert at.dataframe and len(continuations(at)) == 2
    for text in markdown_texts(at):
        assert not any(raw in text for raw in RAW_MARKUP), text
    link = next(c.value for c in at.code if c.value.startswith("http"))
    assert "<" not in link and " " not in link  # the shared link carries the prompt URL-encoded


# ---- pruning plans imported on the playground ------------------------------------------

def _plan(tiny, mutate=None) -> bytes:
    from analysis.model.removal import Removal
    from analysis.plans.schema import make_plan
    data = make_plan(tiny, Removal.of(blocks=[2], mlp=[0]), "manual", {}).to_dict()
    if mutate:
        mutate(data)
    return json.dumps(data).encode()


PLAN_CASES = {
    "malformed-json": (lambda tiny: b'{"schema": "layer-lab/pruning-plan", ', "the plan is not valid JSON"),
    "not-utf8": (lambda tiny: b"\xff\xfe{}", "the plan is not UTF-8 text"),
    "empty": (lambda tiny: b"", "the plan is empty"),
    "wrong-schema": (lambda tiny: _plan(tiny, lambda d: d.update(schema="mergekit/config")), "unknown schema"),
    "not-an-object": (lambda tiny: b"[1, 2, 3]", "must be a JSON object, not list"),
    "future-version": (lambda tiny: _plan(tiny, lambda d: d.update(version=99)),
                       "plan version 99 is newer than this Layer Lab supports"),
    "out-of-range": (lambda tiny: _plan(tiny, lambda d: d["remove"].update(blocks=[7])),
                     "'remove.blocks' index 7 is out of range for a 4-layer model"),
    "negative": (lambda tiny: _plan(tiny, lambda d: d["remove"].update(attn=[-1])),
                 "'remove.attn' contains the negative index -1"),
    "duplicate": (lambda tiny: _plan(tiny, lambda d: d["remove"].update(mlp=[1, 1])),
                  "'remove.mlp' lists 1 more than once"),
    "non-integer": (lambda tiny: _plan(tiny, lambda d: d["remove"].update(blocks=[1.5, "2"])),
                    "1.5, which is not an integer layer index"),
    "every-block": (lambda tiny: _plan(tiny, lambda d: d["remove"].update(blocks=[0, 1, 2, 3])),
                    "removes all 4 blocks; at least one must remain"),
    "other-layer-count": (lambda tiny: _plan(tiny, lambda d: d["model"].update(name="org/big", n_layers=30)),
                          "the plan is for a 30-layer model but"),
    "markup": (lambda tiny: _plan(tiny, lambda d: d.update(schema=HOSTILE)), "unknown schema '<script>"),
}


@pytest.mark.parametrize("case", list(PLAN_CASES))
def test_bad_plan_is_refused_and_nothing_changes(case, playground_app, tiny):
    at = playground_app
    make, words = PLAN_CASES[case]
    before = toggles(at, tiny.fingerprint)
    at.file_uploader(key="pg_plan_upload").set_value(("plan.json", make(tiny), "application/json")).run()
    no_traceback(at)
    assert_message(at, "This plan cannot be used; nothing was changed", kinds=("error",))
    assert_message(at, words, kinds=("error",))
    assert not [b for b in at.button if b.label == "Apply this plan's removals"]
    assert toggles(at, tiny.fingerprint) == before
    for text in markdown_texts(at):
        assert not any(raw in text for raw in RAW_MARKUP), text


def test_plan_for_another_model_warns_and_still_applies(playground_app, tiny):
    at = playground_app
    other = _plan(tiny, lambda d: d["model"].update(name="someone/else", fingerprint="0" * 16))
    at.file_uploader(key="pg_plan_upload").set_value(("plan.json", other, "application/json")).run()
    no_traceback(at)
    assert not at.error, messages(at)
    assert_message(at, "the plan was made for model 'someone/else'", kinds=("warning",))
    assert_message(at, "weight fingerprint 0000000000000000 differs", kinds=("warning",))
    next(b for b in at.button if b.label == "Apply this plan's removals").click().run()
    no_traceback(at)
    assert toggles(at, tiny.fingerprint) == {"blocks": [2], "attn": [], "mlp": [0]}
    at.file_uploader(key="pg_plan_upload").set_value(None).run()
