"""Attention versus MLP: per-layer sublayer redundancy, the joint ranking of all 2L
sublayers, and the measured perplexity of all 3L single removals as ground truth."""
import streamlit as st

from analysis.model import architectures
from analysis.measure import sublayers
from analysis.reporting.figures import sublayers as figs
from analysis.reporting.figures.scales import BAR_SCALE_HELP, BAR_SCALES
from analysis.ablate.sweep import predictors
from ui import context, results

ctx, analysis = context.page(
    "Attention vs MLP",
    "Is it the attention or the MLP sublayers that do little? LLM-Drop-style scores per sublayer, "
    "checked against the perplexity the model actually loses when each one is removed.")
sub = analysis.sublayers
L = analysis.model["n_layers"]
attn, mlp, attn_ratio, mlp_ratio = sub.attn_score, sub.mlp_score, sub.attn_norm_ratio, sub.mlp_norm_ratio

if sub.parallel:
    st.info("Parallel attention and MLP: this architecture adds both sublayers' outputs to the same input "
            "stream (there is no stream between them), so each sublayer is scored against resid_pre: "
            "score = 1 - mean cos(resid_pre, resid_pre + output).")
else:
    st.caption("Sequential blocks: attention score = 1 - mean cos(resid_pre, resid_mid); MLP score = "
               "1 - mean cos(resid_mid, resid_post), over all non-BOS positions.")

for note in architectures.notes_for(ctx.model) if ctx.model is not None else []:  # a report file: no model
    if note != architectures.PARALLEL_NOTE:  # the message above says it
        st.caption(note)
scale = st.radio("Bar scale", list(BAR_SCALES), format_func=BAR_SCALES.get, key="sub_scale", horizontal=True,
                 help=BAR_SCALE_HELP)
st.plotly_chart(figs.sublayer_scores(attn, mlp, attn_ratio, mlp_ratio, sub.parallel, scale), key="sub_scores")
removal = results.removal_for(ctx, run=False)

left, right = st.columns(2)
left.markdown("**Per layer, side by side**")
left.dataframe([{"layer": l, "attention score": round(float(attn[l]), 5), "MLP score": round(float(mlp[l]), 5),
                 "attn norm ratio": round(float(attn_ratio[l]), 4), "MLP norm ratio": round(float(mlp_ratio[l]), 4)}
                for l in range(L)], hide_index=True, height=420)
right.markdown(f"**Joint ranking of all {2 * L} sublayers** (most redundant first)")
right.dataframe(sublayers.ranking_table(attn, mlp, removal.attn_ppl if removal else None,
                                        removal.mlp_ppl if removal else None), hide_index=True, height=420)

st.subheader("Measured removal cost (the ground truth)")
removal = results.removal_on_request(
    ctx, removal, "sub_measure_removal",
    f"Exact corpus perplexity with each of the {L} blocks, {L} attention and {L} MLP sublayers removed "
    f"({3 * L} runs of the model, each re-using the unchanged prefix), plus a first-order estimate of all "
    "of them from one forward and one backward pass.")
if removal is not None:
    st.plotly_chart(figs.removal_costs(removal.block_ppl, removal.attn_ppl, removal.mlp_ppl, removal.full_ppl),
                    key="sub_costs")
    cheapest = removal.components()[:5]
    st.caption(f"Full model: {removal.full_ppl:.3f}. Cheapest removals: "
               + ", ".join(f"{r['kind']} {r['layer']} ({r['ppl']:.3f})" for r in cheapest) + ".")

    st.markdown("**First-order estimate** (attribution: delta NLL ~ -grad . output of the zeroed sublayers)")
    rho = removal.estimate["spearman"]
    cols = st.columns(4)
    for col, (key, label) in zip(cols, (("block_ppl", "blocks"), ("attn_ppl", "attention"), ("mlp_ppl", "MLP"),
                                        ("all", f"all {3 * L}"))):
        col.metric(f"Spearman, {label}", f"{rho[key]:.3f}")
    exact = {"block_ppl": removal.block_ppl, "attn_ppl": removal.attn_ppl, "mlp_ppl": removal.mlp_ppl}
    st.plotly_chart(figs.estimate_vs_exact(exact, removal.estimate, rho), key="sub_estimate")

    st.markdown("**Does similarity predict damage on this model?**")
    panels = predictors(analysis.similarity.block_influence(), attn, mlp, removal)
    st.plotly_chart(figs.predictor_scatter(panels, removal.full_ppl), key="sub_predictors")
    st.caption("Each point is one removal: its redundancy score against the measured perplexity ratio. "
               "Spearman rank correlation near +1 means the score orders removals by their real cost; "
               "near 0 means it does not, on this model and corpus.")
