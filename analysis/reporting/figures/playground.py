"""Figures for the layer playground: which components are removed, and the per-token
loss difference (pruned minus full) along one corpus window.

Functions take plain arrays and strings and return plotly figures. Token strings are
HTML-escaped before plotly sees them (plotly reads tags such as <b> in text), so they
always show as the literal text.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

KIND_LABELS = ("block", "attention", "MLP")
MAX_TOKEN_LABELS = 64


def removal_map(blocks, attn, mlp, n_layers: int) -> go.Figure:
    """A 3 x L grid: dark = removed (a removed block greys out its two sublayers)."""
    grid = np.zeros((3, n_layers))
    blocks = set(blocks)
    for row, removed in enumerate((blocks, set(attn), set(mlp))):
        for l in range(n_layers):
            if l in removed:
                grid[row, l] = 2
            elif row > 0 and l in blocks:
                grid[row, l] = 1
    text = [["removed" if v == 2 else "in a removed block" if v == 1 else "kept" for v in row] for row in grid]
    fig = go.Figure(go.Heatmap(
        z=grid, x=list(range(n_layers)), y=list(KIND_LABELS), zmin=0, zmax=2, showscale=False, xgap=2, ygap=2,
        colorscale=[[0, "#e8f0fe"], [0.5, "#9aa0a6"], [1, "#d93025"]], customdata=text,
        hovertemplate="%{y} %{x}: %{customdata}<extra></extra>"))
    fig.update_layout(height=150, margin=dict(l=10, r=10, t=10, b=30), xaxis=dict(title="layer", dtick=1),
                      yaxis=dict(autorange="reversed"))
    return fig


def loss_strip(tokens: list[str], full_nll, pruned_nll) -> go.Figure:
    """Per-token loss difference (pruned minus full, nats) along one window.

    tokens[i] is the token predicted at position i (so len(tokens) == len(full_nll)).
    Red = the pruned model is worse on that token, blue = better.
    """
    full = np.asarray(full_nll, dtype=float)
    pruned = np.asarray(pruned_nll, dtype=float)
    diff = pruned - full
    safe = [html.escape(t) for t in tokens]
    bound = float(np.abs(diff).max()) or 1.0
    heat = go.Heatmap(
        z=[diff], x=list(range(len(diff))), y=["pruned - full"], zmid=0, zmin=-bound, zmax=bound,
        colorscale="RdBu_r", colorbar=dict(title="nats", thickness=12), xgap=1,
        customdata=np.stack([np.array(safe, dtype=object), full, pruned], axis=-1)[None],
        hovertemplate=("position %{x}: %{customdata[0]}<br>full %{customdata[1]:.3f}, "
                       "pruned %{customdata[2]:.3f}<br>difference %{z:+.3f} nats<extra></extra>"))
    if len(tokens) <= MAX_TOKEN_LABELS:
        heat.update(text=[safe], texttemplate="%{text}", textfont=dict(size=10))
    fig = go.Figure(heat)
    fig.update_layout(height=170, margin=dict(l=10, r=10, t=30, b=30),
                      title=dict(text="Per-token loss, pruned minus full (hover for the token)", font=dict(size=13)),
                      xaxis=dict(title="position of the predicted token in the window"))
    return fig
