"""Faults: corrupt or stale cache entries, interrupted conversion, broken model files."""
import json
from pathlib import Path

import pytest

from tiny import TEXT
from analysis.model import loading, sources
from analysis.core import store
from analysis.data.corpus import Corpus
from analysis.model.sources import ModelLoadError
from analysis.measure.pipeline import LENS_SCHEMA_VERSION, SCHEMA_VERSION, analyse, analysis_key, lens_key

VERSIONS = {"analysis": SCHEMA_VERSION, "lens": LENS_SCHEMA_VERSION}


def _entry(model, corpus, kind):
    key = analysis_key(model, corpus, 32, None, 0.01) if kind == "analysis" else lens_key(model, corpus, 32, None)
    return store.entry_path(kind, key)


@pytest.mark.parametrize("kind", list(VERSIONS))
@pytest.mark.parametrize("damage", ["truncate", "garbage", "stale_version", "other_key", "empty"])
def test_damaged_cache_entry_is_recomputed_and_replaced(tiny, isolated_cache, damage, kind):
    corpus = Corpus("t", TEXT)
    first = analyse(tiny, corpus, 32)
    path = _entry(tiny, corpus, kind)
    version = VERSIONS[kind]
    raw = path.read_text()
    if damage == "truncate":
        path.write_text(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "stale_version":
        entry = json.loads(raw)
        entry["schema_version"] = version - 1
        path.write_text(json.dumps(entry))
    elif damage == "other_key":
        entry = json.loads(raw)
        entry["key"] = "0" * 24
        path.write_text(json.dumps(entry))
    else:
        path.write_text("")
    assert store.load(kind, path.stem.split("-", 1)[1], version) is None
    again = analyse(tiny, corpus, 32)
    assert again.perplexity == pytest.approx(first.perplexity, rel=1e-9)
    assert again.lens.ce == pytest.approx(first.lens.ce, rel=1e-9)
    assert json.loads(path.read_text())["schema_version"] == version  # replaced


def test_cache_writes_are_atomic(isolated_cache, monkeypatch):
    target = isolated_cache / "results" / "x.json"
    store.write_json_atomic(target, {"a": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(OSError):
        store.write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temp file left


def test_interrupted_conversion_leaves_no_model(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    out = tmp_path / "models" / "m"
    with pytest.raises(ModelLoadError, match="Could not read GGUF"):
        sources.convert_gguf(gguf, out)
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []


def test_interrupted_save_leaves_no_model(tmp_path, monkeypatch, tiny_dir):
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(tiny_dir)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: real(tiny_dir))

    def killed(self, *args, **kwargs):
        Path(args[0], "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", killed)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "models" / "m"
    with pytest.raises(KeyboardInterrupt):
        sources.convert_gguf(gguf, out)
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []


def test_truncated_safetensors_gives_clear_error(tmp_path, tiny_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_dir.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".safetensors" else data)
    with pytest.raises(ModelLoadError, match="Could not load model"):
        loading.get_model(str(broken), "cpu")


def test_not_a_model_and_unsupported_architecture(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model directory"):
        loading.get_model(str(tmp_path), "cpu")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "no_such_arch_xyz"}))
    with pytest.raises(ModelLoadError):
        loading.get_model(str(odd), "cpu")


def test_failed_load_keeps_registry_model(tiny, tmp_path):
    with pytest.raises(ModelLoadError):
        loading.get_model(str(tmp_path / "nope.gguf"), "cpu")
    assert loading.get_model(tiny.name, "cpu") is tiny


def test_trust_remote_code_is_off_unless_operator_allows(monkeypatch):
    from analysis.core import settings

    monkeypatch.delenv("LAYERLAB_TRUST_REMOTE_CODE", raising=False)
    assert settings.trust_remote_code() is False
    monkeypatch.setenv("LAYERLAB_TRUST_REMOTE_CODE", "1")
    assert settings.trust_remote_code() is True


def test_allow_list_blocks_loading(monkeypatch, tiny_dir):
    monkeypatch.setenv("LAYERLAB_ALLOWED_MODELS", "default")
    with pytest.raises(ModelLoadError, match="allow-list"):
        loading.get_model(str(tiny_dir) + "/", "cpu")
