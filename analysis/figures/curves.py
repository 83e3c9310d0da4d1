"""Figures for the pruning-curves page: perplexity against the fraction of parameters
removed (log scale, a second axis counting removed components, the full model's line),
and the per-window distribution of the dynamic-depth oracle.

Functions take plain lists (a Curve's fields) and return plotly figures. Every point of
a method's line carries customdata [method, k], so a click can be mapped back to the
removal it stands for.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

COLOURS = {"lowest_block_influence": "#1a73e8", "lowest_redundancy": "#1a73e8", "best_contiguous_block": "#e37400",
           "reverse_order": "#9334e6", "cheapest_single": "#188038", "iterative_greedy": "#d93025",
           "random": "#5f6368"}
UNITS = {"blocks": "blocks removed", "attn": "attention sublayers removed", "mlp": "MLP sublayers removed"}


def _pct(values) -> list:
    return [100.0 * float(v) for v in values]


def pruning_curves(curves: list, full_ppl: float, kind: str, show_calibration: bool = False,
                   full_calibration: float | None = None) -> go.Figure:
    """One line per method: x = % of parameters removed, y = evaluation perplexity
    (log axis); random: its lower-median line and 10-90% band. Top axis: k. Dotted lines:
    the same methods' calibration perplexity (when asked and measured)."""
    fig = go.Figure()
    ticks = None
    for curve in curves:
        x = _pct(curve["param_fraction"])
        colour = COLOURS.get(curve["method"], "#202124")
        data = [[curve["method"], k, ", ".join(map(str, r))] for k, r in zip(curve["k"], curve["removed"])]
        if curve.get("band_low") is not None:
            fig.add_trace(go.Scatter(x=x + x[::-1], y=list(curve["band_high"]) + list(curve["band_low"])[::-1],
                                     fill="toself", fillcolor="rgba(95,99,104,0.15)", line=dict(width=0),
                                     hoverinfo="skip", name="random 10-90%", legendgroup="random"))
        fig.add_trace(go.Scatter(
            x=x, y=curve["eval_ppl"], mode="lines+markers", name=curve["method"], customdata=data,
            line=dict(color=colour, dash="dash" if curve["method"] == "random" else "solid"),
            marker=dict(size=6), legendgroup=curve["method"],
            hovertemplate="%{customdata[0]}, k = %{customdata[1]}<br>%{x:.1f}% of parameters<br>"
                          "evaluation perplexity %{y:.3f}<br>removed: %{customdata[2]}<extra></extra>"))
        calib = curve.get("calib_ppl")
        if show_calibration and calib and all(v is not None for v in calib):
            fig.add_trace(go.Scatter(x=x, y=calib, mode="lines", name=f"{curve['method']} (calibration)",
                                     line=dict(color=colour, dash="dot", width=1), legendgroup=curve["method"],
                                     hovertemplate="calibration perplexity %{y:.3f}<extra></extra>"))
        ticks = ticks or (x, curve["k"])
    fig.add_hline(y=full_ppl, line=dict(color="#202124", width=1), annotation_text="full model (evaluation)",
                  annotation_position="bottom right")
    if show_calibration and full_calibration is not None:
        fig.add_hline(y=full_calibration, line=dict(color="#202124", width=1, dash="dot"),
                      annotation_text="full model (calibration)", annotation_position="top right")
    if ticks:  # the top axis counts removed components at the same positions
        x, ks = ticks
        step = max(1, len(ks) // 10)
        fig.add_trace(go.Scatter(x=x, y=[full_ppl] * len(x), xaxis="x2", mode="markers", opacity=0,
                                 hoverinfo="skip", showlegend=False))
        span = [0, max(x) * 1.03]
        fig.update_layout(xaxis2=dict(overlaying="x", side="top", range=span, tickvals=x[::step],
                                      ticktext=[str(k) for k in ks[::step]], title=UNITS[kind], showgrid=False))
        fig.update_xaxes(range=span, selector=dict(anchor="y"))
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=70, b=40), legend=dict(orientation="h", y=-0.15),
                      xaxis=dict(title="parameters removed (%)"),
                      yaxis=dict(title="evaluation perplexity (log scale)", type="log"), clickmode="event+select")
    return fig


def oracle_fractions(skipping: list, early_exit: list, n_layers: int) -> go.Figure:
    """Per evaluation window: the fraction of blocks the oracle runs, for both families."""
    fig = go.Figure()
    x = (100.0 * np.arange(n_layers + 1) / n_layers).tolist()
    for name, values, colour in (("layer skipping", skipping, "#d93025"), ("early exit", early_exit, "#1a73e8")):
        blocks = np.rint(np.asarray(values, dtype=float) * n_layers).astype(int)
        counts = np.bincount(blocks, minlength=n_layers + 1)
        fig.add_trace(go.Bar(x=x, y=counts.tolist(), name=name, marker_color=colour,
                             opacity=0.75, hovertemplate="%{x:.0f}% of blocks: %{y} windows<extra></extra>"))
    fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=30, b=40),
                      xaxis=dict(title="fraction of blocks run by the oracle (%)"),
                      yaxis=dict(title="evaluation windows"), legend=dict(orientation="h", y=1.12))
    return fig
