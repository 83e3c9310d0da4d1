"""The JSON report written by `python -m analysis report` (and readable by the app).

It flattens an `Analysis` (and optionally a `RemovalCost`, the calibration/evaluation
split and the `PruningCurves`) into the documented contract: model, corpus, evaluation,
perplexity, similarity, sublayers, removal, sparsity, logit_lens, early_exit, curves,
dynamic_depth.
"""
from __future__ import annotations

from analysis import early_exit, store

REPORT_SCHEMA = "layer-lab/report"
REPORT_VERSION = 2  # 2: early_exit.sequence_oracle_* renamed per_window_tolerance_exit_*; evaluation, curves, dynamic_depth


def build_report(analysis, removal=None, *, eps: float = 0.01, seq_oracle_pct: float = 10.0, split: dict | None = None,
                 curves=None) -> dict:
    """report.json (README, "report.json") from a frozen Analysis and optional RemovalCost,
    split (evaluation.Split.info) and PruningCurves."""
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
        depths = early_exit.per_window_tolerance_exit(lens.seq_mean_ce, seq_oracle_pct)
        report["early_exit"] = {
            "oracle_mean_fraction": lens.early_exit.oracle_mean_fraction,
            "curves": lens.early_exit.curves,
            "per_window_tolerance_exit_pct": seq_oracle_pct,
            "per_window_tolerance_exit_mean_fraction": float(depths.mean() / analysis.model["n_layers"]),
            "note": early_exit.OPTIMISM_NOTE,
        }
    if removal is not None:
        report["removal"] = {k: getattr(removal, k) for k in ("full_ppl", "block_ppl", "attn_ppl", "mlp_ppl",
                                                              "estimate")}
    if split is not None:
        report["evaluation"] = split
    if curves is not None:
        report["curves"] = curves_section(curves)
        report["dynamic_depth"] = curves.dynamic_depth.to_dict()
    return store.jsonable(report)


def curves_section(curves) -> dict:
    """report.json's `curves`: per kind and method the points k, removed layers, fraction
    of parameters, evaluation and calibration perplexity (random: lower median and band)."""
    methods: dict = {}
    for curve in curves.curves.values():
        point = {k: v for k, v in curve.to_dict().items() if k not in ("kind", "method")}
        methods.setdefault(curve.kind, {})[curve.method] = point
    return {"eval": curves.split["eval"], "n_calibration_windows": curves.split["n_calibration_windows"],
            "n_evaluation_windows": curves.split["n_evaluation_windows"], "full_ppl": curves.full_ppl,
            "seeds": curves.seeds, "greedy": curves.greedy, "methods": methods}
