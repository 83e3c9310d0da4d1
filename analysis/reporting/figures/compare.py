"""Figures for comparing two runs: the difference of two layer x layer matrices on the
residual positions both sides have, and per-layer series of both sides overlaid on one
aligned axis (one panel per quantity). Arrays in, figure out."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SIDE_COLOURS = ("#1f77b4", "#ff7f0e")
DASHES = ("solid", "dash", "dot", "dashdot")


def difference_heatmap(diff: np.ndarray, positions: list[int], measure: str, axis_label: str) -> go.Figure:
    """B - A per pair of aligned residuals h_i, h_j (diverging colours centred on 0)."""
    d = np.asarray(diff, dtype=float)
    bound = float(np.nanmax(np.abs(d))) if d.size and np.isfinite(d).any() else 1.0
    ticks = [str(p) for p in positions]
    fig = go.Figure(go.Heatmap(
        z=d, x=ticks, y=ticks, zmid=0, zmin=-bound, zmax=bound, colorscale="RdBu_r",
        colorbar=dict(title="B - A"),
        hovertemplate="h_%{y} vs h_%{x}<br>" + measure + " B - A %{z:+.4f}<extra></extra>"))
    fig.update_layout(title=f"{measure}: B - A", height=560, margin=dict(l=40, r=20, t=50, b=40))
    fig.update_xaxes(title=f"h_j ({axis_label})", type="category", constrain="domain")
    fig.update_yaxes(title=f"h_i ({axis_label})", type="category", autorange="reversed", scaleanchor="x",
                     constrain="domain")
    return fig


def compact(fig: go.Figure, height: int = 430) -> go.Figure:
    """A heatmap made to fit a third of the page: shorter, thin colour bar, small margins."""
    fig.update_traces(colorbar=dict(thickness=10))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def with_gaps(x: list, y: list) -> tuple[list, list]:
    """Break a line where x skips positions (a removed block), so no segment bridges them."""
    xs, ys = [], []
    for i, (a, b) in enumerate(zip(x, y)):
        if i and a - x[i - 1] > 1:
            xs.append(None)
            ys.append(None)
        xs.append(a)
        ys.append(b)
    return xs, ys


def overlay(panels: list[tuple[str, list[dict]]], axis_label: str, log_panels: tuple[str, ...] = ()) -> go.Figure:
    """One row per panel (title, series); each series {name, side, x, y} is a line, the
    colour says the side and the dash the quantity within the panel."""
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06 if len(panels) > 1 else 0,
                        subplot_titles=[title for title, _ in panels])
    sides = list(dict.fromkeys(s["side"] for _, series in panels for s in series))
    shown = set()
    for row, (title, series) in enumerate(panels, start=1):
        names = list(dict.fromkeys(s["name"] for s in series))
        for s in series:
            colour = SIDE_COLOURS[sides.index(s["side"]) % len(SIDE_COLOURS)]
            dash = DASHES[names.index(s["name"]) % len(DASHES)]
            label = s["side"] if len(names) == 1 else f"{s['side']}: {s['name']}"
            x, y = with_gaps(s["x"], s["y"])
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", connectgaps=False, name=label, legendgroup=label,
                                     showlegend=label not in shown, line=dict(color=colour, dash=dash), marker=dict(size=5),
                                     hovertemplate=f"{label}<br>layer %{{x}}: %{{y:.4g}}<extra></extra>"),
                          row=row, col=1)
            shown.add(label)
        if title in log_panels:
            fig.update_yaxes(type="log", row=row, col=1)
    fig.update_xaxes(title=axis_label, row=len(panels), col=1)
    fig.update_layout(height=max(320, 230 * len(panels) + 80), margin=dict(l=40, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=-0.08 if len(panels) > 2 else -0.25))
    return fig
