"""`curves` and `plan --method iterative_greedy` on the tiny model: the numbers in
curves.json and the plan against plain transformers on the held-out windows, and bad
input refused with one `error:` line and a non-zero exit."""
import json

import pytest

import reference
from plotly_json import figures
from tiny import TEXT
from analysis import cli
from analysis.data.corpus import make_windows, split_windows

SEQ, WINDOWS = 16, 10


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return reference.plain_model(tiny_dir)


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def _held_out(tiny):
    return split_windows(make_windows(tiny.tokenizer, TEXT, SEQ, max_windows=WINDOWS))


def _naive_greedy(hf, windows, steps: int) -> list:
    chosen = []
    for _ in range(steps):
        chosen.append(min((reference.perplexity(reference.without_layers(hf, set(chosen + [c])), windows), c)
                          for c in range(hf.config.num_hidden_layers) if c not in chosen)[1])
    return chosen


def test_curves_json_against_plain_transformers(tiny, tiny_dir, hf, corpus, tmp_path, isolated_cache, capsys):
    out = tmp_path / "curves.json"
    code = cli.main(["curves", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len",
                     str(SEQ), "--max-windows", str(WINDOWS), "--kinds", "blocks", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    data = json.loads(out.read_text())
    calibration, evaluation = _held_out(tiny)
    L = tiny.n_layers
    assert data["split"]["eval"] == "holdout" and data["split"]["n_evaluation_windows"] == evaluation.shape[0]
    assert data["full_ppl"]["evaluation"] == pytest.approx(reference.perplexity(hf, evaluation), rel=1e-4)
    assert data["full_ppl"]["calibration"] == pytest.approx(reference.perplexity(hf, calibration), rel=1e-4)
    curve = data["curves"]["blocks/iterative_greedy"]
    order = _naive_greedy(hf, calibration, L - 1)
    assert data["greedy"]["blocks"]["order"] == order
    for k in curve["k"]:
        assert curve["removed"][k - 1] == sorted(order[:k])
        pruned = reference.without_layers(hf, set(order[:k]))
        assert curve["eval_ppl"][k - 1] == pytest.approx(reference.perplexity(pruned, evaluation), rel=1e-4)
        assert curve["calib_ppl"][k - 1] == pytest.approx(reference.perplexity(pruned, calibration), rel=1e-4)
    assert set(data["curves"]) == {f"blocks/{m}" for m in ("lowest_block_influence", "best_contiguous_block",
                                                            "reverse_order", "cheapest_single", "iterative_greedy",
                                                            "random")}
    depth = data["dynamic_depth"]
    assert 0 < depth["skipping"]["mean_fraction"] <= 1 and 0 < depth["early_exit"]["mean_fraction"] <= 1
    assert "blocks k=3: best" in printed and "dynamic-depth oracle (skipping)" in printed


def test_plan_iterative_greedy_chooses_on_calibration_and_evaluates_held_out(tiny, tiny_dir, hf, corpus, tmp_path,
                                                                           isolated_cache):
    out = tmp_path / "plan.json"
    code = cli.main(["plan", "--model", str(tiny_dir), "--device", "cpu", "--method", "iterative_greedy",
                     "--target", "2", "--corpus", str(corpus), "--seq-len", str(SEQ), "--max-windows", str(WINDOWS),
                     "--out", str(out)])
    assert code == 0
    plan = json.loads(out.read_text())
    calibration, evaluation = _held_out(tiny)
    order = _naive_greedy(hf, calibration, 2)
    assert plan["remove"]["blocks"] == sorted(order) and plan["method"]["name"] == "iterative_greedy"
    ev = plan["evaluation"]
    assert ev["windows"] == "evaluation" and ev["eval"] == "holdout" and ev["n_windows"] == evaluation.shape[0]
    pruned = reference.without_layers(hf, set(order))
    assert ev["perplexity_pruned"] == pytest.approx(reference.perplexity(pruned, evaluation), rel=1e-4)
    assert ev["calibration"]["perplexity_pruned"] == pytest.approx(reference.perplexity(pruned, calibration), rel=1e-4)


@pytest.mark.parametrize("extra, words", [
    (["--seeds", "3"], "--seeds must be at least 5"),
    (["--kinds", "blocks,heads"], "--kinds must name some of blocks, attn, mlp"),
    (["--tolerance", "-1"], "--tolerance must be between 0 and 100"),
    (["--k-max", "9"], "--k-max must be 1..3"),
    (["--max-windows", "3"], "no evaluation windows"),
    (["--eval-corpus", "builtin:nonsense"], "error:"),
])
def test_curves_bad_input_is_one_error_line(tiny_dir, corpus, tmp_path, isolated_cache, capsys, extra, words):
    code = cli.main(["curves", "--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len",
                     str(SEQ), "--max-windows", str(WINDOWS), "--out", str(tmp_path / "c.json"), *extra])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert code != 0 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "c.json").exists()


def test_report_with_curves_has_the_evaluation_curves_and_dynamic_depth(tiny_dir, corpus, tmp_path, isolated_cache):
    out = tmp_path / "report.json"
    curves_out = tmp_path / "curves.json"
    args = ["--model", str(tiny_dir), "--device", "cpu", "--corpus", str(corpus), "--seq-len", str(SEQ),
            "--max-windows", str(WINDOWS)]
    assert cli.main(["curves", *args, "--out", str(curves_out)]) == 0
    assert cli.main(["report", *args, "--skip-lens", "--curves", "--out", str(out), "--html",
                     str(tmp_path / "r.html")]) == 0
    report, curves = json.loads(out.read_text()), json.loads(curves_out.read_text())
    assert report["evaluation"]["eval"] == "holdout" and report["evaluation"]["n_evaluation_windows"] == 2
    assert report["corpus"]["n_windows"] == 8  # the analyses read the calibration windows
    for key, curve in curves["curves"].items():
        kind, method = key.split("/")
        assert report["curves"]["methods"][kind][method]["eval_ppl"] == curve["eval_ppl"]
    assert report["dynamic_depth"] == curves["dynamic_depth"]
    page = (tmp_path / "r.html").read_text()
    assert "Per-sequence dynamic-depth oracle" in page and len(figures(page)) > 3
    drawn = [f for f in figures(page) if "evaluation perplexity" in json.dumps(f.get("layout", {}))]
    assert len(drawn) == 3  # the page's curves figure, one per kind


def test_bench_curves_prints_its_ratio_lines(tiny_dir, isolated_cache, capsys):
    """`bench --parts curves` (only when asked for) runs and prints `ratio X (target <= Y)`
    lines; the figures themselves are never asserted (timing does not decide a test)."""
    code = cli.main(["bench", "--model", str(tiny_dir), "--device", "cpu", "--parts", "curves", "--seq-len", "16",
                     "--max-windows", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0
    ratios = [line for line in out.splitlines() if "ratio" in line and "(target <=" in line]
    assert len(ratios) == 2 and "naive full forwards" in ratios[0] and "knapsack 100 windows" in ratios[1]


def test_bench_generate_prints_streamed_against_bare(tiny_dir, isolated_cache, capsys):
    """`bench --parts generate` times the playground's streamed generation (full and with a
    block removed) against a bare `generate` and prints a ratio line for each; the figures
    are never asserted."""
    code = cli.main(["bench", "--model", str(tiny_dir), "--device", "cpu", "--parts", "generate", "--repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0
    ratios = [line for line in out.splitlines() if "ratio" in line and "(target <=" in line]
    assert len(ratios) == 2 and ratios[0].startswith("streamed, full model") and "removed" in ratios[1]
    assert "bare generate (60 tokens)" in out  # min_new_tokens: the baseline always runs the full length
