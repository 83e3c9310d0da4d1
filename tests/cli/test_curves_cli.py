"""`python -m analysis curves`, `report --curves` and `plan --method iterative_greedy` on
the tiny model: the files hold the curves and the oracle, the plan's blocks are the
greedy order's first k, and bad input is one error line with a non-zero exit."""
import json

import pytest

from plotly_json import figures
from tiny import TEXT
from analysis import cli
from analysis.corpus import Corpus, make_windows
from analysis.pruning.greedy import iterative_greedy


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_curves_cli_writes_curves_and_the_oracle(tiny, tiny_dir, corpus, tmp_path, isolated_cache, capsys):
    out = tmp_path / "curves.json"
    code = cli.main(["curves", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len", "32",
                     "--max-windows", "10", "--kinds", "blocks", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and f"-> {out}" in printed
    data = json.loads(out.read_text())
    assert data["split"]["eval"] == "holdout" and data["split"]["n_evaluation_windows"] == 2
    methods = {c["method"] for c in data["curves"].values()} if isinstance(data["curves"], dict) else set()
    assert {"lowest_block_influence", "iterative_greedy", "random"} <= methods
    assert 0 < data["dynamic_depth"]["skipping"]["mean_fraction"] <= 1


def test_report_with_curves_has_both_sections(tiny_dir, corpus, tmp_path, isolated_cache):
    out = tmp_path / "report.json"
    code = cli.main(["report", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len", "32",
                     "--max-windows", "10", "--skip-removal", "--skip-lens", "--curves", "--out", str(out),
                     "--html", str(tmp_path / "report.html")])
    report = json.loads(out.read_text())
    page = (tmp_path / "report.html").read_text()
    assert "Pruning curves" in page and len(figures(page)) > 3
    assert code == 0 and report["evaluation"]["eval"] == "holdout"
    assert report["evaluation"]["n_calibration_windows"] == 8 and report["evaluation"]["n_evaluation_windows"] == 2
    assert set(report["curves"]["methods"]) == {"blocks", "attn", "mlp"}
    assert report["dynamic_depth"]["paper_skip_fraction"] == 0.233


def test_plan_iterative_greedy_takes_the_greedy_order(tiny, tiny_dir, corpus, tmp_path, isolated_cache, capsys):
    out = tmp_path / "plan.json"
    code = cli.main(["plan", "--model", str(tiny_dir), "--device", "cpu", "--method", "iterative_greedy", "--target",
                     "2", "--corpus", str(corpus), "--seq-len", "32", "--max-windows", "10", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    windows = make_windows(tiny.tokenizer, Corpus("t", TEXT).text, 32, max_windows=10)
    order = iterative_greedy(tiny, windows, "blocks", 2).order
    assert json.loads(out.read_text())["remove"]["blocks"] == sorted(order[:2])


@pytest.mark.parametrize("args, words", [
    (["--kinds", "heads"], "--kinds must name some of blocks, attn, mlp"),
    (["--seeds", "3"], "--seeds must be at least 5"),
    (["--max-windows", "3"], "no evaluation windows"),
])
def test_curves_cli_bad_input_is_one_error_line(tiny_dir, corpus, tmp_path, isolated_cache, capsys, args, words):
    code = cli.main(["curves", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len", "32",
                     "--max-windows", "10", "--out", str(tmp_path / "c.json"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("error:") and words in err[-1], err
