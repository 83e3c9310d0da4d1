"""Compare two runs: similarity heatmaps and their difference, Block Influence, sublayer
scores, sparsity and logit-lens curves overlaid on aligned layer axes, perplexity side
by side. Each side is the current view, a stored report or another model."""
import numpy as np
import streamlit as st

from analysis.reporting import compare
from analysis.measure import similarity
from analysis.reporting.figures import compare as figs
from analysis.reporting.figures.lens import CURVES
from analysis.reporting.figures.similarity import layer_heatmap
from ui import compare_sides, links, urlstate

EPS = 0.01

st.title("Compare two runs")
st.caption("Base against instruct, full against pruned or healed, one corpus against another. Layer axes are "
           "aligned by index, or by the plan's kept-layer map when one side is a pruned checkpoint of the other.")
compare_sides.seed()
col_a, col_b = st.columns(2)
picks = [compare_sides.pick(col_a, "A", compare_sides.CURRENT), compare_sides.pick(col_b, "B", compare_sides.MODEL)]
urlstate.set_view(**{key: p and p.link for key, p in zip(links.COMPARE_KEYS, picks)})
urlstate.sync("compare")
if None in picks:
    st.stop()
a, b = (p.with_lens(run=False) for p in picks)

alignment = compare.align(a, b)
axis = "layer of the full model" if alignment.how == "plan" else "layer index"
st.header("Perplexity")
m = st.columns(3)
m[0].metric(f"Perplexity {a.label}", f"{a.analysis.perplexity:.3f}")
m[1].metric(f"Perplexity {b.label}", f"{b.analysis.perplexity:.3f}")
m[2].metric("B / A", f"{b.analysis.perplexity / a.analysis.perplexity:.3f}")
st.dataframe(compare.summary_rows(a, b), hide_index=True)
for note in compare.text_notes(a, b):
    st.warning(note)
if alignment.how == "plan":
    st.success("Layer axes aligned by the plan's kept-layer map. " + " ".join(alignment.notes))
else:
    st.info("Layer axes aligned by index. " + " ".join(alignment.notes))
st.caption("Share this comparison: [link](" + urlstate.share_url("compare") + ")")

st.header("Hidden-state similarity")
c1, c2 = st.columns(2)
measure = c1.radio("Measure", list(similarity.MEASURES), key="cmp_measure", horizontal=True)
positions = c2.radio("Positions", list(similarity.POSITIONS), key="cmp_positions", horizontal=True,
                     format_func=similarity.POSITIONS.get)
ma = a.analysis.similarity.matrix(measure, positions)
mb = b.analysis.similarity.matrix(measure, positions)
diff, common = compare.matrix_difference(ma, mb, alignment)
h1, h2, h3 = st.columns(3)
h1.plotly_chart(figs.compact(layer_heatmap(ma, measure, f"A: {measure}")), key="cmp_heat_a")
h2.plotly_chart(figs.compact(layer_heatmap(mb, measure, f"B: {measure}")), key="cmp_heat_b")
h3.plotly_chart(figs.compact(figs.difference_heatmap(diff, common, measure, axis)), key="cmp_heat_diff")
st.caption(f"A and B on their own layer indices; the difference B - A over the {len(common)} residuals h_i both "
           f"have, labelled by {axis}. Red: B more similar than A.")

labels = (a.label, b.label)
sa, sb = a.analysis, b.analysis
panels = [("Block Influence (1 - mean cos(h_l, h_l+1))",
           compare.block_series("BI", sa.similarity.block_influence(), sb.similarity.block_influence(), alignment,
                                labels)),
          ("Sublayer scores (1 - mean cos across the sublayer)",
           compare.block_series("attention", sa.sublayers.attn_score, sb.sublayers.attn_score, alignment, labels)
           + compare.block_series("MLP", sa.sublayers.mlp_score, sb.sublayers.mlp_score, alignment, labels))]
if sa.sparsity is not None and sb.sparsity is not None:  # None for mixture-of-experts MLPs
    panels.append((f"Share of MLP activations with |a| <= {EPS:g}",
                   compare.block_series("near zero", sa.sparsity.at_eps(EPS)["frac_near_zero"],
                                        sb.sparsity.at_eps(EPS)["frac_near_zero"], alignment, labels)))
st.header("Per layer, overlaid")
st.plotly_chart(figs.overlay(panels, f"block ({axis})"), key="cmp_overlay")

st.header("Logit lens")
if (sa.lens is None or sb.lens is None) and st.button("Run the logit lens on both sides", key="cmp_run_lens"):
    sa, sb = (p.with_lens(run=True).analysis for p in picks)
if sa.lens is None or sb.lens is None:
    st.info("The logit lens is not computed for both sides yet (a report written with --skip-lens never has it). "
            "It reads out every block over the corpus, the slowest of the analyses.")
else:
    RANK = "median_rank_final_top1"  # drawn as rank + 1 on a log axis, as on the logit-lens page
    RANK_TITLE = "median rank of final top-1, plus 1 (log scale; 1 = top)"
    lens_panels = [(RANK_TITLE if key == RANK else title,
                    compare.block_series(key, *[np.asarray(getattr(s.lens, key)) + (key == RANK) for s in (sa, sb)],
                                         alignment, labels)) for key, title in CURVES]
    st.plotly_chart(figs.overlay(lens_panels, f"readout after block ({axis})", log_panels=(RANK_TITLE,)),
                    key="cmp_lens")
    st.caption("Index = readout after that block; on a pruned side, after the kept block at that position.")
