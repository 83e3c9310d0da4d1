"""Overview: the model card and the corpus perplexity."""
import streamlit as st

from ui import context

st.title("Layer Lab")
st.caption("Which layers of a transformer do little, and what does removing them cost?")
ctx = context.require()
model = ctx.model
cols = st.columns(4)
cols[0].metric("Layers", model.n_layers)
cols[1].metric("d_model", model.d_model)
cols[2].metric("d_mlp", model.d_mlp)
cols[3].metric("Parameters", f"{model.n_params / 1e6:.1f} M")
st.markdown(
    f"**{model.name}** · architecture `{model.architecture}` · device `{model.device}` · dtype `{model.dtype}`"
    f" · {'parallel' if model.parallel_attn_mlp else 'sequential'} attention/MLP · fingerprint `{model.fingerprint}`"
)
analysis = context.analysis_for(ctx)
corpus = analysis.corpus
st.subheader("Corpus perplexity")
st.metric("Perplexity", f"{analysis.perplexity:.3f}")
st.caption(
    f"Corpus `{ctx.corpus.corpus_id}` (sha256 {corpus['sha256'][:12]}...): {corpus['n_windows']} windows of "
    f"{corpus['seq_len']} tokens{' after a BOS token' if corpus['bos'] else ''}, "
    f"{corpus['n_predicted_tokens']} predicted tokens. Perplexity = exp(mean next-token cross-entropy)."
)
st.markdown(
    "The pages on the left read this one instrumented pass: **similarity** of hidden states across layers, "
    "**attention vs MLP** redundancy with measured removal cost, **activation sparsity**, the **logit lens** "
    "with early exits, and the **playground** where you switch layers off live."
)
