"""Results that travel, on the tiny model: report.json back into the exact in-app results,
clear refusals of files this version cannot open, stored reports by sha256, the
self-contained HTML report (its figures hold the report's numbers), and the comparison of
a model with its pruned checkpoint aligned by the plan's kept-layer map."""
import base64
import gzip
import hashlib
import json
import re

import numpy as np
import pytest

from plotly_json import array, figures
from test_plans import _set
from tiny import TEXT
from analysis.reporting import compare
from analysis.data.corpus import Corpus
from analysis.reporting.html import html_report
from analysis.measure.pipeline import SCHEMA_VERSION, analyse
from analysis.model.removal import Removal
from analysis.plans.apply import apply_plan, checkpoint_plan
from analysis.plans.schema import make_plan
from analysis.ablate.sweep import removal_cost
from analysis.reporting.report import ReportError, build_report, open_report, report_bytes, store_report, stored_report, stored_reports

SEQ, WINDOWS = 32, 4
CORPUS = Corpus("builtin:test", TEXT)


@pytest.fixture(scope="module")
def results(tiny, tmp_path_factory):
    analysis = analyse(tiny, CORPUS, SEQ, max_windows=WINDOWS, use_cache=False)
    removal = removal_cost(tiny, CORPUS, SEQ, max_windows=WINDOWS, use_cache=False)
    return analysis, removal


@pytest.fixture(scope="module")
def report(results):
    return build_report(*results)


def _same(a, b) -> None:
    """Two records' dicts are identical, arrays included (NaN equal to NaN)."""
    assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)


def test_report_json_opens_as_the_exact_results(results, report):
    analysis, removal = results
    raw = report_bytes(report)
    opened = open_report(raw)
    _same(opened.analysis, analysis)
    _same(opened.removal, removal)
    assert np.array_equal(opened.analysis.sparsity.firing_frequency_grid, analysis.sparsity.firing_frequency_grid)
    assert opened.sha256 == hashlib.sha256(raw).hexdigest() and opened.plan is None
    # the documented summary and the typed results agree
    assert np.allclose(report["similarity"]["cosine_matrix"], opened.analysis.similarity.cos_all)
    assert report["sparsity"]["dead_neurons"] == opened.analysis.sparsity.at_eps(0.01)["dead_neurons"].tolist()
    counts = np.asarray(report["results"]["analysis"]["sparsity"]["firing_count_grid"])
    assert counts.dtype.kind == "i" and counts.max() <= analysis.sparsity.n_positions


def _changed(report, path, value):
    data = json.loads(json.dumps(report))
    _set(path, value)(data)
    return report_bytes(data)


@pytest.mark.parametrize("path, value, words", [
    ("schema", "someone/else", "not a Layer Lab report"),
    ("version", 99, "newer Layer Lab (report version 99"),
    ("version", "2", "is not a number"),
    ("version", 1, "re-run `python -m analysis report`"),
    ("results", KeyError, "re-run `python -m analysis report`"),
    ("results.analysis.schema_version", SCHEMA_VERSION + 1, "another Layer Lab version"),
    ("results.analysis.similarity", KeyError, "damaged"),
    ("results.analysis.sparsity.firing_count_grid", "many", "damaged"),
    ("plan", {"schema": "layer-lab/pruning-plan"}, "plan is invalid"),
])
def test_files_this_version_cannot_open_get_one_clear_message(report, path, value, words):
    with pytest.raises(ReportError, match=re.escape(words)):
        open_report(_changed(report, path, value))


@pytest.mark.parametrize("raw, words", [(b"\xff\xfe", "not a JSON file"), (b"{nope", "not a JSON file"),
                                        (b"[1]", "not a Layer Lab report")])
def test_not_a_report_at_all(raw, words):
    with pytest.raises(ReportError, match=words):
        open_report(raw)


def test_stored_reports_are_named_by_sha256(report, isolated_cache):
    raw = report_bytes(report)
    sha = store_report(raw).sha256
    assert (isolated_cache / "reports" / f"{sha}.json").read_bytes() == raw
    assert stored_reports() == [sha]
    _same(stored_report(sha).analysis, open_report(raw).analysis)
    with pytest.raises(ReportError, match="No stored report"):
        stored_report("0" * 64)
    with pytest.raises(ReportError, match="64 hex digits"):
        stored_report("../../etc/passwd")
    (isolated_cache / "reports" / f"{sha}.json").write_bytes(raw.replace(b'"perplexity": ', b'"perplexity": 1', 1))
    with pytest.raises(ReportError, match="damaged"):
        stored_report(sha)
    with pytest.raises(ReportError):
        store_report(b"{}")
    assert stored_reports() == [sha]


def test_html_report_holds_the_reports_numbers_and_plotly_once(report, results):
    from plotly.offline import get_plotlyjs

    page = html_report(report)
    figs = figures(page)
    assert len(figs) == 17  # similarity 6, sublayers 1, removal 3, sparsity 3, logit lens 4
    heat = figs[0]["data"][0]
    assert heat["type"] == "heatmap"
    assert np.allclose(array(heat["z"]), report["similarity"]["cosine_matrix"])
    bars = next(f for f in figs if f["data"][0]["type"] == "bar" and "Block Influence" in f["layout"]["title"]["text"])
    assert np.allclose(array(bars["data"][0]["y"]), report["similarity"]["block_influence"])
    costs = next(f for f in figs if "Measured removal cost" in str(f["layout"].get("title", {}).get("text")))
    assert np.allclose(array(costs["data"][0]["y"]), report["removal"]["block_ppl"])
    packed = re.search(r'<script type="text/plain" id="plotly-js">(.*?)</script>', page).group(1)
    assert gzip.decompress(base64.b64decode(packed)).decode() == get_plotlyjs()
    assert page.count('id="plotly-js"') == 1 and not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "Block Influence</td><td>BI_l = 1 - mean cos(h_l, h_l+1)" in page
    assert report["model"]["fingerprint"] in page and "Not in this report" not in page


def test_html_report_without_removal_says_so(results):
    analysis, _ = results
    page = html_report(build_report(analysis))
    assert page.count("Not in this report (written with --skip-removal)") == 1
    assert len(figures(page)) == 14


def test_html_report_draws_a_curves_section_and_escapes_text(report):
    data = json.loads(json.dumps(report))
    data["curves"] = {"blocks": {"lowest_block_influence": {"k": [1, 2, 3], "eval_ppl": [10.0, 20.0, 40.0]},
                                 "random": [{"k": 1, "median": 11.0}, {"k": 2, "median": 25.0}]}}
    data["results"]["analysis"]["model"]["name"] = "</script><b>x"
    page = html_report(data)
    curves = [f for f in figures(page) if f["layout"].get("title", {}).get("text") == "blocks"]
    assert len(curves) == 1
    traces = {t["name"]: (t["x"], t["y"]) for t in curves[0]["data"]}
    assert [list(array(v)) for v in traces["lowest_block_influence eval_ppl"]] == [[1, 2, 3], [10, 20, 40]]
    assert [list(array(v)) for v in traces["random median"]] == [[1, 2], [11, 25]]
    assert "</script><b>x" not in page and "&lt;/script&gt;&lt;b&gt;x" in page


@pytest.fixture(scope="module")
def pruned(tiny, tiny_dir, tmp_path_factory):
    """The tiny model without block 2, written by apply, and the analyses of both."""
    from analysis.model.loading import get_model

    plan = make_plan(tiny, Removal.of(blocks=[2]), "manual", {})
    out = apply_plan(plan, tiny_dir, tmp_path_factory.mktemp("pruned") / "ckpt")
    small = get_model(str(out), "cpu")
    full = compare.Side("A", analyse(tiny, CORPUS, SEQ, max_windows=WINDOWS, use_cache=False))
    cut = compare.Side("B", analyse(small, CORPUS, SEQ, max_windows=WINDOWS, use_cache=False), checkpoint_plan(out))
    return full, cut


def test_pruned_checkpoint_is_aligned_by_its_plan(pruned):
    full, cut = pruned
    assert cut.plan is not None and cut.plan.remove["blocks"] == [2]
    swapped = compare.align(cut, full)  # either side may be the pruned one
    assert swapped.how == "plan" and swapped.pruned == 0 and swapped.blocks == ([0, 1, 3], [0, 1, 2, 3])
    alignment = compare.align(full, cut)
    assert alignment.how == "plan" and alignment.pruned == 1
    assert alignment.blocks == ([0, 1, 2, 3], [0, 1, 3]) and alignment.resid == ([0, 1, 2, 3, 4], [0, 1, 2, 4])
    # before the removed block the two streams are the same numbers: the difference is zero there
    diff, common = compare.matrix_difference(full.analysis.similarity.cos_all, cut.analysis.similarity.cos_all,
                                             alignment)
    assert common == [0, 1, 2, 4]
    assert np.allclose(diff[:3, :3], 0, atol=1e-5) and np.abs(diff[3, :3]).max() > 1e-4
    bi_a, bi_b = full.analysis.similarity.block_influence(), cut.analysis.similarity.block_influence()
    series = compare.block_series("BI", bi_a, bi_b, alignment, ("A", "B"))
    assert series[1]["x"] == [0, 1, 3] and np.allclose(series[1]["y"][:2], bi_a[:2], atol=1e-5)
    assert np.allclose(cut.analysis.sublayers.attn_score[:2], full.analysis.sublayers.attn_score[:2], atol=1e-5)


def test_without_a_plan_layers_align_by_index(pruned):
    full, cut = pruned
    plain = compare.Side("B", cut.analysis)
    alignment = compare.align(full, plain)
    assert alignment.how == "index" and alignment.blocks == ([0, 1, 2, 3], [0, 1, 2])
    assert "aligned by index only" in alignment.notes[0]
    diff, common = compare.matrix_difference(full.analysis.similarity.cos_all, plain.analysis.similarity.cos_all,
                                             alignment)
    assert common == [0, 1, 2, 3] and diff.shape == (4, 4)
    assert compare.text_notes(full, plain) == []
