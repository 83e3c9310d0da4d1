"""Layer Lab: which layers of a transformer do little, and what removing them costs."""
import streamlit as st

from ui import sidebar, urlstate

st.set_page_config(page_title="Layer Lab", page_icon=":material/layers:", layout="wide")

PAGES = {
    "overview": st.Page("pages/overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
}

st.sidebar.title("Layer Lab")
navigation = st.navigation(list(PAGES.values()))
sidebar.render()
urlstate.sync(page=next(k for k, p in PAGES.items() if p.url_path == navigation.url_path))
navigation.run()
