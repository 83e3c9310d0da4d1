"""Plotly figures for the logit lens and early exit: arrays in, figure out.

Token strings come from the model's tokenizer and may contain `<b>`, `&` or newlines;
plotly renders a subset of HTML in text, ticks and hovers, so every token passes through
`escape_token` before it reaches a figure.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.reporting.figures import scales

RULE_COLOURS = {"max_prob": "#1f77b4", "top2_gap": "#ff7f0e", "entropy": "#2ca02c", "cosine": "#d62728"}
COLOUR_SCALES = {"p_final_top1": "Viridis", "kl": "Magma_r", "entropy": "Cividis_r"}


def escape_token(token: str, limit: int = 14) -> str:
    """A token string made safe and visible for plotly text: HTML escaped, newlines and
    tabs shown as \\n / \\t, long tokens shortened."""
    shown = token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return html.escape(shown, quote=False)


def lens_grid(top_tokens: np.ndarray, top_probs: np.ndarray, values: np.ndarray, input_tokens: list,
              next_tokens: list, positions: np.ndarray, colour_label: str, colour_key: str = "p_final_top1",
              layer_label: str = "block") -> go.Figure:
    """Heatmap positions (x) x layers (y): each cell shows the top-1 token of the logit lens
    at that layer, hover the top-k with probabilities; colour = `values` [T, L].
    top_tokens / top_probs [T, L, k]; input tokens below the grid, true next tokens above."""
    T, L, k = top_tokens.shape
    cell = np.vectorize(lambda s: escape_token(s, 8))(top_tokens[:, :, 0]).T  # [L, T]
    hover = np.empty((L, T), dtype=object)
    for t in range(T):
        head = f"pos {positions[t]} · input {escape_token(input_tokens[t], 24)} · next {escape_token(next_tokens[t], 24)}"
        for l in range(L):
            tops = "<br>".join(f"{escape_token(top_tokens[t, l, j], 24)}  {top_probs[t, l, j]:.3f}" for j in range(k))
            hover[l, t] = f"{head}<br>{layer_label} {l} · {colour_label} {values[t, l]:.3f}<br>{tops}"
    x = np.arange(T)
    fig = go.Figure(go.Heatmap(
        z=values.T, x=x, y=np.arange(L), text=cell, texttemplate="%{text}", textfont={"size": 9},
        customdata=hover, hovertemplate="%{customdata}<extra></extra>",
        colorscale=COLOUR_SCALES.get(colour_key, "Viridis"), colorbar={"title": colour_label},
    ))
    # An invisible trace carries the top axis that names the true next token of each column.
    fig.add_trace(go.Scatter(x=x, y=np.zeros(T), xaxis="x2", mode="markers", marker={"opacity": 0},
                             hoverinfo="skip", showlegend=False))
    ticks = {"tickmode": "array", "tickvals": x, "tickangle": -60, "range": [-0.5, T - 0.5]}
    fig.update_layout(
        xaxis={**ticks, "ticktext": [escape_token(s) for s in input_tokens], "title": "input token"},
        xaxis2={**ticks, "ticktext": [escape_token(s) for s in next_tokens], "overlaying": "x", "side": "top",
                "title": "true next token"},
        yaxis={"title": f"readout after {layer_label}", "range": [-0.5, L - 0.5]},
        height=max(420, 24 * L + 220), margin={"t": 110, "b": 110},
    )
    return fig


CURVES = (("ce", "cross-entropy to gold (nats)"), ("kl_to_final", "KL(final ‖ layer) (nats)"),
          ("entropy", "entropy (nats)"), ("top1_agree", "top-1 agreement with final"),
          ("median_rank_final_top1", "median rank of final top-1 (0 = top)"))


def layer_curves(metrics: dict) -> go.Figure:
    """One small line plot per corpus-level logit-lens metric against the block index."""
    names = [key for key, _ in CURVES if key in metrics]
    titles = dict(CURVES)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[titles[n] for n in names])
    for i, name in enumerate(names, start=1):
        y = np.asarray(metrics[name], dtype=float)
        if name == "median_rank_final_top1":  # log axis: plot rank + 1, so the top is 1
            y = np.maximum(y, 0) + 1
            fig.update_yaxes(**scales.log_axis(y, pad=0.08), row=i, col=1)
            fig.layout.annotations[i - 1].text = "median rank of final top-1, plus 1 (log scale; 1 = top)"
        fig.add_trace(go.Scatter(x=np.arange(len(y)), y=y, mode="lines+markers", name=titles[name]), row=i, col=1)
    fig.update_xaxes(title="readout after block", row=len(names), col=1)
    fig.update_layout(height=190 * len(names) + 60, showlegend=False, margin={"t": 40})
    return fig


def exit_depth_histogram(oracle_hist, rule_hist=None, rule_label: str = "") -> go.Figure:
    """Tokens per exit block (1-based blocks used): the oracle and optionally one rule."""
    oracle = np.asarray(oracle_hist, dtype=float)
    depths = np.arange(1, len(oracle) + 1)
    fig = go.Figure(go.Bar(x=depths, y=oracle / max(1.0, oracle.sum()), name="oracle (first block = final top-1)"))
    if rule_hist is not None:
        rule = np.asarray(rule_hist, dtype=float)
        fig.add_trace(go.Bar(x=depths, y=rule / max(1.0, rule.sum()), name=rule_label))
    fig.update_layout(barmode="group", xaxis_title="blocks used before exiting", yaxis_title="fraction of tokens",
                      height=360, legend={"orientation": "h", "y": 1.12})
    return fig


def exit_sweep(curves: dict,  # rule -> early_exit.ExitCurve
               operating: dict | None = None, target: float | None = None) -> go.Figure:
    """Threshold sweeps per rule: fraction of blocks used against agreement with the full
    model (left) and against the change in cross-entropy (right); operating points marked."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("agreement with full model", "Δ cross-entropy (nats)"))
    for rule, curve in curves.items():
        colour = RULE_COLOURS.get(rule)
        frac = np.asarray(curve.fraction_blocks)
        hover = [f"{rule} {curve.direction} {t:g}" for t in curve.thresholds]
        for col, key in ((1, "agreement"), (2, "delta_ce")):
            fig.add_trace(go.Scatter(x=frac, y=getattr(curve, key), mode="lines+markers", marker={"size": 4},
                                     line={"color": colour}, name=rule, legendgroup=rule, showlegend=col == 1,
                                     text=hover, hovertemplate="%{text}<br>blocks %{x:.3f}<br>%{y:.4f}<extra></extra>"),
                          row=1, col=col)
        point = (operating or {}).get(rule)
        if point is not None:
            for col, key in ((1, "agreement"), (2, "delta_ce")):
                fig.add_trace(go.Scatter(
                    x=[point["fraction_blocks"]], y=[point[key]], mode="markers", showlegend=False,
                    legendgroup=rule, marker={"symbol": "star", "size": 15, "color": colour, "line": {"width": 1}},
                    hovertemplate=f"{rule} operating point: threshold {point['threshold']:g}<br>"
                                  "blocks %{x:.3f}<br>%{y:.4f}<extra></extra>"), row=1, col=col)
    if target is not None:  # labelled at the left, below the line: the curves are low there, nothing is clipped
        fig.add_hline(y=target, line_dash="dot", row=1, col=1, annotation_text=f"target {target:.0%}",
                      annotation_position="bottom left")
    fig.update_xaxes(title="fraction of blocks used", range=[0, 1.04])
    fig.update_yaxes(range=[-0.03, 1.06], row=1, col=1)
    fig.update_layout(height=440, legend={"orientation": "h", "y": -0.22}, margin={"t": 60, "b": 100})
    return fig


def operating_point_row(point: dict | None) -> dict:
    """An operating point (early_exit.operating_point) as table text with enough digits
    to tell 0.9995 from 1: the threshold as stored, fractions to 4 decimals, Δ CE signed."""
    if point is None:
        return {"threshold": None, "fraction_blocks": None, "agreement": None, "delta_ce": None}
    return {"threshold": f"{point['threshold']:g}", "fraction_blocks": f"{point['fraction_blocks']:.4f}",
            "agreement": f"{point['agreement']:.4f}", "delta_ce": f"{point['delta_ce']:+.4f} nats"}


def per_window_exit_histogram(depths, n_layers: int, tolerance_pct: float) -> go.Figure:
    """Distribution over windows of the fewest blocks within tolerance of each window's own
    full-model perplexity (early_exit.per_window_tolerance_exit)."""
    counts = np.bincount(np.asarray(depths, dtype=int), minlength=n_layers + 1)[1:]
    fig = go.Figure(go.Bar(x=np.arange(1, n_layers + 1), y=counts))
    mean = float(np.mean(depths))
    # The label goes on the side of the line with more room (a mean near the last block
    # used to push it off the plot).
    side = "top left" if mean > (n_layers + 1) / 2 else "top right"
    fig.add_vline(x=mean, line_dash="dash", annotation_text=f"mean {mean:.1f} blocks", annotation_position=side)
    fig.update_layout(xaxis_title=f"fewest blocks with logit-lens perplexity within {tolerance_pct:g}% of full",
                      xaxis_range=[0.5, n_layers + 0.5], yaxis_title="windows", yaxis_range=[0, 1.15 * counts.max()],
                      height=340, margin={"t": 40})
    return fig
