"""Hidden-state similarity: layer x layer heatmaps, Block Influence, the best contiguous
block per size, a PCA map of the layers, and Block Influence against measured block cost."""
import streamlit as st

from analysis.measure import similarity
from analysis.reporting.figures import similarity as figs
from analysis.reporting.figures.scales import BAR_SCALE_HELP, BAR_SCALES
from analysis.reporting.figures.sublayers import predictor_scatter, removal_costs
from analysis.ablate.sweep import predictors
from ui import context, results

ctx, analysis = context.page(
    "Hidden-state similarity",
    "How much does each block change the residual stream h_0..h_L? Near-identical neighbours are "
    "candidates for removal; the measured removal cost at the bottom says whether that holds.")
sim = analysis.similarity
L = analysis.model["n_layers"]
positions_count = {"all": sim.n_positions, "last": sim.n_last}

c1, c2, c3 = st.columns([2, 2, 3])
measure = c1.radio("Measure", list(similarity.MEASURES), key="sim_measure", horizontal=True,
                   format_func={"cosine": "mean cosine", "angular": "angular distance", "cka": "linear CKA"}.get)
positions = c2.radio("Positions", list(similarity.POSITIONS), key="sim_positions",
                     format_func=similarity.POSITIONS.get)
blocks = sim.best_blocks()
n = None
if blocks:
    n = c3.slider("Block size n to mark (best contiguous block by angular distance)", 1, L - 1, 1,
                  key="sim_block_n") if L > 2 else 1
best = blocks[n - 1] if n else None

matrix = sim.matrix(measure, positions)
if measure == "cka" and not (matrix == matrix).all():
    st.warning("Linear CKA needs at least two positions; with one window use all positions.")
block = (best["start"], best["n"]) if best else None
st.plotly_chart(figs.layer_heatmap(matrix, measure, f"{measure} between h_i and h_j, "
                                   f"{similarity.POSITIONS[positions]}", block), key="sim_heatmap")
notes = [f"{positions_count[positions]} positions per layer."]
if measure == "cka":
    notes.append(f"CKA uses an evenly spread sample of {getattr(sim, f'cka_{positions}_positions')} of them.")
if best:
    notes.append(f"Red square: h_{best['start']}..h_{best['start'] + best['n']}; white cells: the pair the "
                 f"best block of {best['n']} joins.")
st.caption(" ".join(notes))

if best:
    st.subheader("Best contiguous block to remove")
    m1, m2, m3 = st.columns(3)
    m1.metric(f"Best start for n = {best['n']}", best["start"])
    m2.metric("Angular distance d(n)", f"{best['distance']:.4f}")
    m3.metric("Blocks removed", f"{best['start']}..{best['start'] + best['n'] - 1}")
    left, right = st.columns([3, 2])
    left.plotly_chart(figs.best_block_curve(blocks, n), key="sim_best_curve")
    right.dataframe([{"n": b["n"], "start": b["start"], "removes blocks": f"{b['start']}..{b['start'] + b['n'] - 1}",
                      "distance": round(b["distance"], 5)} for b in blocks], hide_index=True, height=320)
    st.caption("Gromov et al.: d(n) = min over l of the mean arccos(cos(h_l, h_l+n)) / pi at the last token "
               "of each window; the best block removes blocks l..l+n-1.")

st.subheader("Block Influence")
bi = sim.block_influence()
scale = st.radio("Bar scale", list(BAR_SCALES), format_func=BAR_SCALES.get, key="sim_bi_scale", horizontal=True,
                 help=BAR_SCALE_HELP)
st.plotly_chart(figs.block_influence_bars(bi, block, scale), key="sim_bi")
st.caption("ShortGPT: BI_l = 1 - mean over non-BOS tokens of cos(h_l, h_l+1). Red: the marked best block.")

st.subheader("Layer map")
g1, g2 = st.columns(2)
max_groups = max(1, min(10, L + 1))
n_groups = g1.slider("Redundancy groups", 1, max_groups, min(4, max_groups), key="sim_groups") \
    if max_groups > 1 else 1
contiguous = g2.checkbox("Only groups of consecutive layers", value=True, key="sim_contiguous")
coords, explained = similarity.layer_map(sim.mean_repr)
groups = similarity.layer_groups(sim.cos_all, n_groups, contiguous)
st.plotly_chart(figs.layer_map(coords, explained, groups), key="sim_map")
st.caption("Each point is one layer's average hidden state (scaled to unit length) projected to 2-D with PCA; "
           "layers close together point the same way on average, and a long jump marks a block that rewrites "
           "the stream. Colours are agglomerative clusters of h_0..h_L on the distance 1 - mean cosine: a "
           "group of several consecutive layers is a run whose inner blocks change little.")

st.subheader("Does Block Influence predict the damage?")
removal = results.removal_on_request(
    ctx, results.removal_for(ctx, run=False), "sim_measure_removal",
    "The ground truth is the corpus perplexity with each block removed, measured by running the "
    "model once per removal (the unchanged prefix is re-used).")
if removal is not None:
    panels = predictors(bi, analysis.sublayers.attn_score, analysis.sublayers.mlp_score, removal)
    st.metric("Spearman(Block Influence, perplexity with the block removed)", f"{panels[0]['rho']:.3f}")
    left, right = st.columns(2)
    left.plotly_chart(predictor_scatter(panels[:1], removal.full_ppl), key="sim_predictor")
    right.plotly_chart(removal_costs(removal.block_ppl, removal.attn_ppl, removal.mlp_ppl, removal.full_ppl),
                       key="sim_costs")
    st.caption(f"Full-model perplexity {removal.full_ppl:.3f}. A useful redundancy score ranks blocks like their "
               "measured cost (rho near +1). Attention and MLP removals are compared on the Attention vs MLP page.")
