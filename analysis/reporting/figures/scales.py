"""Axis and label helpers the figures share, so a chart reads right whatever the data.

- `log_axis`: a log axis whose range comes from the finite data (never from an
  annotation or from plotly's autorange) and whose ticks are labelled numbers at
  decades (1-2-5 steps when the data span less than a few decades); plotly's default
  small "2", "5" minor labels read like data points.
- `clip_cap` / `BAR_SCALES`: bars where one layer (typically layer 0) is many times
  larger than the rest flatten everything else; a clipped scale caps the axis above the
  bulk of the values and names the value of each bar that runs past it (`clipped`,
  `clipped_notes`: also for points on a log axis, e.g. the pruning curves).
- `spaced_labels`: which points of a scatter get a text label, so that no two labels
  overlap; the others keep their label on hover.
"""
from __future__ import annotations

import math

import numpy as np

BAR_SCALES = {"clip": "clip outliers", "linear": "linear", "log": "log"}
BAR_SCALE_HELP = ("Layer 0 usually dwarfs the others. 'clip outliers' cuts the axis above the bulk of the bars "
                  "and prints the value of each bar that runs past it; 'log' shows every bar on a log axis.")


def _tick_text(value: float) -> str:
    if value >= 1e7:
        return f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values inside [lo, hi] (both > 0): every decade, or 1-2-5 (then 1..9) steps
    when fewer than three decades fall inside."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for steps in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in steps if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks


def log_axis(*values, pad: float = 0.06) -> dict:
    """Layout of a log axis for the finite positive entries of `values`: range (in log10
    units, as plotly wants) padded by `pad` of the span, labelled ticks, no minor labels."""
    data = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values])
    data = data[np.isfinite(data) & (data > 0)]
    if data.size == 0:
        return {"type": "log"}
    lo, hi = math.log10(data.min()), math.log10(data.max())
    margin = max(pad * (hi - lo), 0.05)
    lo, hi = lo - margin, hi + margin
    axis = {"type": "log", "range": [lo, hi], "minor": {"showgrid": False, "ticks": ""}}
    ticks = log_ticks(10 ** lo, 10 ** hi)
    if len(ticks) >= 2:  # else (a very narrow range) plotly's own ticks
        axis |= {"tickmode": "array", "tickvals": ticks, "ticktext": [_tick_text(t) for t in ticks]}
    return axis


def clip_cap(values, ratio: float = 3.0) -> float | None:
    """An axis top for bars when a few values dwarf the rest: 15% above the largest value
    that is at most `ratio` x the 90th percentile. None when nothing needs clipping."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 3:
        return None
    bulk = v[v <= ratio * max(np.quantile(v, 0.9), 1e-12)]
    if bulk.size == 0 or bulk.size == v.size:
        return None
    return float(bulk.max() * 1.15)


def bar_axis(values, scale: str) -> dict:
    """y-axis layout for bars of `values` at `scale` (a key of BAR_SCALES)."""
    if scale == "log":
        return log_axis(values, pad=0.1)
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    top = clip_cap(v) if scale == "clip" else None
    if top is None:
        top = 1.05 * float(v.max()) if v.size and v.max() > 0 else 1.0
    return {"type": "linear", "range": [min(0.0, float(v.min())) if v.size else 0.0, top]}


def clipped_notes(x, values, top: float, xshift: float = 0.0, log_y: bool = False) -> list[dict]:
    """Annotations (plotly dicts, data coordinates) naming each bar (or point) that runs
    past `top`, written upwards along the top so neighbouring clipped values do not
    collide. `log_y`: the axis is logarithmic (plotly places annotations in log10 units)."""
    y = math.log10(top) if log_y else top
    return [{"x": float(xi) + xshift, "y": y, "text": f"{float(v):.3g} ↑", "showarrow": False, "textangle": -90,
             "yanchor": "top", "font": {"size": 10}, "bgcolor": "rgba(255,255,255,0.8)"}
            for xi, v in zip(x, np.asarray(values, dtype=float)) if np.isfinite(v) and v > top]


def clipped(values, top: float) -> list:
    """`values` with every entry above `top` (or infinite) drawn at `top`."""
    return [top if not np.isfinite(v) or v > top else float(v) for v in np.asarray(values, dtype=float)]


def spaced_labels(x, y, priority=None, min_dist: float = 0.05, log_y: bool = False) -> list[int]:
    """Indices of points to label so that no two labelled points are closer than
    `min_dist` of the axes' spans (y in log10 when `log_y`). Points are taken in
    `priority` order (default: index order), so the important ones win."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if log_y:
        y = np.log10(np.where(y > 0, y, np.nan))
    ok = np.isfinite(x) & np.isfinite(y)
    span_x = np.ptp(x[ok]) if ok.any() else 1.0
    span_y = np.ptp(y[ok]) if ok.any() else 1.0
    nx, ny = x / (span_x or 1.0), y / (span_y or 1.0)
    chosen: list[int] = []
    for i in (range(len(x)) if priority is None else priority):
        if ok[i] and all(math.hypot(nx[i] - nx[j], ny[i] - ny[j]) >= min_dist for j in chosen):
            chosen.append(int(i))
    return sorted(chosen)


def by_extremeness(values) -> list[int]:
    """Indices ordered from the value farthest from the median to the nearest (labels go
    to the outliers first)."""
    v = np.asarray(values, dtype=float)
    distance = np.abs(v - np.nanmedian(v))
    return [int(i) for i in np.argsort(-np.nan_to_num(distance, nan=-1.0), kind="stable")]
