"""First visit and link trust (AppTest).

- The overview shows the model card and the corpus perplexity from a lens-free pass: the
  logit lens has not run when it is drawn; the logit-lens page then runs the lens alone
  (the lens-free reducers do not run again), and its numbers equal a one-pass analysis.
- A link naming a model it may not open (a local path, or a model off the allow-list)
  gets a warning at the very top of the page saying the numbers are for another model.
"""
import re

import numpy as np
import pytest
from apptest import open_app

from analysis.data.corpus import load_corpus
from analysis.measure.lens import LensReducer
from analysis.measure.pipeline import analyse
from analysis.measure.similarity import SimilarityReducer


@pytest.fixture()
def updates(monkeypatch):
    """How many batches the lens and the similarity reducers have folded so far."""
    counts = {"lens": 0, "similarity": 0}
    for name, cls in (("lens", LensReducer), ("similarity", SimilarityReducer)):
        real = cls.update

        def spy(self, model, batch, _real=real, _name=name):
            counts[_name] += 1
            return _real(self, model, batch)

        monkeypatch.setattr(cls, "update", spy)
    return counts


def test_overview_shows_perplexity_before_any_lens_work(tiny, tiny_dir, isolated_cache, updates):
    at = open_app(model=str(tiny_dir), seq_len=32)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == str(tiny.n_layers)
    assert updates["lens"] == 0 and updates["similarity"] > 0
    # every 5th window is held out for evaluation: the pages read the calibration windows
    expected = analyse(tiny, load_corpus("builtin:all"), 32, with_lens=False, use_cache=False, part="calibration")
    assert float(metrics["Perplexity"]) == pytest.approx(expected.perplexity, abs=5e-4)
    assert any("These are the calibration windows" in c.value for c in at.caption)

    lens_free_batches = updates["similarity"]
    at.switch_page("pages/logit_lens.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert updates["lens"] > 0
    assert updates["similarity"] == lens_free_batches  # the lens page did not redo the lens-free part
    shown = {m.label: m.value for m in at.metric}
    one_pass = analyse(tiny, load_corpus("builtin:all"), 32, use_cache=False, part="calibration")
    assert shown["Cross-entropy after the last block"] == f"{one_pass.lens.ce[-1]:.3f} nats"
    assert int(shown["Predicted tokens"]) == one_pass.corpus["n_predicted_tokens"]


def plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def first_element(at):
    return next(iter(at.main.children.values()))


@pytest.mark.parametrize("link_model, why, allowed", [
    ("/home/someone/models/my-llama", "local paths cannot be opened from a link", None),
    ("gpt2", "not allowed on this server", "default"),
], ids=["local-path", "off-allow-list"])
def test_refused_link_model_is_named_at_the_top(link_model, why, allowed, isolated_cache, monkeypatch):
    """The first element of the page (AppTest runs app.py only on its first run; the
    browser test test_history.py checks the banner on a second page)."""
    if allowed:
        monkeypatch.setenv("LAYERLAB_ALLOWED_MODELS", allowed)
    at = open_app(query={"model": link_model, "seq_len": "32", "max_windows": "1"}, seq_len=32, max_windows=1)
    banner = first_element(at)
    assert type(banner).__name__ == "Warning", type(banner)
    text = plain(banner.value)
    assert "numbers here are for another model than the link's" in text
    assert f"“{link_model}”" in text and why in text and "SmolLM2-135M-Instruct" in text
    assert not any(link_model in plain(w.value) for w in at.sidebar.warning)  # not repeated below the fold
    assert at.session_state["_ctx"].model.name == "default"
    assert "Perplexity" in {m.label for m in at.metric}  # the rest of the link still applies


def test_no_banner_when_the_link_model_opens(tiny_dir, isolated_cache):
    at = open_app(model=str(tiny_dir), query={"model": "default"}, seq_len=32, max_windows=1)
    assert not any("another model" in w.value for w in at.warning)
    assert np.isfinite(float({m.label: m.value for m in at.metric}["Perplexity"]))
