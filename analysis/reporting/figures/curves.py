"""Figures for the pruning-curves page: perplexity against the fraction of parameters
removed (log scale fitted to the useful methods, points above it clipped with their
value written, a second axis counting removed components, the full model's line), and
the per-window distribution of the dynamic-depth oracle.

Functions take plain lists (a Curve's fields) and return plotly figures. Every point of
a method's line carries customdata [method, k], so a click can be mapped back to the
removal it stands for.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analysis.core.kinds import Kind
from analysis.reporting.figures import scales

COLOURS = {"lowest_block_influence": "#1a73e8", "lowest_redundancy": "#1a73e8", "best_contiguous_block": "#e37400",
           "reverse_order": "#9334e6", "cheapest_single": "#188038", "iterative_greedy": "#d93025",
           "random": "#5f6368"}
RANGE_EXCLUDED = ("reverse_order",)  # lines that do not set the y range (far above the rest); clipped
UNITS = {"blocks": "blocks removed", "attn": "attention sublayers removed", "mlp": "MLP sublayers removed"}


def _pct(values) -> list:
    return [100.0 * float(v) for v in values]


def pruning_curves(curves: list, full_ppl: float, kind: Kind, show_calibration: bool = False,
                   full_calibration: float | None = None) -> go.Figure:
    """One line per method: x = % of parameters removed, y = evaluation perplexity
    (log axis); random: its lower-median line and 10-90% band. Top axis: k. Dotted lines:
    the same methods' calibration perplexity (when asked and measured). Long because the
    lines, the random band, the clipped outliers and both x axes share one y range.

    The y range spans the useful methods (every line but those in RANGE_EXCLUDED, and
    not the random band) and the full model; a point above it is drawn at the top edge as
    a triangle with its value written there (hover: the value too), as clipped bars are."""
    fig = go.Figure()
    calibration = lambda c: show_calibration and c.get("calib_ppl") and all(v is not None for v in c["calib_ppl"])
    full_lines = [full_ppl] + ([full_calibration] if show_calibration and full_calibration is not None else [])
    axis = scales.log_axis(full_lines, *(c["eval_ppl"] for c in curves if c["method"] not in RANGE_EXCLUDED),
                           *(c["calib_ppl"] for c in curves if c["method"] not in RANGE_EXCLUDED and calibration(c)))
    top = 10 ** axis["range"][1]
    ticks, notes = None, []
    step = np.diff(sorted({round(v, 9) for c in curves for v in _pct(c["param_fraction"])}))
    shift = 0.12 * (float(step.min()) if step.size else 1.0)  # clipped labels of methods sharing an x side by side
    for i, curve in enumerate(curves):
        x = _pct(curve["param_fraction"])
        colour = COLOURS.get(curve["method"], "#202124")
        y = np.asarray(curve["eval_ppl"], dtype=float)
        data = [[curve["method"], k, ", ".join(map(str, r)), float(v)]
                for k, r, v in zip(curve["k"], curve["removed"], y)]
        if curve.get("band_low") is not None:
            fig.add_trace(go.Scatter(x=x + x[::-1], y=scales.clipped(curve["band_high"], top)
                                     + scales.clipped(curve["band_low"], top)[::-1],
                                     fill="toself", fillcolor="rgba(95,99,104,0.15)", line=dict(width=0),
                                     hoverinfo="skip", name="random 10-90%", legendgroup="random"))
        over = ~np.isfinite(y) | (y > top)
        fig.add_trace(go.Scatter(
            x=x, y=scales.clipped(y, top), mode="lines+markers", name=curve["method"], customdata=data,
            line=dict(color=colour, dash="dash" if curve["method"] == "random" else "solid"),
            marker=dict(size=[9 if o else 6 for o in over], symbol=["triangle-up" if o else "circle" for o in over]),
            legendgroup=curve["method"], cliponaxis=False,
            hovertemplate="%{customdata[0]}, k = %{customdata[1]}<br>%{x:.1f}% of parameters<br>"
                          "evaluation perplexity %{customdata[3]:.4g}<br>removed: %{customdata[2]}<extra></extra>"))
        for note in scales.clipped_notes(x, y, top, (i - len(curves) / 2) * shift, log_y=True):
            notes.append(note | {"font": {"size": 10, "color": colour}})
        if calibration(curve):
            fig.add_trace(go.Scatter(x=x, y=scales.clipped(curve["calib_ppl"], top), mode="lines",
                                     name=f"{curve['method']} (calibration)",
                                     line=dict(color=colour, dash="dot", width=1), legendgroup=curve["method"],
                                     customdata=curve["calib_ppl"],
                                     hovertemplate="calibration perplexity %{customdata:.4g}<extra></extra>"))
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
                      xaxis=dict(title="parameters removed (%)"), annotations=list(fig.layout.annotations) + notes,
                      yaxis=axis | dict(title="evaluation perplexity (log scale; ▲ = above the axis, value written)"),
                      clickmode="event+select")
    return fig


def oracle_fractions(skipping: list | None, early_exit: list | None, n_layers: int) -> go.Figure:
    """Per evaluation window: the fraction of blocks the oracle runs, for both families
    (a family without a solution is None). Bars side by side at every possible number of
    blocks (the x axis spans 0..L blocks, each tick labelled), labelled with their count
    of windows, and each family's mean as a dashed line."""
    fig = go.Figure()
    x = (100.0 * np.arange(n_layers + 1) / n_layers).tolist()
    most = 1
    for name, values, colour in (("layer skipping", skipping, "#d93025"), ("early exit", early_exit, "#1a73e8")):
        if values is None or len(values) == 0:
            continue
        fractions = np.asarray(values, dtype=float)
        counts = np.bincount(np.rint(fractions * n_layers).astype(int), minlength=n_layers + 1)
        most = max(most, int(counts.max()))
        fig.add_trace(go.Bar(x=x, y=counts.tolist(), name=name, marker_color=colour, opacity=0.85,
                             text=[str(c) if c else "" for c in counts], textposition="outside", cliponaxis=False,
                             hovertemplate="%{x:.0f}% of blocks: %{y} windows<extra></extra>"))
        mean = 100.0 * float(fractions.mean())
        fig.add_vline(x=mean, line=dict(color=colour, dash="dash", width=1.5),
                      annotation_text=f"{name} mean {mean:.1f}%", annotation_position="top left",
                      annotation_font_color=colour)
    step = max(1, n_layers // 12)
    fig.update_layout(barmode="group", bargap=0.15, height=320, margin=dict(l=10, r=10, t=50, b=40),
                      xaxis=dict(title=f"blocks run by the oracle, of {n_layers} (% of blocks)",
                                 range=[-100.0 / n_layers, 100.0 + 100.0 / n_layers], tickvals=x[::step],
                                 ticktext=[f"{d} ({v:.0f}%)" for d, v in zip(range(n_layers + 1), x)][::step]),
                      yaxis=dict(title="evaluation windows", range=[0, most * 1.25],
                                 dtick=1 if most <= 10 else None, rangemode="tozero"),
                      legend=dict(orientation="h", y=1.18))
    return fig


def task_curves(points: dict, full_ppl: float, full_acc: dict, task: str, kind: str) -> go.Figure:
    """Evaluation perplexity (top, log) and `task`'s accuracy (bottom) of each method at the
    same k, on one shared x axis, so the k where they part is visible; dashed: the full model."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Evaluation perplexity", f"{task}: accuracy (lm-eval, ±1 stderr)"))
    for method, pts in points.items():
        color = COLOURS.get(method, "#202124")
        ks = [p["k"] for p in pts]
        fig.add_trace(go.Scatter(x=ks, y=[p["eval_ppl"] for p in pts], name=method, mode="lines+markers",
                                 line=dict(color=color), legendgroup=method), row=1, col=1)
        acc = [p["tasks"][task] for p in pts]
        fig.add_trace(go.Scatter(x=ks, y=[a["value"] for a in acc], name=method, mode="lines+markers",
                                 line=dict(color=color), legendgroup=method, showlegend=False,
                                 error_y=dict(type="data", array=[a["stderr"] or 0 for a in acc])), row=2, col=1)
    fig.add_hline(y=full_ppl, line_dash="dash", row=1, col=1, annotation_text="full")
    fig.add_hline(y=full_acc[task]["value"], line_dash="dash", row=2, col=1, annotation_text="full")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text=f"{kind} removed (k)", row=2, col=1)
    fig.update_layout(height=560, margin=dict(t=40))
    return fig

