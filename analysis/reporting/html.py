"""A self-contained HTML report from report.json: one file that opens offline in a browser.

It holds the model card, the corpus and settings, every figure of the five analysis
pages drawn by the same functions the pages use (analysis/reporting/figures/, at the pages'
default settings), the measured removal sweep when the report has it, the plan and the
pruning curves when present, and each number's definition in one line. The figures
stay interactive (hover, zoom). Plotly's JavaScript (4.8 MB) is inlined once, gzipped
and base64-encoded (2 MB), and unpacked by the browser's own DecompressionStream; the
figures are JSON that one inline script draws, so the file needs no server and no
network. Built from report.json alone, so the CLI and the app (also from an uploaded
report) write the same file.
"""
from __future__ import annotations

import base64
import gzip
import html
import json
from functools import lru_cache

import numpy as np
import plotly.io as pio

from analysis.model import architectures
from analysis.measure import early_exit, similarity, sublayers
from analysis.data.corpus import plural
from analysis.reporting.figures import lens as lens_figs
from analysis.reporting.figures import similarity as sim_figs
from analysis.reporting.figures import sparsity as spa_figs
from analysis.reporting.figures import sublayers as sub_figs
from analysis.reporting.html_sections import DEFINITIONS, curves_figures, plan_rows, table
from analysis.ablate.sweep import predictors
from analysis.reporting.report import open_report
from analysis.reporting.figures import curves as curve_figs

# The pages' default settings, which the static figures show.
EPS, P, GROUPS, TARGET, TOLERANCE_PCT, RULE = 0.01, 0.01, 4, 0.95, 10, "max_prob"
NEEDS_MODEL = ("Needs the model (not in report.json): the per-window views (logit-lens grid, per-token density) "
               "and the playground. Open the report in Layer Lab with the model loaded to see them.")


@lru_cache(maxsize=1)
def _plotly_js_gzip_b64() -> str:
    from plotly.offline import get_plotlyjs
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode("ascii")


class _Doc:
    """Collects HTML parts and figures; each figure becomes a <div> and a JSON <script>."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n_figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, text: str, level: int = 2) -> None:
        slug = "".join(c if c.isalnum() else "-" for c in text.lower())
        self.add(f'<h{level} id="{slug}">{html.escape(text)}</h{level}>')

    def para(self, text: str, cls: str = "") -> None:
        self.add(f'<p class="{cls}">{html.escape(text)}</p>')

    def figure(self, fig, caption: str = "") -> None:
        self.n_figures += 1
        div = f"fig{self.n_figures}"
        fig = fig.to_plotly_json()
        fig["layout"].pop("template", None)  # one shared template below, not one per figure
        payload = pio.json.to_json_plotly(fig).replace("</", "<\\/")
        self.add(f'<div class="figure" id="{div}"></div>'
                 f'<script type="application/json" class="figure-data" data-target="{div}">{payload}</script>')
        if caption:
            self.para(caption, "caption")


def _card(doc: _Doc, report: dict, analysis) -> None:
    model, corpus = analysis.model, analysis.corpus
    doc.heading("Model and corpus")
    doc.add(table([{"model": model["name"], "architecture": model["architecture"], "layers": model["n_layers"],
                    "d_model": model["d_model"], "d_mlp": model["d_mlp"],
                    "parameters": f"{model['n_params'] / 1e6:.1f} M", "fingerprint": model["fingerprint"],
                    "attention/MLP": "parallel" if model.get("parallel_attn_mlp") else "sequential"}]))
    if model.get("weights"):
        doc.para(f"Weights: {model['weights']}.", "caption")
    doc.add(table([{"corpus": corpus.get("id", ""), "sha256": corpus["sha256"], "windows": corpus["n_windows"],
                    "seq_len": corpus["seq_len"], "BOS": "yes" if corpus.get("bos") else "no",
                    "predicted tokens": corpus["n_predicted_tokens"], "sparsity eps": analysis.eps,
                    "perplexity": f"{report['perplexity']:.4f}"}]))
    doc.para("Windows: consecutive, non-overlapping windows of seq_len tokens with the BOS prepended; the "
             "remainder is dropped. Perplexity = exp(mean next-token cross-entropy over all predicted tokens).",
             "caption")


def _similarity(doc: _Doc, analysis) -> None:
    sim, L = analysis.similarity, analysis.model["n_layers"]
    doc.heading("Hidden-state similarity")
    blocks = sim.best_blocks()
    block = (blocks[0]["start"], 1) if blocks else None
    for measure, positions in (("cosine", "all"), ("angular", "last"), ("cka", "all")):
        title = f"{measure} between h_i and h_j, {similarity.POSITIONS[positions]}"
        doc.figure(sim_figs.layer_heatmap(sim.matrix(measure, positions), measure, title, block))
    if blocks:
        doc.figure(sim_figs.best_block_curve(blocks, 1), "Red point: the best single block (n = 1), also "
                   "outlined on the heatmaps.")
        doc.add(table([{"n": b["n"], "start": b["start"], "removes blocks": f"{b['start']}..{b['start'] + b['n'] - 1}",
                        "angular distance": round(b["distance"], 5)} for b in blocks], scroll=True))
    doc.figure(sim_figs.block_influence_bars(sim.block_influence(), block))
    coords, explained = similarity.layer_map(sim.mean_repr)
    groups = similarity.layer_groups(sim.cos_all, min(GROUPS, L + 1), True)
    doc.figure(sim_figs.layer_map(coords, explained, groups), f"{GROUPS} contiguous redundancy groups "
               "(agglomerative, distance 1 - mean cosine).")


def _sublayers(doc: _Doc, analysis, removal) -> None:
    sub = analysis.sublayers
    doc.heading("Attention vs MLP")
    doc.figure(sub_figs.sublayer_scores(sub.attn_score, sub.mlp_score, sub.attn_norm_ratio, sub.mlp_norm_ratio,
                                        sub.parallel))
    doc.add(table(sublayers.ranking_table(sub.attn_score, sub.mlp_score, removal and removal.attn_ppl,
                                          removal and removal.mlp_ppl), scroll=True))
    doc.heading("Measured removal cost", 3)
    if removal is None:
        doc.para("Not in this report (written with --skip-removal).", "caption")
        return
    doc.figure(sub_figs.removal_costs(removal.block_ppl, removal.attn_ppl, removal.mlp_ppl, removal.full_ppl))
    exact = {k: getattr(removal, k) for k in ("block_ppl", "attn_ppl", "mlp_ppl")}
    doc.figure(sub_figs.estimate_vs_exact(exact, removal.estimate, removal.estimate["spearman"]))
    panels = predictors(analysis.similarity.block_influence(), sub.attn_score, sub.mlp_score, removal)
    doc.figure(sub_figs.predictor_scatter(panels, removal.full_ppl), "Each point is one removal: its redundancy "
               "score against the measured perplexity ratio, with the Spearman rank correlation.")


def _sparsity(doc: _Doc, analysis) -> None:
    spa, model = analysis.sparsity, analysis.model
    doc.heading("Activation sparsity")
    if spa is None:
        doc.para(architectures.MOE_SPARSITY_NOTE, "caption")
        return
    eps = analysis.eps if np.isclose(spa.eps_grid, analysis.eps).any() else EPS
    at = spa.at_eps(eps)
    doc.figure(spa_figs.sparsity_by_layer(at["frac_near_zero"], spa.at_p(P), spa.frac_exact_zero, eps, P))
    doc.figure(spa_figs.dead_neurons(at["dead_neurons"], model["d_mlp"], eps))
    layer = model["n_layers"] // 2
    doc.figure(spa_figs.firing_histogram(np.asarray(at["firing_frequency"])[layer], layer, eps))


def _lens(doc: _Doc, analysis) -> None:
    doc.heading("Logit lens & early exit")
    result, L = analysis.lens, analysis.model["n_layers"]
    if result is None:
        doc.para("Not in this report (written with --skip-lens).", "caption")
        return
    doc.figure(lens_figs.layer_curves({k: getattr(result, k) for k, _ in lens_figs.CURVES}))
    ee = result.early_exit
    doc.para(early_exit.OPTIMISM_NOTE, "note")
    if RULE in ee.curves:
        curve = ee.curves[RULE]
        i = len(curve.thresholds) // 2
        doc.figure(lens_figs.exit_depth_histogram(ee.oracle_exit_hist, curve.exit_hist[i],
                                                  f"{RULE} {curve.direction} {curve.thresholds[i]:g}"),
                   f"Oracle exit: mean fraction of blocks used {ee.oracle_mean_fraction:.3f}.")
    points = {r: early_exit.operating_point(c, TARGET) for r, c in ee.curves.items()}
    doc.figure(lens_figs.exit_sweep(ee.curves, points, TARGET))
    doc.add(table([{"rule": r, **(p or {"threshold": "none reaches the target"})} for r, p in points.items()]))
    depths = early_exit.per_window_tolerance_exit(result.seq_mean_ce, TOLERANCE_PCT)
    doc.figure(lens_figs.per_window_exit_histogram(depths, L, TOLERANCE_PCT),
               f"Per-sequence oracle: mean fraction of blocks {depths.mean() / L:.3f}.")


def _curves(doc, curves: dict, depth: dict | None) -> None:
    """Pruning curves: the page's figure per kind when the section is report.json's own
    (`methods` per kind), else a line figure per numeric series; the oracle's fractions."""
    doc.heading("Pruning curves")
    methods = curves.get("methods") if isinstance(curves.get("methods"), dict) else None
    if methods and isinstance(curves.get("full_ppl"), dict):
        doc.para(f"Chosen on {plural(curves.get('n_calibration_windows'), 'calibration window')}, perplexity on "
                 f"{plural(curves.get('n_evaluation_windows'), 'evaluation window')} (eval = {curves.get('eval')}).",
                 "caption")
        for kind, by_method in methods.items():
            lines = [dict(curve, method=name) for name, curve in by_method.items()]
            doc.figure(curve_figs.pruning_curves(lines, curves["full_ppl"]["evaluation"], kind))
    else:
        for fig in curves_figures(curves):
            doc.figure(fig)
    if depth:
        doc.heading("Per-sequence dynamic-depth oracle")
        doc.add(table([{"family": family, "mean fraction of blocks": depth[family].get("mean_fraction"),
                        "mean NLL": depth[family].get("mean_nll")} for family in ("skipping", "early_exit")]
                      + [{"family": "paper (skipping, OPT-1.3B)", "mean fraction of blocks":
                          depth.get("paper_skip_fraction"), "mean NLL": ""}]))
        doc.para(str(depth.get("note", "")), "caption")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:0 auto;padding:1em 2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.scroll{max-height:320px;overflow:auto;display:inline-block}.caption{color:#555;font-size:13px}
.note{background:#fff6e0;padding:.5em}.figure{min-height:300px}#plotly-status{color:#b00}"""

LOADER = """(async () => {
  const status = document.getElementById('plotly-status');
  try {
    if (typeof DecompressionStream === 'undefined') throw new Error('this browser cannot unpack the embedded ' +
      'plotly.js (it needs DecompressionStream: Chrome/Edge 80+, Firefox 113+, Safari 16.4+)');
    const packed = Uint8Array.from(atob(document.getElementById('plotly-js').textContent), c => c.charCodeAt(0));
    const code = await new Response(new Blob([packed]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
    const script = document.createElement('script');
    script.text = code;
    document.head.appendChild(script);
    const template = JSON.parse(document.getElementById('plotly-template').textContent);
    for (const el of document.querySelectorAll('script.figure-data')) {
      const fig = JSON.parse(el.textContent);
      fig.layout.template = template;
      await Plotly.newPlot(el.dataset.target, fig.data, fig.layout, {responsive: true, displaylogo: false});
    }
    status.remove();
    document.body.dataset.figuresDrawn = String(document.querySelectorAll('.js-plotly-plot').length);
  } catch (err) {
    status.textContent = 'The figures could not be drawn: ' + err.message;
  }
})();"""


def html_report(report: dict) -> str:
    """The self-contained HTML document for a report.json dict (raises report.ReportError
    for a report this version cannot open)."""
    opened = open_report(report)
    analysis, removal = opened.analysis, opened.removal
    doc = _Doc()
    _card(doc, report, analysis)
    _similarity(doc, analysis)
    _sublayers(doc, analysis, removal)
    _sparsity(doc, analysis)
    _lens(doc, analysis)
    doc.para(NEEDS_MODEL, "caption")
    if opened.plan is not None:
        doc.heading("Pruning plan of this checkpoint")
        doc.add(table(plan_rows(opened.plan)))
    if report.get("tasks"):
        doc.heading("Tasks (lm-eval)")
        doc.para("Accuracy of this model on each task, by lm-eval, with its standard error.", "caption")
        doc.add(table([{"task": name, "items": entry.get("n"), "few-shot": entry.get("num_fewshot"),
                        "metric": metric, "value": value.get("value"), "stderr": value.get("stderr")}
                       for name, entry in report["tasks"].items() for metric, value in entry.get("metrics", {}).items()]))
    if report.get("curves"):
        _curves(doc, report["curves"], report.get("dynamic_depth"))
    doc.heading("Definitions")
    doc.add(table([{"number": name, "definition": text} for name, text in DEFINITIONS]))
    template = json.dumps(pio.templates["plotly"].to_plotly_json()).replace("</", "<\\/")
    title = f"Layer Lab report: {analysis.model['name']}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="caption">{html.escape(opened.title)} · report sha256 {opened.sha256[:12]}… · '
        f'{doc.n_figures} interactive figures (hover, zoom, double-click to reset)</p>',
        '<p id="plotly-status">Drawing the figures…</p>',
        *doc.parts,
        f'<script type="application/json" id="plotly-template">{template}</script>',
        f'<script type="text/plain" id="plotly-js">{_plotly_js_gzip_b64()}</script>',
        f"<script>{LOADER}</script>", "</body></html>", "",
    ])
