import pytest
import torch

from analysis.data import corpus as corpora
from ui import links
from analysis.data.corpus import CorpusError, make_windows


def test_windows_follow_protocol(tiny):
    tok = tiny.tokenizer
    text = "The cat sat on the mat. " * 20
    ids = tok(text, add_special_tokens=False)["input_ids"]
    w = make_windows(tok, text, 16)
    assert w.shape == (len(ids) // 16, 17)
    assert bool((w[:, 0] == tok.bos_token_id).all())
    assert w[:, 1:].reshape(-1).tolist() == ids[: w.shape[0] * 16]


def test_short_corpus_gives_one_shorter_window(tiny):
    w = make_windows(tiny.tokenizer, "The cat", 64)
    n_tokens = len(tiny.tokenizer("The cat", add_special_tokens=False)["input_ids"])
    assert w.shape == (1, n_tokens + 1)  # the whole text after a BOS, not 64 tokens
    assert w[0, 0] == tiny.tokenizer.bos_token_id


@pytest.mark.parametrize("text", ["", "   \n\t ", "a\x00b"])
def test_bad_corpora_rejected(tiny, text):
    with pytest.raises(CorpusError):
        make_windows(tiny.tokenizer, text, 16)


def test_seq_len_above_context(tiny):
    with pytest.raises(CorpusError, match="context"):
        make_windows(tiny.tokenizer, "The cat sat. " * 50, 10_000, tiny.n_ctx)


def test_upload_checks(isolated_cache, monkeypatch):
    with pytest.raises(CorpusError, match="binary"):
        corpora.decode_upload(b"\x89PNG\x00\x00")
    with pytest.raises(CorpusError, match="UTF-8"):
        corpora.decode_upload(b"\xff\xfe\xfa")
    monkeypatch.setenv("LAYERLAB_MAX_UPLOAD_MB", "0.001")
    with pytest.raises(CorpusError, match="limit"):
        corpora.decode_upload(b"a" * 5000)


def test_stored_corpus_round_trip_and_corruption(isolated_cache):
    stored = corpora.store_text("hello world, a stored corpus")
    assert corpora.load_corpus(stored.corpus_id).text == "hello world, a stored corpus"
    (isolated_cache / "corpora" / f"{stored.corpus_id}.txt").write_text("tampered")
    with pytest.raises(CorpusError, match="corrupt"):
        corpora.load_corpus(stored.corpus_id)
    with pytest.raises(CorpusError):
        corpora.load_corpus("../../etc/passwd")


def test_builtin_corpus_is_large_enough():
    assert len(corpora.builtin_names()) >= 5
    assert len(corpora.load_corpus("builtin:all").text) > 12000


def test_link_parsing_handles_tampering():
    state = links.parse_link({
        "model": ["../../etc"], "corpus": ["../x"], "seq_len": ["999999"], "evil": ["1"],
        "rm_blocks": ["1,2,x,-3", "4"], "page": ["similarity"], "prompt": ["p" * 5000],
    })
    assert state.values == {"rm_blocks": [1, 2], "page": "similarity"}
    text = " ".join(state.notices)
    for word in ("local paths", "corpus", "seq_len", "unknown link parameter", "repeated", "too long", "x"):
        assert word in text
    kept, notices = links.clamp_layers({"rm_blocks": [1, 40], "rm_mlp": [3]}, 30)
    assert kept == {"blocks": [1], "attn": [], "mlp": [3]} and "40" in notices[0]


def test_link_round_trip():
    values = {"model": "default", "corpus": "builtin:all", "seq_len": 64, "rm_attn": [3, 5], "prompt": "Hi <b>"}
    assert links.parse_link(links.build_query(values)).values == values


def test_allow_list(monkeypatch):
    monkeypatch.setenv("LAYERLAB_ALLOWED_MODELS", "default")
    assert "model" not in links.parse_link({"model": "gpt2"}).values
    assert links.parse_link({"model": "default"}).values["model"] == "default"


def test_held_out_split_is_disjoint_and_every_fifth():

    from analysis.data.corpus import CorpusError, split_windows
    windows = torch.arange(12).view(12, 1).repeat(1, 3)
    calibration, evaluation = split_windows(windows)
    assert evaluation[:, 0].tolist() == [4, 9]
    assert calibration[:, 0].tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]
    with pytest.raises(CorpusError, match="at least 5 windows"):
        split_windows(windows[:4])


def test_report_and_compare_keys_are_validated(monkeypatch):
    sha = "ab" * 32
    state = links.parse_link({"report": [sha], "cmp_a": ["current"], "cmp_b": ["/etc/passwd"]})
    assert state.values == {"report": sha, "cmp_a": "current"}
    assert "cmp_b" in state.notices[0] and "local paths" in state.notices[0]
    state = links.parse_link({"report": ["../../cache/x"], "cmp_a": ["../x"], "cmp_b": ["gpt2"]})
    assert state.values == {"cmp_b": "gpt2"} and "not a sha256" in state.notices[0]
    monkeypatch.setenv("LAYERLAB_ALLOWED_MODELS", "default")
    assert "cmp_b" not in links.parse_link({"cmp_b": "gpt2"}).values
    values = {"report": sha, "cmp_a": sha, "cmp_b": "default", "page": "compare"}
    assert links.parse_link(links.build_query(values)).values == values


def test_counts_are_pluralised():
    assert corpora.plural(1, "held-out window") == "1 held-out window"
    assert corpora.plural(0, "window") == "0 windows"
    assert corpora.plural(4, "window") == "4 windows"


def test_out_of_range_notices_name_the_components():
    _, notices = links.clamp_layers({"rm_blocks": [1, 30], "rm_attn": [31], "rm_mlp": [2]}, 30)
    assert notices == ["Ignored blocks out of range 0..29: [30].",
                       "Ignored attention sublayers out of range 0..29: [31]."]


def test_one_token_corpus_is_refused_before_windowing(tiny):
    with pytest.raises(CorpusError, match="fewer than 2 tokens"):
        corpora.token_ids(tiny.tokenizer, "a")
    assert len(corpora.token_ids(tiny.tokenizer, "The cat sat")) >= 2
