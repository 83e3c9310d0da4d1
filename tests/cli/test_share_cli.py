"""`python -m analysis report --html` on the tiny model: report.json and the HTML report
written together; the HTML holds the report's numbers and opens without a server."""
import json

import numpy as np

from plotly_json import array, figures
from tiny import TEXT
from analysis import cli
from analysis.reporting.report import open_report


def test_report_writes_html_next_to_json(tiny_dir, tmp_path, isolated_cache, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    code = cli.main(["report", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len", "32",
                     "--max-windows", "2", "--skip-removal", "--out", str(out), "--html", str(page)])
    printed = capsys.readouterr().out
    assert code == 0 and f"-> {page}" in printed and "opens offline" in printed
    report = json.loads(out.read_text())
    opened = open_report(out.read_bytes())
    assert opened.removal is None and report["version"] == 2
    text = page.read_text()
    assert opened.analysis.model["fingerprint"] in text
    z = array(figures(text)[0]["data"][0]["z"])
    assert np.allclose(z, report["similarity"]["cosine_matrix"])
    assert "Not in this report (written with --skip-removal)." in text


def test_report_html_to_an_unwritable_place_is_one_error_line(tiny_dir, tmp_path, isolated_cache, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["report", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len", "32",
                     "--max-windows", "2", "--skip-removal", "--out", str(tmp_path / "r.json"),
                     "--html", str(blocker / "report.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("error:")
