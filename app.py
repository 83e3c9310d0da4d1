"""Layer Lab: which layers of a transformer do little, and what removing them costs."""
from pathlib import Path

import streamlit as st

from ui import context, diagnostics, links, sidebar, urlstate  # noqa: F401 - diagnostics: SIGUSR1 dumps stacks

# The favicon is a local SVG, which Streamlit inlines as a data: URI; a ":material/...:" page
# icon makes the browser fetch it from fonts.gstatic.com (an error offline). The Material
# icons of the pages and buttons come from the font Streamlit bundles.
st.set_page_config(page_title="Layer Lab", page_icon=str(Path(__file__).parent / "ui" / "icon.svg"), layout="wide")
context.mark_app_run()

PAGES = {key: st.Page(f"pages/{key}.py", title=title, icon=f":material/{icon}:", url_path=key, default=i == 0)
         for i, (key, (title, icon)) in enumerate(links.PAGE_INFO.items())}

st.sidebar.title("Layer Lab")
navigation = st.navigation(list(PAGES.values()))
sidebar.render()
urlstate.install_history_guard()
urlstate.sync(page=next(k for k, p in PAGES.items() if p.url_path == navigation.url_path))
navigation.run()
