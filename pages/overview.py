"""Overview: the model card, the corpus perplexity, and the report as a file (JSON, HTML)."""
import streamlit as st

from analysis.data.corpus import HOLDOUT_EVERY, plural
from analysis.reporting.html import html_report
from analysis.reporting.report import report_bytes
from ui import context, report_source, results
from ui.context import plain

st.title("Layer Lab")
st.caption("Which layers of a transformer do little, and what does removing them cost?")
ctx = context.require()
if ctx.report is not None:
    context.file_banner(ctx)
analysis = context.analysis_for(ctx)
card = analysis.model
cols = st.columns(4)
cols[0].metric("Layers", card["n_layers"])
cols[1].metric("d_model", card["d_model"])
cols[2].metric("d_mlp", card["d_mlp"])
cols[3].metric("Parameters", f"{card['n_params'] / 1e6:.1f} M")
where = "" if ctx.model is None else f" · device `{ctx.model.device}` · dtype `{ctx.model.dtype}`"
st.markdown(
    f"**{plain(card['name'])}** · architecture `{card['architecture']}`{where}"
    f" · {'parallel' if card.get('parallel_attn_mlp') else 'sequential'} attention/MLP"
    f" · fingerprint `{card['fingerprint']}`"
)
if card.get("weights"):
    st.caption(f"Weights: {plain(card['weights'])}.")
corpus = analysis.corpus
st.subheader("Corpus perplexity")
st.metric("Perplexity", f"{analysis.perplexity:.3f}")
st.caption(
    f"Corpus {plain(str(corpus.get('id', '')))} (sha256 {corpus['sha256'][:12]}...): {plural(corpus['n_windows'], 'window')} "
    f"of {corpus['seq_len']} tokens{' after a BOS token' if corpus['bos'] else ''}, "
    f"{corpus['n_predicted_tokens']} predicted tokens. Perplexity = exp(mean next-token cross-entropy)."
    + (f" These are the calibration windows: every {HOLDOUT_EVERY}th window of the corpus is held out for evaluation "
       "(sidebar: Evaluate on), and every page here reads only the calibration windows."
       if corpus.get("part") == "calibration" else "")
)
st.markdown(
    "The pages on the left read this one instrumented pass: **similarity** of hidden states across layers, "
    "**attention vs MLP** redundancy with measured removal cost, **activation sparsity**, the **logit lens** "
    "with early exits, the **playground** where you switch layers off live, and **compare**, two runs side by side."
)

st.subheader("Take it with you")
report = report_source.report_of(ctx)
name = report_source.file_stem(ctx)
left, right = st.columns(2)
left.download_button("Download report (HTML)", lambda: html_report(report), file_name=f"{name}.html",
                     mime="text/html", icon=":material/download:", on_click="ignore")
right.download_button("Download report.json", lambda: report_bytes(report), file_name=f"{name}.json",
                      mime="application/json", icon=":material/data_object:", on_click="ignore")
st.caption("The HTML report is one file that opens offline in a browser: the model card, corpus and settings, "
           "every figure of the analysis pages (interactive), the removal sweep when it has been measured and "
           "each number's definition. report.json is what `python -m analysis report` writes; open it with the "
           "sidebar's source 'Report file', here or on another server.")
if ctx.report is None:
    missing = [what for what, ready in (("the logit lens (Logit lens page)", results.lens_if_ready(ctx)),
                                        ("the removal sweep (Attention vs MLP page)",
                                         results.removal_for(ctx, run=False))) if ready is None]
    if missing:
        st.caption(f"Not computed yet for this model and corpus, so not in the files: {' and '.join(missing)}.")
