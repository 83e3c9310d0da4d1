"""Plotly figures for MLP activation sparsity: arrays in, figure out."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analysis.reporting.figures.lens import escape_token

RULE_STYLE = {"abs": "#1f77b4", "rel": "#ff7f0e", "exact": "#2ca02c"}


def sparsity_by_layer(near: np.ndarray, relative: np.ndarray, exact: np.ndarray, eps: float, p: float) -> go.Figure:
    """Per-layer fraction of near-zero MLP activations under the three rules, each with a
    dotted line at its model average."""
    x = np.arange(len(near))
    fig = go.Figure()
    for key, y, name in (("abs", near, f"|a| ≤ {eps:g}"), ("rel", relative, f"|a| ≤ {p:g}·max|a| (per token)"),
                         ("exact", exact, "a = 0 exactly")):
        y = np.asarray(y, dtype=float)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line={"color": RULE_STYLE[key]}))
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[y.mean()] * 2, mode="lines", showlegend=False,
                                 line={"color": RULE_STYLE[key], "dash": "dot"},
                                 hovertemplate=f"model average {y.mean():.4f}<extra>{name}</extra>"))
    fig.update_layout(xaxis_title="layer", yaxis_title="fraction of MLP activations near zero",
                      yaxis_range=[0, 1], height=400, legend={"orientation": "h", "y": 1.12})
    return fig


def dead_neurons(counts: np.ndarray, d_mlp: int, eps: float) -> go.Figure:
    """Dead neurons per layer (|a| <= eps at every position)."""
    counts = np.asarray(counts)
    fig = go.Figure(go.Bar(x=np.arange(len(counts)), y=counts,
                           hovertemplate="layer %{x}: %{y} dead of " + str(d_mlp) + "<extra></extra>"))
    fig.update_layout(xaxis_title="layer", yaxis_title=f"neurons with |a| ≤ {eps:g} everywhere", height=300,
                      yaxis_rangemode="nonnegative")
    if counts.sum() == 0:
        fig.add_annotation(text=f"no dead neurons at eps {eps:g}", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font={"size": 16})
    return fig


def firing_histogram(frequency: np.ndarray, layer: int, eps: float, bins: int = 50) -> go.Figure:
    """Histogram over the neurons of one layer of their firing frequency (share of positions with |a| > eps)."""
    counts, edges = np.histogram(np.asarray(frequency, dtype=float), bins=bins, range=(0.0, 1.0))
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                           hovertemplate="firing %{x:.2f}: %{y} neurons<extra></extra>"))
    fig.update_layout(xaxis_title=f"firing frequency in layer {layer} (share of positions with |a| > {eps:g})",
                      yaxis_title="neurons", height=320, bargap=0)
    return fig


def token_density(density: np.ndarray, tokens: list, positions: np.ndarray, eps: float) -> go.Figure:
    """Heatmap tokens (rows) x layers (columns) of the share of MLP activations with |a| > eps."""
    T, L = density.shape
    labels = [f"{positions[i]}: {escape_token(tokens[i], 16)}" for i in range(T)]
    fig = go.Figure(go.Heatmap(z=density, x=np.arange(L), y=np.arange(T), customdata=np.array(labels)[:, None].repeat(L, 1),
                               colorscale="Viridis", colorbar={"title": "density"},
                               hovertemplate="%{customdata} · layer %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title="layer", yaxis={"tickmode": "array", "tickvals": np.arange(T), "ticktext": labels,
                                                  "autorange": "reversed", "tickfont": {"size": 10}},
                      title=f"share of |a| > {eps:g} per token", height=max(380, 16 * T + 140))
    return fig
