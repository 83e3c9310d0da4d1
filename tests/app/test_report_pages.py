"""A stored report.json opened by its link (`?report=<sha256>`) in AppTest: every page
reads it with no model loaded and says so, views that need the model say that instead
of failing, its numbers are the report's, a report from a newer Layer Lab gets a clear
message, and the compare page compares two stored reports."""
import hashlib
import json
import re
from pathlib import Path

import pytest
from apptest import no_traceback, open_app

from tiny import TEXT
from analysis.data.corpus import Corpus
from analysis.measure.pipeline import analyse
from analysis.ablate.sweep import removal_cost
from analysis.reporting.report import build_report, report_bytes, store_report

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p.stem for p in (ROOT / "pages").glob("*.py"))
CORPUS = Corpus("builtin:test", TEXT)


@pytest.fixture()
def stored(tiny, isolated_cache):
    """A report of the tiny model (with the removal sweep), stored under cache/reports/."""
    analysis = analyse(tiny, CORPUS, 32, max_windows=4, use_cache=False)
    report = build_report(analysis, removal_cost(tiny, CORPUS, 32, max_windows=4, use_cache=False))
    return store_report(report_bytes(report)), report


def texts(at) -> str:
    return " ".join(e.value for kind in (at.info, at.warning, at.success, at.caption, at.markdown) for e in kind)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_from_the_report_without_a_model(stored, page):
    opened, report = stored
    at = open_app(page, query={"report": opened.sha256})
    assert not at.error, [e.value for e in at.error]
    assert "_model" not in at.session_state  # no model was ever loaded
    shown = texts(at)
    if page == "playground":
        assert "The playground (live removals, perplexity and generation) needs the model" in shown
    elif page == "healing":
        assert "Healing (fine-tuning the pruned model) needs the model" in shown
    elif page == "curves":
        assert "Pruning curves needs the model" in shown
    elif page != "compare":
        assert "Read-only view from a report file" in shown and report["model"]["fingerprint"] in shown
    if page == "logit_lens":
        assert "Reading out the blocks of one window needs the model" in shown
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Cross-entropy after the last block"] == f"{report['logit_lens']['ce'][-1]:.3f} nats"
    if page == "sparsity":
        assert "The per-token density of one window needs the model" in shown
    if page == "overview":
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Perplexity"] == f"{report['perplexity']:.3f}"
        assert [b.proto.label for b in at.get("download_button")] == ["Download report (HTML)", "Download report.json"]
    if page == "sublayers":
        assert "Measure removal cost" not in " ".join(b.label for b in at.button)  # the sweep is in the file


def test_a_report_from_a_newer_layer_lab_gets_a_clear_message(stored, isolated_cache):
    opened, report = stored
    newer = report_bytes(dict(json.loads(json.dumps(report)), version=99))
    sha = hashlib.sha256(newer).hexdigest()
    (isolated_cache / "reports" / f"{sha}.json").write_bytes(newer)
    at = open_app("similarity", query={"report": sha})
    errors = re.sub(r"\\(.)", r"\1", " ".join(e.value for e in at.error))  # Markdown escapes off
    assert "newer Layer Lab (report version 99" in errors
    assert "Upload a report.json in the sidebar to begin." in texts(at)


def test_compare_two_stored_reports(stored):
    opened, _ = stored
    at = open_app("compare", query={"report": opened.sha256, "cmp_a": "current", "cmp_b": opened.sha256})
    no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["B / A"] == "1.000"
    assert "Layer axes aligned by index." in texts(at)
