"""Figures for hidden-state similarity: the layer x layer heatmap (with a removable block
marked), Block Influence bars, the best contiguous block per size n, and the 2-D PCA map
of the layers' mean representations coloured by redundancy group.

Each function takes plain arrays and returns a plotly figure; nothing here computes
statistics or knows about Streamlit.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analysis.reporting.figures import scales

COLORSCALES = {"cosine": "Viridis", "angular": "Viridis_r", "cka": "Viridis"}


def layer_heatmap(matrix: np.ndarray, measure: str, title: str, block: tuple[int, int] | None = None) -> go.Figure:
    """Heatmap over h_0..h_L. block=(start, n) outlines h_start..h_{start+n} (removing
    blocks start..start+n-1 joins h_start to h_{start+n}) and rings that pair's cell."""
    m = np.asarray(matrix, dtype=float)
    k = m.shape[0]
    idx = list(range(k))
    fig = go.Figure(go.Heatmap(
        z=m, x=idx, y=idx, colorscale=COLORSCALES.get(measure, "Viridis"), colorbar=dict(title=measure),
        hovertemplate="h_%{y} vs h_%{x}<br>" + measure + " %{z:.4f}<extra></extra>",
    ))
    if block is not None:
        start, n = block
        end = start + n
        fig.add_shape(type="rect", x0=start - 0.5, x1=end + 0.5, y0=start - 0.5, y1=end + 0.5,
                      line=dict(color="red", width=2))
        for x, y in ((end, start), (start, end)):
            fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5,
                          line=dict(color="white", width=2))
    fig.update_layout(title=title, height=560, margin=dict(l=40, r=20, t=50, b=40))
    fig.update_xaxes(title="layer j (h_j)", constrain="domain")
    fig.update_yaxes(title="layer i (h_i)", autorange="reversed", scaleanchor="x", constrain="domain")
    return fig


def block_influence_bars(block_influence: np.ndarray, highlight: tuple[int, int] | None = None,
                         scale: str = "clip") -> go.Figure:
    """Bars of BI_l = 1 - mean cos(h_l, h_{l+1}); blocks in `highlight` (start, n) drawn red.
    `scale` (scales.BAR_SCALES): "clip" caps the axis above the bulk of the bars and prints
    the value of each bar that runs past it, "log" uses a log axis, "linear" shows all."""
    bi = np.asarray(block_influence, dtype=float)
    colors = ["#636efa"] * len(bi)
    if highlight is not None:
        for l in range(highlight[0], min(len(bi), highlight[0] + highlight[1])):
            colors[l] = "#ef553b"
    x = np.arange(len(bi))
    fig = go.Figure(go.Bar(x=x, y=bi, marker_color=colors, hovertemplate="block %{x}<br>BI %{y:.4f}<extra></extra>"))
    axis = scales.bar_axis(bi, scale)
    if axis["type"] == "linear":
        for note in scales.clipped_notes(x, bi, axis["range"][1]):
            fig.add_annotation(**note)
    fig.update_layout(title="Block Influence per block (lower = more redundant)", height=320,
                      xaxis_title="block l", yaxis=axis | {"title": "BI = 1 - mean cos(h_l, h_l+1)"},
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def best_block_curve(blocks: list[dict], chosen_n: int | None = None) -> go.Figure:
    """Angular distance of the best contiguous block of n layers, for n = 1..L-1."""
    n = [b["n"] for b in blocks]
    dist = [b["distance"] for b in blocks]
    starts = [b["start"] for b in blocks]
    fig = go.Figure(go.Scatter(
        x=n, y=dist, mode="lines+markers", customdata=starts,
        hovertemplate="n = %{x}<br>best start %{customdata}<br>distance %{y:.4f}<extra></extra>",
    ))
    if chosen_n is not None and 1 <= chosen_n <= len(blocks):
        b = blocks[chosen_n - 1]
        fig.add_trace(go.Scatter(x=[b["n"]], y=[b["distance"]], mode="markers", showlegend=False,
                                 marker=dict(color="red", size=12), hoverinfo="skip"))
    fig.update_layout(title="Best block of n layers: min over l of arccos(cos(h_l, h_l+n)) / pi, last token",
                      height=320, xaxis_title="block size n", yaxis_title="angular distance",
                      showlegend=False, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def layer_map(coords: np.ndarray, explained: np.ndarray, groups: np.ndarray) -> go.Figure:
    """PCA map of h_0..h_L (one point per layer, joined in depth order), coloured by group.
    Layers whose label would overlap another's carry it on hover only; the first and last
    layer and each group's ends are labelled first."""
    xy = np.asarray(coords, dtype=float)
    groups = np.asarray(groups, dtype=int)
    ends = [int(i) for g in np.unique(groups) for i in (np.flatnonzero(groups == g)[[0, -1]])]
    priority = list(dict.fromkeys([0, len(xy) - 1] + ends + list(range(len(xy)))))
    labelled = set(scales.spaced_labels(xy[:, 0], xy[:, 1], priority, min_dist=0.05))
    fig = go.Figure(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines", line=dict(color="lightgray"),
                               hoverinfo="skip", showlegend=False))
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        fig.add_trace(go.Scatter(
            x=xy[members, 0], y=xy[members, 1], mode="markers+text", customdata=members,
            text=[str(i) if i in labelled else "" for i in members], textposition="top center",
            name=f"group {g}: h_{members.min()}..h_{members.max()}"
            if len(members) == members.max() - members.min() + 1 else f"group {g}",
            marker=dict(size=10), hovertemplate="h_%{customdata}<extra></extra>",
        ))
    ev = np.asarray(explained, dtype=float)
    fig.update_layout(title="Mean representation of each layer, PCA to 2-D (hover a point for its layer)",
                      height=460, xaxis_title=f"PC1 ({ev[0]:.0%} of variance)",
                      yaxis_title=f"PC2 ({ev[1]:.0%} of variance)", margin=dict(l=40, r=20, t=50, b=40))
    return fig
