"""Figures for healing: the training loss per step, and the perplexity of the full,
pruned and healed models on the calibration and the held-out evaluation windows."""
from __future__ import annotations

import plotly.graph_objects as go

MODELS = ("full", "pruned", "healed")
SPLITS = (("calibration", "calibration (trained on)", "#9aa0a6"), ("evaluation", "evaluation (held out)", "#1a73e8"))


def loss_curve(losses: list, steps: int | None = None) -> go.Figure:
    """Training loss (mean next-token cross-entropy of each batch, nats) per step."""
    fig = go.Figure(go.Scatter(x=list(range(1, len(losses) + 1)), y=list(losses), mode="lines+markers",
                               marker=dict(size=4), hovertemplate="step %{x}: loss %{y:.4f}<extra></extra>"))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=40), title="Training loss per step",
                      xaxis=dict(title="step", range=[0.5, (steps or len(losses) or 1) + 0.5]),
                      yaxis=dict(title="cross-entropy (nats)"))
    return fig


def perplexity_bars(perplexity: dict) -> go.Figure:
    """Grouped bars: perplexity of full, pruned and healed on each split ({model: {split: ppl}})."""
    fig = go.Figure()
    for split, label, color in SPLITS:
        values = [perplexity[m][split] for m in MODELS]
        fig.add_bar(name=label, x=list(MODELS), y=values, marker_color=color, text=[f"{v:.2f}" for v in values],
                    textposition="outside", cliponaxis=False,
                    hovertemplate=f"%{{x}}, {label}: %{{y:.3f}}<extra></extra>")
    top = max(perplexity[m][s] for m in MODELS for s, _, _ in SPLITS)
    fig.update_layout(barmode="group", height=320, margin=dict(l=10, r=10, t=40, b=40),
                      title="Perplexity (lower is better)", yaxis=dict(title="perplexity", range=[0, 1.15 * top]),
                      legend=dict(orientation="h", y=-0.2))
    return fig
