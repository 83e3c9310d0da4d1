"""Unsupported architectures (issue 11): a model the bridge cannot boot, or whose hooks
fail the load-time checks, gets one clear message naming the supported families, and
the app keeps the model it had."""
from __future__ import annotations

import pytest

from analysis.model import architectures, hooks
from analysis.model.sources import ModelLoadError
from analysis.model.loading import get_model
from families import build_family
from ui.sidebar import plain


@pytest.fixture(scope="module")
def biogpt_dir(tmp_path_factory):
    return build_family("biogpt", tmp_path_factory.mktemp("biogpt") / "biogpt")


def assert_one_clear_message(err: ModelLoadError, *words) -> None:
    text = str(err)
    assert "\n" not in text and text.count("Supported families:") == 1, text
    assert all(f.name in text for f in architectures.FAMILIES), text
    assert all(w in text for w in words), text


def test_an_architecture_the_bridge_cannot_boot(biogpt_dir):
    with pytest.raises(ModelLoadError) as err:
        get_model(str(biogpt_dir), "cpu")
    assert_one_clear_message(err.value, "Layer Lab cannot analyse BioGptForCausalLM", "TransformerLens cannot boot it")


def test_a_model_whose_readout_is_not_its_output_is_refused(tiny_dir, monkeypatch):
    real = hooks.readout
    monkeypatch.setattr(hooks, "readout", lambda model, resid, **kw: real(model, resid, **kw) * 1.01)
    with pytest.raises(ModelLoadError) as err:
        get_model(f"{tiny_dir}//", "cpu")  # a spec not loaded before (the registry is keyed by it)
    assert_one_clear_message(err.value, "LlamaForCausalLM", "readout after the last block does not equal")


def test_a_model_without_a_hook_the_analyses_read_is_refused(tiny_dir, monkeypatch):
    monkeypatch.setattr(hooks, "REQUIRED", hooks.REQUIRED + ("blocks.0.hook_no_such_thing",))
    with pytest.raises(ModelLoadError) as err:
        get_model(f"{tiny_dir}///", "cpu")
    assert_one_clear_message(err.value, "lacks the hook blocks.0.hook_no_such_thing")


def _sidebar_only():
    import streamlit as st
    from ui import sidebar
    ctx = sidebar.render()
    st.write(f"context model: {ctx.model.name if ctx else None}")


def test_the_sidebar_keeps_the_previous_model(biogpt_dir, tiny, tiny_dir):
    """The sidebar alone (AppTest cannot change sidebar widgets of the full app after its
    first run): a working model, then an unsupported one typed in."""
    from streamlit.testing.v1 import AppTest
    from apptest import OTHER
    at = AppTest.from_function(_sidebar_only, default_timeout=300)
    for key, value in {"model_choice": OTHER, "model_other": str(tiny_dir), "seq_len": 32}.items():
        at.session_state[key] = value
    at.run()
    assert [m.value for m in at.main.markdown] == [f"context model: {tiny.name}"]
    at.text_input(key="model_other").set_value(str(biogpt_dir)).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and plain("Supported families:") in errors[0] and "BioGptForCausalLM" in errors[0], errors
    assert [w.value for w in at.warning] == [f"Still using {plain(tiny.name)}: nothing computed so far is lost."]
    assert [m.value for m in at.main.markdown] == [f"context model: {tiny.name}"]
