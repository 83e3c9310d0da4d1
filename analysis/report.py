"""The JSON report written by `python -m analysis report` (and readable by the app).

It flattens an `Analysis` (and optionally a `RemovalCost`) into the documented
contract: model, corpus, perplexity, similarity, sublayers, removal, sparsity,
logit_lens, early_exit.
"""
from __future__ import annotations

from analysis import early_exit, store

REPORT_SCHEMA = "layer-lab/report"
REPORT_VERSION = 1


def build_report(analysis, removal=None, *, eps: float = 0.01, seq_oracle_pct: float = 10.0) -> dict:
    """report.json (README, "report.json") from a frozen Analysis and optional RemovalCost."""
    sim, sub, spa = analysis.similarity, analysis.sublayers, analysis.sparsity
    report = {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        "model": {k: analysis.model[k] for k in ("name", "architecture", "n_layers", "d_model", "d_mlp",
                                                 "n_params", "fingerprint")},
        "corpus": {k: analysis.corpus[k] for k in ("sha256", "seq_len", "n_windows", "n_predicted_tokens")},
        "perplexity": analysis.perplexity,
        "similarity": {
            "cosine_matrix": sim.cos_all,
            "block_influence": sim.block_influence(),
            "angular_best_block": sim.best_blocks(),
            "cka_matrix": sim.cka_all,
        },
        "sublayers": {"attn_score": sub.attn_score, "mlp_score": sub.mlp_score,
                      "attn_norm_ratio": sub.attn_norm_ratio, "mlp_norm_ratio": sub.mlp_norm_ratio},
    }
    if spa is not None:  # absent for mixture-of-experts MLPs
        at = spa.at_eps(eps)
        report["sparsity"] = {
            "eps": eps,
            "frac_near_zero": at["frac_near_zero"],
            "frac_relative": spa.at_p(0.01),
            "relative_p": 0.01,
            "frac_exact_zero": spa.frac_exact_zero,
            "dead_neurons": at["dead_neurons"],
        }
    if analysis.lens is not None:
        lens = analysis.lens
        report["logit_lens"] = {"ce": lens.ce, "kl_to_final": lens.kl_to_final, "entropy": lens.entropy,
                                "top1_agree": lens.top1_agree, "median_rank_final_top1": lens.median_rank_final_top1}
        depths = early_exit.sequence_oracle(lens.seq_mean_ce, seq_oracle_pct)
        report["early_exit"] = {
            "oracle_mean_fraction": lens.early_exit.oracle_mean_fraction,
            "curves": lens.early_exit.curves,
            "sequence_oracle_tolerance_pct": seq_oracle_pct,
            "sequence_oracle_mean_fraction": float(depths.mean() / analysis.model["n_layers"]),
            "note": early_exit.OPTIMISM_NOTE,
        }
    if removal is not None:
        report["removal"] = {k: getattr(removal, k) for k in ("full_ppl", "block_ppl", "attn_ppl", "mlp_ppl",
                                                              "estimate")}
    return store.jsonable(report)
