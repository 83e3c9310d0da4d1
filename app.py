"""Layer Lab: which layers of a transformer do little, and what removing them costs."""
import streamlit as st

from ui import sidebar, urlstate

st.set_page_config(page_title="Layer Lab", page_icon=":material/layers:", layout="wide")

PAGES = {
    "overview": st.Page("pages/overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
    "similarity": st.Page("pages/similarity.py", title="Hidden-state similarity", icon=":material/grid_on:", url_path="similarity"),
    "sublayers": st.Page("pages/sublayers.py", title="Attention vs MLP", icon=":material/compare_arrows:", url_path="sublayers"),
    "sparsity": st.Page("pages/sparsity.py", title="Activation sparsity", icon=":material/scatter_plot:", url_path="sparsity"),
    "logit_lens": st.Page("pages/logit_lens.py", title="Logit lens & early exit", icon=":material/visibility:", url_path="logit_lens"),
    "playground": st.Page("pages/playground.py", title="Layer playground", icon=":material/tune:", url_path="playground"),
}

st.sidebar.title("Layer Lab")
navigation = st.navigation(list(PAGES.values()))
sidebar.render()
urlstate.sync(page=next(k for k, p in PAGES.items() if p.url_path == navigation.url_path))
navigation.run()
