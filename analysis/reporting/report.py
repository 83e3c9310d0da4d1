"""The JSON report written by `python -m analysis report`, and the app's way back from it.

`build_report` flattens an `Analysis` (and optionally a `RemovalCost`, the
calibration/evaluation split, the `PruningCurves` and the plan of a pruned checkpoint)
into the documented contract: model, corpus, evaluation, perplexity, similarity,
sublayers, removal, sparsity, logit_lens, early_exit, curves, dynamic_depth, plan; and it
keeps the typed results themselves under `results`, so that `open_report` (the one
converter from report.json back to the in-app result objects) rebuilds exactly what the
pages read. Stored reports live under cache/reports/<sha256 of the file>.json, so a link
can name one.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.measure import early_exit
from analysis.core import settings, store
from analysis.data.corpus import plural
from analysis.measure.pipeline import Analysis
from analysis.plans.check import parse_plan
from analysis.ablate.sweep import RemovalCost

REPORT_SCHEMA = "layer-lab/report"
REPORT_VERSION = 2  # 2: `results` (the typed results the app opens) and `plan`; optional evaluation, curves,
# dynamic_depth; early_exit.sequence_oracle_* named per_window_tolerance_exit_* (the app reads only `results`)
_SHA = re.compile(r"^[0-9a-f]{64}$")


def build_report(analysis, removal=None, *, eps: float = 0.01, seq_oracle_pct: float = 10.0, plan=None,
                 split: dict | None = None, curves=None, tasks: dict | None = None) -> dict:
    """report.json (README, "report.json") from a frozen Analysis, an optional RemovalCost,
    for a pruned checkpoint the PruningPlan that made it, and optionally the calibration /
    evaluation split (evaluation.Split.info) and the PruningCurves."""
    sim, sub, spa = analysis.similarity, analysis.sublayers, analysis.sparsity
    report = {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        "model": {k: analysis.model[k] for k in ("name", "architecture", "n_layers", "d_model", "d_mlp",
                                                 "n_params", "fingerprint")}
        | ({"weights": analysis.model["weights"]} if analysis.model.get("weights") else {}),
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
    if plan is not None:
        report["plan"] = plan.to_dict()
    if split is not None:
        report["evaluation"] = split
    if tasks:
        report["tasks"] = tasks_section(tasks)
    if curves is not None:
        report["curves"] = curves_section(curves)
        report["dynamic_depth"] = curves.dynamic_depth.to_dict()
    report["results"] = {"analysis": _pack(analysis), "removal": None if removal is None else removal.to_dict()}
    return store.jsonable(report)


def tasks_section(scores: dict) -> dict:
    """report.json's optional `tasks`: per task (lm-eval, this model as loaded) its version,
    item count, few-shot, main metric and every metric with lm-eval's standard error."""
    return {name: score.summary() | {"output_type": score.output_type, "main_metric": score.main_metric}
            for name, score in scores.items()}


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


def _pack(analysis) -> dict:
    """Analysis.to_dict(), with the per-neuron firing frequencies (count / positions, the
    bulk of the file) stored exactly as integer counts: a quarter of the size."""
    data = analysis.to_dict()
    if data["sparsity"] is not None:  # None for mixture-of-experts MLPs
        spa = dict(data["sparsity"])
        freq = np.asarray(spa.pop("firing_frequency_grid"), dtype=float)
        spa["firing_count_grid"] = np.rint(freq * spa["n_positions"]).astype(np.int64)
        data["sparsity"] = spa
    return store.jsonable(data)


def _unpack(data: dict) -> dict:
    data = dict(data)
    if data["sparsity"] is not None:
        spa = dict(data["sparsity"])
        counts = np.asarray(spa.pop("firing_count_grid"), dtype=float)
        spa["firing_frequency_grid"] = counts / spa["n_positions"]
        data["sparsity"] = spa
    return data


class ReportError(ValueError):
    """A file that is not a report this Layer Lab can open; the message is for the user."""


@dataclass(frozen=True)
class OpenedReport:
    """A report.json opened for the app: the file's data, its sha256 and the typed results."""

    data: dict
    sha256: str
    analysis: object  # pipeline.Analysis
    removal: object | None  # ablate.sweep.RemovalCost
    plan: object | None  # plans.schema.PruningPlan of the checkpoint the report was made on

    @property
    def title(self) -> str:
        corpus = self.analysis.corpus
        return (f"{self.analysis.model['name']} on corpus {corpus.get('id') or corpus['sha256'][:12]} "
                f"({plural(corpus['n_windows'], 'window')} of {corpus['seq_len']} tokens)")


def open_report(raw) -> OpenedReport:
    """report.json (bytes, text or an already parsed dict) -> OpenedReport; ReportError
    with one clear sentence for anything that is not a report this version can open."""

    if isinstance(raw, dict):
        data, raw = raw, report_bytes(raw)
    else:
        raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise ReportError(f"This is not a JSON file ({str(err)[:120]}).") from err
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ReportError(f"This is not a Layer Lab report (schema {str(found)[:60]!r}, expected {REPORT_SCHEMA!r}).")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReportError(f"The report's version {str(version)[:20]!r} is not a number.")
    if version > REPORT_VERSION:
        raise ReportError(f"This report was written by a newer Layer Lab (report version {version}; this one "
                          f"reads up to {REPORT_VERSION}). Upgrade Layer Lab to open it.")
    results = data.get("results")
    if version < REPORT_VERSION or not isinstance(results, dict):
        raise ReportError(f"Report version {version} holds only the summary numbers, not the full results the "
                          "pages need: re-run `python -m analysis report` with this Layer Lab to open it here.")
    try:
        analysis = Analysis.from_dict(_unpack(results["analysis"]))
        removal = None if results.get("removal") is None else RemovalCost.from_dict(results["removal"])
    except store.SchemaError as err:
        raise ReportError(f"The report's results come from another Layer Lab version: {err}") from err
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ReportError(f"The report is damaged: its results cannot be read ({type(err).__name__}: "
                          f"{str(err)[:120]}).") from err
    plan = None
    if data.get("plan") is not None:
        check = parse_plan(data["plan"])
        if not check.ok:
            raise ReportError(f"The report's plan is invalid: {check.message()}")
        plan = check.plan
    return OpenedReport(data, hashlib.sha256(raw).hexdigest(), analysis, removal, plan)


def reports_dir() -> Path:
    return settings.cache_dir() / "reports"


def store_report(raw: bytes) -> OpenedReport:
    """Open `raw` (ReportError when it is not a report) and keep it under
    cache/reports/<sha256>.json, so that a link can name it."""
    report = open_report(raw)
    path = reports_dir() / f"{report.sha256}.json"
    if not path.is_file():
        store.write_atomic(path, lambda fh: fh.write(bytes(raw).decode("utf-8")))
    return report


def stored_report(sha256: str) -> OpenedReport:
    """The stored report with this sha256; ReportError when it is unknown or damaged."""
    if not _SHA.match(sha256 or ""):
        raise ReportError("A stored report is named by the sha256 of its file (64 hex digits).")
    try:
        raw = (reports_dir() / f"{sha256}.json").read_bytes()
    except OSError as err:
        raise ReportError(f"No stored report {sha256[:12]}... on this server.") from err
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise ReportError(f"The stored report {sha256[:12]}... is damaged (its content changed).")
    return open_report(raw)


def stored_reports() -> list[str]:
    """sha256 of every stored report, newest first."""
    paths = [p for p in reports_dir().glob("*.json") if _SHA.match(p.stem)]
    return [p.stem for p in sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)]


def report_bytes(report: dict) -> bytes:
    """The exact bytes `python -m analysis report` writes for `report`."""
    return json.dumps(store.jsonable(report)).encode("utf-8")
