"""Logit lens & early exit: what each block's residual already predicts, and when a token could stop."""
import numpy as np
import pandas as pd
import streamlit as st

from analysis.measure import early_exit, lens
from analysis.reporting.figures import lens as figures
from ui import context

st.title("Logit lens & early exit")
st.caption("Readout after block l = unembed(final_norm(resid_post_l)), with the final norm applied afresh to each "
           "block's own residual; the readout after the last block equals the model's output.")
ctx = context.require()
if ctx.report is not None:
    context.file_banner(ctx)
card = context.analysis_for(ctx).model
L = card["n_layers"]


def window_view() -> None:
    """One window's tokens x blocks grid (needs the model: one short forward)."""
    model = ctx.model
    windows = context.windows(ctx)
    c1, c2, c3, c4 = st.columns(4)
    w = int(c1.number_input("Window", 0, windows.shape[0] - 1, 0, key="lens_window"))
    sites = ["resid_post"] + ([] if model.parallel_attn_mlp else ["resid_mid"])
    site = c2.radio("Read out at", sites, key="lens_site", horizontal=True,
                    help="resid_post: after the block; resid_mid: between its attention and MLP.")
    colours = {"p_final_top1": "probability of the final top-1", "kl": "KL(final ‖ layer)", "entropy": "entropy"}
    colour = c3.selectbox("Colour", list(colours), format_func=colours.get, key="lens_colour")
    n_pred = windows.shape[1] - 1
    span = c4.slider("Positions", 0, n_pred - 1, (0, min(n_pred, 32) - 1), key="lens_span") if n_pred > 1 else (0, 0)
    with st.spinner("Reading out every block for this window...", show_time=True):
        grid = context.lens_grid(ctx, w, site)
    sel = np.arange(span[0], span[1] + 1)
    tokens = windows[w].numpy()
    fig = figures.lens_grid(lens.decode_tokens(model.tokenizer, grid["top_ids"][sel]), grid["top_probs"][sel],
                            grid[colour][sel], list(lens.decode_tokens(model.tokenizer, tokens[sel])),
                            list(lens.decode_tokens(model.tokenizer, tokens[sel + 1])), sel, colours[colour],
                            colour_key=colour, layer_label="block" if site == "resid_post" else "block (mid)")
    st.plotly_chart(fig)
    st.caption("Each cell: the top-1 token read out at that block; hover for the top 5 with probabilities. "
               "Bottom axis: the input token at each position; top axis: the true next token.")


st.header("One window, block by block")
if not context.needs_model(ctx, "Reading out the blocks of one window"):
    window_view()

st.header("Over the whole corpus")
result = context.lens_for(ctx)  # its own pass over the corpus, after the rest (progress bar here)
if result is None:
    st.info("This report was written without the logit lens (--skip-lens).")
    st.stop()
curves = {k: getattr(result, k) for k, _ in figures.CURVES}
first = lens.first_agreement_above(result.top1_agree, 0.5)
m1, m2, m3 = st.columns(3)
m1.metric("First block with top-1 agreement > 50%", "never" if first is None else first)
m2.metric("Cross-entropy after the last block", f"{result.ce[-1]:.3f} nats")
m3.metric("Predicted tokens", result.n_positions)
st.plotly_chart(figures.layer_curves(curves))
st.caption("Index l = readout after block l. KL(final ‖ layer) compares with the model's own output distribution; "
           "agreement and rank compare with its top-1 token.")

st.header("Early exit")
st.warning(early_exit.OPTIMISM_NOTE)
ee = result.early_exit
r1, r2 = st.columns(2)
rule = r1.selectbox("Confidence rule", list(ee.curves), key="exit_rule",
                    help="max_prob: top-1 probability ≥ t; top2_gap: p1 − p2 ≥ t; entropy: ≤ t nats; "
                         "cosine: cos(residual before, after the block) ≥ t.")
curve = ee.curves[rule]
threshold = r2.select_slider("Threshold", curve.thresholds, value=early_exit.default_threshold(curve),
                             key=f"exit_threshold_{rule}",
                             help=f"Starts at the cheapest threshold whose agreement with the full model reaches "
                                  f"{early_exit.DEFAULT_AGREEMENT:.0%} on these windows.")
i = curve.thresholds.index(threshold)
st.metric("Oracle exit: mean fraction of blocks used", f"{ee.oracle_mean_fraction:.3f}")
st.plotly_chart(figures.exit_depth_histogram(ee.oracle_exit_hist, curve.exit_hist[i],
                                             f"{rule} {curve.direction} {threshold:g}"))
st.caption(f"At {rule} {curve.direction} {threshold:g}: {curve.fraction_blocks[i]:.3f} of the blocks used, "
           f"agreement {curve.agreement[i]:.3f}, Δ cross-entropy {curve.delta_ce[i]:+.4f} nats.")
target = st.slider("Agreement target", 0.5, 1.0, early_exit.DEFAULT_AGREEMENT, 0.01, key="exit_target")
points = {r: early_exit.operating_point(c, target) for r, c in ee.curves.items()}
st.plotly_chart(figures.exit_sweep(ee.curves, points, target))
st.dataframe(pd.DataFrame([{"rule": r, **figures.operating_point_row(p)} for r, p in points.items()]),
             hide_index=True)
st.caption("Operating point: the cheapest threshold of each rule whose agreement with the full model reaches the "
           "target (empty when no threshold does).")

st.subheader("Per-window tolerance exit")
st.caption("For each window on its own, the fewest blocks whose logit-lens perplexity on that window stays within x% "
           "of the full model's on that window. Every window must meet its own bound; the per-sequence oracle of "
           "Glavas et al., which only bounds the mean over windows and also skips layers, is on the Pruning curves "
           "page.")
pct = st.select_slider("Tolerance x (%)", [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000], value=10,
                       key="seq_tolerance", help="Perplexity of the readout ≤ (1 + x/100) × the full model's.")
depths = early_exit.per_window_tolerance_exit(result.seq_mean_ce, pct)
st.metric("Mean fraction of blocks", f"{depths.mean() / L:.3f}")
st.plotly_chart(figures.per_window_exit_histogram(depths, L, pct))
