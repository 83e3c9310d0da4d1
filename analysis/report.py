"""The JSON report written by `python -m analysis report` (and readable by the app).

It flattens an `Analysis` (and optionally a `RemovalCost`) into the documented
contract: model, corpus, perplexity, similarity, sublayers, removal, sparsity,
logit_lens, early_exit.
"""
from __future__ import annotations

import numpy as np

from analysis import early_exit, similarity, sparsity, store

REPORT_SCHEMA = "layer-lab/report"
REPORT_VERSION = 1


def build_report(analysis, removal=None, *, eps: float = 0.01, seq_oracle_pct: float = 10.0) -> dict:
    sim = analysis.similarity
    report = {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        "model": {k: analysis.model[k] for k in ("name", "architecture", "n_layers", "d_model", "d_mlp",
                                                 "n_params", "fingerprint")},
        "corpus": {k: analysis.corpus[k] for k in ("sha256", "seq_len", "n_windows", "n_predicted_tokens")},
        "perplexity": analysis.perplexity,
        "similarity": {
            "cosine_matrix": sim["cos_all"],
            "block_influence": similarity.block_influence(np.asarray(sim["cos_all"])),
            "angular_best_block": similarity.best_blocks(np.asarray(sim["ang_last"])),
            "cka_matrix": sim["cka_all"],
        },
        "sublayers": {k: analysis.sublayers[k] for k in ("attn_score", "mlp_score", "attn_norm_ratio",
                                                         "mlp_norm_ratio")},
    }
    at = sparsity.at_eps(analysis.sparsity, eps)
    report["sparsity"] = {
        "eps": eps,
        "frac_near_zero": at["frac_near_zero"],
        "frac_relative": sparsity.at_p(analysis.sparsity, 0.01),
        "relative_p": 0.01,
        "frac_exact_zero": analysis.sparsity["frac_exact_zero"],
        "dead_neurons": at["dead_neurons"],
    }
    if analysis.lens is not None:
        lens = analysis.lens
        report["logit_lens"] = {k: lens[k] for k in ("ce", "kl_to_final", "entropy", "top1_agree",
                                                     "median_rank_final_top1")}
        depths = early_exit.sequence_oracle(np.asarray(lens["seq_mean_ce"]), seq_oracle_pct)
        report["early_exit"] = {
            "oracle_mean_fraction": lens["early_exit"]["oracle_mean_fraction"],
            "curves": lens["early_exit"]["curves"],
            "sequence_oracle_tolerance_pct": seq_oracle_pct,
            "sequence_oracle_mean_fraction": float(depths.mean() / analysis.model["n_layers"]),
            "note": early_exit.OPTIMISM_NOTE,
        }
    if removal is not None:
        report["removal"] = {
            "full_ppl": removal.full_ppl,
            "block_ppl": removal.block_ppl,
            "attn_ppl": removal.attn_ppl,
            "mlp_ppl": removal.mlp_ppl,
            "estimate": removal.estimate,
        }
    return store.jsonable(report)
