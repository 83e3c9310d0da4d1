"""Activation sparsity: how many MLP hidden activations are (near) zero, per layer, neuron and token."""
import numpy as np
import streamlit as st

from analysis.model import architectures
from analysis.reporting.figures import sparsity as figures
from analysis.measure.lens import decode_tokens
from ui import context

ctx, analysis = context.page(
    "Activation sparsity",
    "The MLP hidden activation a that enters the down projection (act(gate) · up for gated MLPs), over every "
    "position except the BOS. All thresholds were counted exactly in the one instrumented pass.")
card = analysis.model
result = analysis.sparsity
if result is None:
    st.info(architectures.MOE_SPARSITY_NOTE)
    st.stop()

c1, c2 = st.columns(2)
eps_grid = [float(e) for e in result.eps_grid]
eps = c1.select_slider("eps (absolute rule |a| ≤ eps)", eps_grid, value=min(eps_grid, key=lambda e: abs(e - 0.01)),
                       format_func=lambda e: f"{e:g}", key="sparsity_eps")
p_grid = [float(p) for p in result.p_grid]
p = c2.select_slider("p (relative rule |a| ≤ p · max|a| of the token)", p_grid,
                     value=min(p_grid, key=lambda x: abs(x - 0.01)), format_func=lambda x: f"{x:g}", key="sparsity_p")
at = result.at_eps(eps)
relative = result.at_p(p)
exact = result.frac_exact_zero

m = st.columns(4)
m[0].metric(f"Mean share |a| ≤ {eps:g}", f"{at['frac_near_zero'].mean():.4f}")
m[1].metric(f"Mean share |a| ≤ {p:g}·max", f"{relative.mean():.4f}")
m[2].metric("Mean share exactly 0", f"{exact.mean():.2e}")
m[3].metric(f"Dead neurons at eps {eps:g}", f"{int(at['dead_neurons'].sum())} of {card['n_layers'] * card['d_mlp']}")
st.plotly_chart(figures.sparsity_by_layer(at["frac_near_zero"], relative, exact, eps, p))
st.caption("Dotted lines: model averages. A SiLU (or GELU) MLP like the default model's has (almost) no exact zeros: "
           "SiLU(x) = x·σ(x) is zero only at x = 0 exactly (or when σ underflows for very negative x), and the gated "
           "product only where gate or up is exactly 0, whereas ReLU maps every negative input to exactly 0; so only "
           "a threshold, absolute or relative, says anything.")

st.subheader("Dead neurons")
st.plotly_chart(figures.dead_neurons(at["dead_neurons"], card["d_mlp"], eps))
st.caption(f"A neuron is dead at eps when |a| ≤ eps at every one of the {result.n_positions} positions.")

st.subheader("Firing frequency of each neuron")
layer = st.selectbox("Layer", range(card["n_layers"]), index=card["n_layers"] // 2, key="sparsity_layer")
st.plotly_chart(figures.firing_histogram(np.asarray(at["firing_frequency"])[layer], layer, eps))

st.subheader("Density per token")
if context.needs_model(ctx, "The per-token density of one window"):
    st.stop()
model = ctx.model
windows = context.windows(ctx)
w = int(st.number_input("Window", 0, windows.shape[0] - 1, 0, key="sparsity_window"))
first = 1 if analysis.corpus["bos"] else 0
with st.spinner("Counting the activations of this window...", show_time=True):
    density = context.token_density(ctx, w, eps)[first:]
positions = np.arange(first, windows.shape[1])
tokens = list(decode_tokens(model.tokenizer, windows[w].numpy()[first:]))
st.plotly_chart(figures.token_density(density, tokens, positions, eps))
st.caption("Share of the layer's MLP activations with |a| > eps at each token (the BOS position is left out, as "
           "in the corpus numbers).")
