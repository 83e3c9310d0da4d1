"""Figures for attention-versus-MLP redundancy and for the measured removal cost: per-layer
sublayer scores with output-norm ratios, the exact perplexity of all 3L single removals,
the first-order estimate against the exact sweep, and redundancy scores against measured
cost (does similarity predict damage?).

Each function takes plain arrays and returns a plotly figure; nothing here computes
statistics or knows about Streamlit.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.reporting.figures import scales

KIND_STYLE = {"block": ("Block", "#636efa"), "attn": ("Attention", "#ef553b"), "mlp": ("MLP", "#00cc96")}


def sublayer_scores(attn_score, mlp_score, attn_ratio, mlp_ratio, parallel: bool, scale: str = "clip") -> go.Figure:
    """Top: attention and MLP redundancy scores per layer side by side; bottom: the
    sublayers' output-norm ratios. `scale` (scales.BAR_SCALES): "clip" caps each panel
    above the bulk of its bars and prints the value of each bar that runs past the cap
    (layer 0 often dwarfs the rest), "log" uses log axes, "linear" shows everything."""
    layers = np.arange(len(attn_score))
    against = "resid_pre" if parallel else "its input stream"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, subplot_titles=(
        "Score = 1 - mean cos(stream before, stream after) (lower = more redundant)",
        f"Output-norm ratio ||sublayer output|| / ||{against}||"))
    for row, (a, m) in ((1, (attn_score, mlp_score)), (2, (attn_ratio, mlp_ratio))):
        a, m = np.asarray(a, dtype=float), np.asarray(m, dtype=float)
        axis = scales.bar_axis(np.concatenate([a, m]), scale)
        for kind, values, shift in (("attn", a, -0.2), ("mlp", m, 0.2)):
            name, color = KIND_STYLE[kind]
            fig.add_trace(go.Bar(x=layers, y=values, name=name, marker_color=color,
                                 legendgroup=kind, showlegend=row == 1,
                                 hovertemplate=f"{name} %{{x}}<br>%{{y:.4f}}<extra></extra>"), row=row, col=1)
            if axis["type"] == "linear":
                for note in scales.clipped_notes(layers, values, axis["range"][1], shift):
                    fig.add_annotation(**note, row=row, col=1)
        fig.update_yaxes(**axis, row=row, col=1)
    fig.update_layout(barmode="group", height=580, margin=dict(l=40, r=20, t=60, b=40))
    fig.update_xaxes(title="layer", row=2, col=1)
    fig.update_yaxes(title="score", row=1, col=1)
    fig.update_yaxes(title="norm ratio", row=2, col=1)
    return fig


def removal_costs(block_ppl, attn_ppl, mlp_ppl, full_ppl: float) -> go.Figure:
    """Exact corpus perplexity with each block / attention / MLP removed (log scale), the
    full model as a dashed line labelled at its right end. The y range comes from the
    data: a log axis takes annotation positions in log10 units, so the label is placed
    at log10(full_ppl) (plotly's add_hline label would sit at 10^full_ppl)."""
    fig = go.Figure()
    for kind, values in (("block", block_ppl), ("attn", attn_ppl), ("mlp", mlp_ppl)):
        name, color = KIND_STYLE[kind]
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=np.asarray(values, dtype=float),
                                 mode="lines+markers", name=f"{name} removed", marker_color=color,
                                 hovertemplate=f"{name} %{{x}} removed<br>perplexity %{{y:.3f}}<extra></extra>"))
    fig.add_hline(y=full_ppl, line_dash="dash", line_color="gray")
    # Below the line, where removals (which rarely help) leave room; full_ppl / 1.6 keeps that room in range.
    fig.add_annotation(x=1, xref="paper", xanchor="right", y=math.log10(full_ppl), yref="y", yanchor="top",
                       text=f"full model {full_ppl:.3f}", showarrow=False, font=dict(color="gray"))
    axis = scales.log_axis(block_ppl, attn_ppl, mlp_ppl, [full_ppl, full_ppl / 1.6])
    fig.update_layout(title="Measured removal cost: corpus perplexity with one component removed",
                      height=420, xaxis_title="layer", yaxis=axis | {"title": "perplexity (log scale)"},
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def estimate_vs_exact(exact: dict, estimate: dict, spearman: dict) -> go.Figure:
    """First-order estimate against the exact sweep, one colour per kind, with y = x."""
    fig = go.Figure()
    lo, hi = np.inf, 0.0
    for kind in ("block", "attn", "mlp"):
        x = np.asarray(exact[f"{kind}_ppl"], dtype=float)
        y = np.asarray(estimate[f"{kind}_ppl"], dtype=float)
        name, color = KIND_STYLE[kind]
        rho = spearman.get(f"{kind}_ppl", float("nan"))
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", marker_color=color, name=f"{name} (rho {rho:.2f})",
                                 text=[str(i) for i in range(len(x))],
                                 hovertemplate=f"{name} %{{text}}<br>exact %{{x:.3f}}<br>estimate %{{y:.3f}}<extra></extra>"))
        finite = np.concatenate([x, y])
        finite = finite[np.isfinite(finite) & (finite > 0)]
        if finite.size:
            lo, hi = min(lo, finite.min()), max(hi, finite.max())
    if hi > 0:
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot", color="gray"),
                                 name="estimate = exact", hoverinfo="skip"))
    axis = scales.log_axis(*exact.values(), *(estimate[f"{k}_ppl"] for k in ("block", "attn", "mlp")))
    fig.update_layout(title=f"First-order estimate vs exact sweep (Spearman over all 3L: "
                            f"{spearman.get('all', float('nan')):.2f})",
                      height=420, xaxis=axis | {"title": "exact perplexity"},
                      yaxis=axis | {"title": "estimated perplexity"}, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def predictor_scatter(panels: list[dict], full_ppl: float) -> go.Figure:
    """One panel per predictor: redundancy score (x) against measured perplexity ratio
    ppl_removed / ppl_full (y, log). Each panel dict: kind, label, score, ppl, rho.
    Only points with room around them carry their layer as text (outliers first); every
    point names its layer on hover."""
    titles = [f"{p['label']} vs {KIND_STYLE[p['kind']][0].lower()} removal: Spearman {p['rho']:.2f}"
              for p in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.07)
    for col, p in enumerate(panels, start=1):
        name, color = KIND_STYLE[p["kind"]]
        score = np.asarray(p["score"], dtype=float)
        ratio = np.asarray(p["ppl"], dtype=float) / full_ppl
        labelled = set(scales.spaced_labels(score, ratio, scales.by_extremeness(np.log10(ratio)), min_dist=0.08,
                                            log_y=True))
        fig.add_trace(go.Scatter(x=score, y=ratio, mode="markers+text", customdata=np.arange(len(ratio)),
                                 text=[str(i) if i in labelled else "" for i in range(len(ratio))],
                                 textposition="top center", marker_color=color, showlegend=False,
                                 hovertemplate=f"{name} %{{customdata}}<br>score %{{x:.4f}}<br>"
                                               f"ppl / full %{{y:.3f}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title=p["label"], row=1, col=col)
        fig.update_yaxes(**scales.log_axis(ratio, pad=0.1), row=1, col=col,
                         title="ppl removed / ppl full" if col == 1 else None)
    fig.update_layout(height=420, margin=dict(l=40, r=20, t=60, b=40))
    fig.update_annotations(font_size=12)
    return fig
