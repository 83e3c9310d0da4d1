"""The command line on the tiny model: report.json fields against plain transformers, and
a malformed plan refused with one error line."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch.nn.functional as F
from scipy.stats import spearmanr

import reference
from tiny import TEXT
from analysis.data.corpus import Corpus, make_windows
from analysis.measure.pipeline import analyse
from analysis.plans.schema import PLAN_SCHEMA, PruningPlan
from analysis.reporting.report import build_report

SEQ = 32


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return reference.plain_model(tiny_dir)


def test_cli_report_similarity_sublayers_removal_fields(tiny, tiny_dir, tmp_path, isolated_cache, hf):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text(TEXT)
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", "--model", str(tiny_dir), "--device", "cpu",
                           "--corpus", str(text_file), "--seq-len", str(SEQ), "--max-windows", "4",
                           "--skip-lens", "--out", str(out)],
                          cwd=reference.__file__.rsplit("/tests/", 1)[0], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    L = tiny.n_layers
    windows = make_windows(tiny.tokenizer, TEXT, SEQ, max_windows=4)

    h = reference.residuals(hf, windows)[:, :, 1:].reshape(L + 1, -1, tiny.d_model)
    cos = np.array([[float(F.cosine_similarity(h[i], h[j], dim=-1).mean()) for j in range(L + 1)]
                    for i in range(L + 1)])
    sim = report["similarity"]
    assert np.allclose(sim["cosine_matrix"], cos, rtol=1e-4, atol=1e-5)
    assert np.allclose(sim["block_influence"], [1 - cos[l, l + 1] for l in range(L)], rtol=1e-4, atol=1e-6)
    assert [b["n"] for b in sim["angular_best_block"]] == list(range(1, L))
    cka = np.asarray(sim["cka_matrix"])
    assert cka.shape == (L + 1, L + 1) and np.allclose(np.diag(cka), 1) and np.allclose(cka, cka.T)

    attn_out = {}
    handles = [layer.self_attn.o_proj.register_forward_hook(lambda m, a, out, i=i: attn_out.__setitem__(i, out))
               for i, layer in enumerate(hf.model.layers)]
    try:
        h_all = reference.residuals(hf, windows)[:, :, 1:]
    finally:
        for handle in handles:
            handle.remove()
    for l in range(L):
        mid = h_all[l] + attn_out[l][:, 1:]
        attn_score = 1 - float(F.cosine_similarity(h_all[l], mid, dim=-1).mean())
        mlp_score = 1 - float(F.cosine_similarity(mid, h_all[l + 1], dim=-1).mean())
        assert report["sublayers"]["attn_score"][l] == pytest.approx(attn_score, rel=1e-3, abs=1e-6)
        assert report["sublayers"]["mlp_score"][l] == pytest.approx(mlp_score, rel=1e-3, abs=1e-6)
        assert report["sublayers"]["attn_norm_ratio"][l] == pytest.approx(
            float((attn_out[l][:, 1:].norm(dim=-1) / h_all[l].norm(dim=-1)).mean()), rel=1e-3)

    removal = report["removal"]
    assert removal["full_ppl"] == pytest.approx(reference.perplexity(hf, windows), rel=1e-5)
    for l in range(L):
        assert removal["block_ppl"][l] == pytest.approx(
            reference.perplexity(reference.without_layers(hf, {l}), windows), rel=1e-4)
    assert len(removal["attn_ppl"]) == len(removal["mlp_ppl"]) == L
    est = removal["estimate"]
    assert set(est["spearman"]) == {"block_ppl", "attn_ppl", "mlp_ppl", "all"}
    assert est["spearman"]["attn_ppl"] == pytest.approx(spearmanr(removal["attn_ppl"], est["attn_ppl"]).statistic)

    # --skip-removal: the same report without the removal section
    analysis = analyse(tiny, Corpus("x", TEXT), SEQ, max_windows=4, with_lens=False)
    skipped = build_report(analysis)
    assert "removal" not in skipped
    assert skipped["similarity"]["block_influence"] == pytest.approx(sim["block_influence"], rel=1e-9)


def test_cli_rejects_malformed_plan(tmp_path, capsys):
    from analysis import cli

    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"schema": PLAN_SCHEMA, "version": 9, "remove": {"blocks": [-1]}}))
    code = cli.main(["evaluate", "--plan", str(bad), "--corpus", "builtin:all", "--seq-len", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert err[0].startswith("error: invalid plan") and "newer" in err[0] and "negative index -1" in err[0]
    assert isinstance(PruningPlan, type)
