"""Figure properties a reader relies on: finite, data-driven axis ranges (no 1e21 from a
label on a log axis), labels inside the plot, labelled log ticks without minor labels,
a clipped scale that keeps small bars readable, and scatter labels that do not overlap."""
import math

import numpy as np
import pytest

from analysis.measure.early_exit import ExitCurve
from analysis.reporting.figures import lens as lens_figs
from analysis.reporting.figures import scales
from analysis.reporting.figures import similarity as sim_figs
from analysis.reporting.figures import sublayers as sub_figs

L = 30
RNG = np.random.default_rng(0)
FULL = 24.505
# Shaped like the default model's sweep: removing block 0 costs ~4000x, the rest little.
BLOCK = np.r_[9.6e4, 640, 110, FULL * (1 + RNG.uniform(0.02, 0.4, L - 3))]
ATTN = np.r_[130, 600, FULL * (1 + RNG.uniform(0.0, 0.1, L - 2))]
MLP = np.r_[9.3e4, 44, FULL * (1 + RNG.uniform(0.0, 0.5, L - 2))]
BI = np.r_[0.988, 0.18, RNG.uniform(0.02, 0.06, L - 3), 0.38]


def is_decade_or_125(value: float) -> bool:
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return any(abs(mantissa - m) < 1e-6 for m in range(1, 10))


def assert_clean_log_axis(axis, lo: float, hi: float) -> None:
    """A log axis covering [lo, hi] with a finite range not far beyond it, every tick labelled."""
    assert axis.type == "log"
    r0, r1 = axis.range
    assert math.isfinite(r0) and math.isfinite(r1)
    assert r0 <= math.log10(lo) and r1 >= math.log10(hi)
    assert r1 - math.log10(hi) < 0.5 and math.log10(lo) - r0 < 0.5  # no decades of empty space
    assert axis.tickmode == "array" and len(axis.tickvals) == len(axis.ticktext) >= 2
    assert all(is_decade_or_125(v) and 10 ** r0 <= v <= 10 ** r1 for v in axis.tickvals)
    assert axis.minor.ticks == "" and not axis.minor.showgrid  # no unlabelled minor marks that read like data


def test_removal_costs_axis_follows_the_data_and_labels_the_full_model():
    fig = sub_figs.removal_costs(BLOCK, ATTN, MLP, FULL)
    assert_clean_log_axis(fig.layout.yaxis, min(BLOCK.min(), ATTN.min(), MLP.min(), FULL), BLOCK.max())
    assert fig.layout.yaxis.range[1] < 6  # the issue: the label on the log axis stretched it to 1e21
    (label,) = [a for a in fig.layout.annotations if a.text.startswith("full model")]
    assert label.yref == "y" and label.y == pytest.approx(math.log10(FULL))  # log axis: annotation y in log10
    r0, r1 = fig.layout.yaxis.range
    assert r0 < label.y < r1 and label.xref == "paper" and label.x == 1 and label.xanchor == "right"
    assert label.yanchor == "top" and r0 < math.log10(FULL / 1.6)  # room below the line for the label


def test_estimate_vs_exact_shares_one_clean_log_range():
    exact = {"block_ppl": BLOCK, "attn_ppl": ATTN, "mlp_ppl": MLP}
    estimate = {"block_ppl": BLOCK * 0.5, "attn_ppl": ATTN * 0.9, "mlp_ppl": MLP * 0.2}
    fig = sub_figs.estimate_vs_exact(exact, estimate, {"block_ppl": 0.4, "attn_ppl": 0.5, "mlp_ppl": 0.3, "all": 0.3})
    assert_clean_log_axis(fig.layout.xaxis, (MLP * 0.2).min(), BLOCK.max())
    assert fig.layout.xaxis.range == fig.layout.yaxis.range


def test_log_ticks_are_decades_or_one_two_five():
    assert scales.log_ticks(1, 1e5) == [1, 10, 100, 1000, 1e4, 1e5]
    assert scales.log_ticks(0.9, 30) == [1, 2, 5, 10, 20]
    assert scales.log_ticks(1.1, 4) == [2, 3, 4]


@pytest.mark.parametrize("scale", list(scales.BAR_SCALES))
def test_block_influence_scales(scale):
    fig = sim_figs.block_influence_bars(BI, (17, 1), scale)
    axis = fig.layout.yaxis
    notes = [a for a in fig.layout.annotations if "↑" in a.text]
    if scale == "clip":
        top = axis.range[1]
        assert top < 0.5 * BI[0] and np.sum(BI <= top) >= L - 3  # block 0 clipped, the bulk no longer flattened
        clipped = np.flatnonzero(BI > top)
        assert [(n.x, n.text) for n in notes] == [(l, f"{BI[l]:.3g} ↑") for l in clipped] and 0 in clipped
        assert all(n.y == top for n in notes)
    elif scale == "log":
        assert_clean_log_axis(axis, BI.min(), BI.max())
        assert not notes
    else:
        assert axis.range[1] >= BI.max() and not notes


def test_sublayer_scores_clip_each_panel_and_name_every_clipped_bar():
    attn = np.r_[0.386, 0.147, RNG.uniform(0.003, 0.03, L - 2)]
    mlp = np.r_[0.949, RNG.uniform(0.01, 0.05, L - 2), 0.367]
    attn_ratio, mlp_ratio = np.r_[1.04, RNG.uniform(0.1, 0.6, L - 1)], np.r_[14.2, RNG.uniform(0.2, 0.9, L - 1)]
    fig = sub_figs.sublayer_scores(attn, mlp, attn_ratio, mlp_ratio, parallel=False, scale="clip")
    for axis_name, yref, a, m in (("yaxis", "y", attn, mlp), ("yaxis2", "y2", attn_ratio, mlp_ratio)):
        top = fig.layout[axis_name].range[1]
        values = np.concatenate([a, m])
        assert top < values.max() and np.sum(values <= top) >= 2 * L - 4
        notes = [n for n in fig.layout.annotations if n.yref == yref and "↑" in n.text]
        assert len(notes) == int(np.sum(values > top))
        for note in notes:  # on the clipped bar: attention left of the layer, MLP right
            layer = round(note.x)
            assert note.y == top and abs(note.x - layer) == pytest.approx(0.2)
            value = (a if note.x < layer else m)[layer]
            assert value > top and note.text == f"{value:.3g} ↑"


def labelled_points(fig):
    points = []
    for trace in fig.data:
        if trace.mode and "text" in trace.mode:
            points += [(x, y) for x, y, t in zip(trace.x, trace.y, trace.text) if t]
    return points


def min_spacing(points, span_x, span_y, log_y=False) -> float:
    def norm(p):
        return p[0] / span_x, (math.log10(p[1]) if log_y else p[1]) / span_y
    pts = [norm(p) for p in points]
    return min(math.dist(a, b) for i, a in enumerate(pts) for b in pts[i + 1:])


def test_layer_map_labels_do_not_overlap():
    cluster = np.c_[RNG.normal(-0.27, 0.01, 20), RNG.normal(0.0, 0.01, 20)]
    spread = np.c_[np.linspace(-0.2, 1.05, 9), np.linspace(0.05, 0.35, 9)]
    coords = np.r_[[[0.76, -0.97]], cluster, spread, [[1.05, -0.43]]]  # h_0, 20 close layers, 9 apart, h_30
    groups = np.r_[0, np.ones(29, int), 2]
    fig = sim_figs.layer_map(coords, np.array([0.64, 0.17]), groups)
    points = labelled_points(fig)
    assert 10 <= len(points) < len(coords)  # the crowded layers keep their label on hover only
    span = np.ptp(coords, axis=0)
    assert min_spacing(points, *span) >= 0.05
    texts = {t for trace in fig.data if trace.text for t in trace.text if t}
    assert {"0", "30", "1", "29"} <= texts  # the ends of the depth path and of each group first
    assert sum(len(trace.customdata) for trace in fig.data if trace.customdata is not None) == len(coords)


def test_predictor_scatter_labels_outliers_without_overlap():
    panels = [{"kind": "block", "label": "Block Influence", "score": BI, "ppl": BLOCK, "rho": 0.77}]
    fig = sub_figs.predictor_scatter(panels, FULL)
    points = labelled_points(fig)
    ratio = BLOCK / FULL
    assert 3 <= len(points) < L
    assert min_spacing(points, np.ptp(BI), np.ptp(np.log10(ratio)), log_y=True) >= 0.08
    assert (BI[0], ratio[0]) in points  # the biggest outlier is labelled
    assert_clean_log_axis(fig.layout.yaxis, ratio.min(), ratio.max())


def curve(agreement) -> ExitCurve:
    n = len(agreement)
    return ExitCurve("max_prob", ">=", list(np.linspace(0.1, 0.9, n)), list(np.linspace(0.05, 1.0, n)),
                     list(agreement), list(np.linspace(15, 0, n)), [0] * L)


def test_exit_sweep_target_label_sits_inside_the_plot():
    curves = {"max_prob": curve(np.linspace(0.05, 1.0, 12))}
    point = {"threshold": 0.9, "fraction_blocks": 1.0, "agreement": 1.0, "delta_ce": 0.0}
    fig = lens_figs.exit_sweep(curves, {"max_prob": point}, 0.95)
    (label,) = [a for a in fig.layout.annotations if a.text == "target 95%"]
    y0, y1 = fig.layout.yaxis.range
    assert y0 < 0.95 < y1 and label.y == 0.95 and label.yanchor == "top"  # below the line
    assert label.xanchor == "left" and label.x < 0.2  # at the left, away from the operating point at x = 1


@pytest.mark.parametrize("depths, anchor", [([30, 30, 30, 30], "right"), ([2, 3, 5, 4], "left")])
def test_sequence_oracle_mean_label_points_into_the_plot(depths, anchor):
    fig = lens_figs.per_window_exit_histogram(np.array(depths), L, 10)
    (label,) = fig.layout.annotations
    x0, x1 = fig.layout.xaxis.range
    assert x0 <= np.mean(depths) <= x1 and label.xanchor == anchor  # the text grows towards the middle
    assert label.yref == "y domain" and label.y <= 1


def test_median_rank_panel_has_labelled_log_ticks():
    rank = np.r_[np.geomspace(300, 2, L - 1), 0]
    metrics = {"ce": np.linspace(18, 3, L), "median_rank_final_top1": rank}
    fig = lens_figs.layer_curves(metrics)
    assert_clean_log_axis(fig.layout.yaxis2, 1, 301)


def test_pruning_curves_fit_the_useful_methods_and_write_clipped_values():
    """Issue 29 (5): reverse order runs to 1e144 at small k; the y axis spans the useful
    methods (and the full model), and each point above it sits at the top edge with its
    value written there and in its hover data."""
    from analysis.reporting.figures import curves as curve_figs

    ks = [1, 2, 3, 4]
    frac = [0.03, 0.06, 0.09, 0.12]
    line = lambda method, ppl, **extra: {"method": method, "k": ks, "removed": [[k] for k in ks],
                                          "param_fraction": frac, "eval_ppl": ppl, "calib_ppl": None} | extra
    useful = {"iterative_greedy": [26.0, 29.0, 35.0, 48.0], "cheapest_single": [27.0, 33.0, 44.0, 70.0]}
    reverse = [31.0, 4.2e3, 1.5e40, 2.0e144]
    lines = [line(m, v) for m, v in useful.items()] + [line("reverse_order", reverse)]
    lines.append(line("random", [40.0, 90.0, 300.0, 900.0], band_low=[30.0, 50, 80, 100],
                      band_high=[3e3, 1e9, 1e20, 1e30]))
    fig = curve_figs.pruning_curves(lines, FULL, "blocks")
    assert_clean_log_axis(fig.layout.yaxis, FULL, 900.0)  # full model .. the random median, not 1e144
    top = 10 ** fig.layout.yaxis.range[1]
    rev = next(t for t in fig.data if t.name == "reverse_order")
    assert list(rev.y[:1]) == [31.0] and all(y == pytest.approx(top) for y in rev.y[1:])
    assert list(rev.marker.symbol) == ["circle", "triangle-up", "triangle-up", "triangle-up"]
    assert [c[3] for c in rev.customdata] == reverse and "customdata[3]" in rev.hovertemplate
    notes = [a.text for a in fig.layout.annotations if "↑" in a.text]
    assert sorted(notes) == sorted(f"{v:.3g} ↑" for v in reverse[1:])
    band = next(t for t in fig.data if t.name == "random 10-90%")
    assert max(band.y) == pytest.approx(top)
    for method, values in useful.items():  # the useful lines are drawn as they are
        assert list(next(t for t in fig.data if t.name == method).y) == values


def test_dynamic_depth_chart_is_informative_at_tiny_sizes():
    """Issue 29 (5): 4 blocks and 2 windows. The x axis spans every possible number of
    blocks with labelled ticks, bars of both families stand side by side with their
    counts written, the y axis counts whole windows, and each family's mean is drawn."""
    from analysis.reporting.figures import curves as curve_figs

    fig = curve_figs.oracle_fractions([0.75, 1.0], [1.0, 1.0], 4)
    assert fig.layout.barmode == "group"
    x0, x1 = fig.layout.xaxis.range
    assert x0 < 0 and x1 > 100 and list(fig.layout.xaxis.tickvals) == [0, 25, 50, 75, 100]
    assert list(fig.layout.xaxis.ticktext) == ["0 (0%)", "1 (25%)", "2 (50%)", "3 (75%)", "4 (100%)"]
    skipping, exits = fig.data
    assert list(skipping.y) == [0, 0, 0, 1, 1] and list(skipping.text) == ["", "", "", "1", "1"]
    assert list(exits.text) == ["", "", "", "", "2"]
    assert fig.layout.yaxis.dtick == 1 and fig.layout.yaxis.range[1] >= 2
    means = sorted(a.text for a in fig.layout.annotations)
    assert means == ["early exit mean 100.0%", "layer skipping mean 87.5%"]
    assert [s.x0 for s in fig.layout.shapes] == [87.5, 100.0]
    only = curve_figs.oracle_fractions(None, [0.5, 1.0], 4)  # a family without a solution is left out
    assert [t.name for t in only.data] == ["early exit"]
