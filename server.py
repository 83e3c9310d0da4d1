"""`streamlit run server.py`: the app (app.py) as an st.App whose index.html tells the
browser client where the server's root is, so a deep link such as /playground connects
without probing /playground/_stcore/... first (two 404s); see ui/base_url.py."""
import streamlit as st
from starlette.middleware import Middleware

from ui.base_url import BackendBaseUrl

app = st.App("app.py", middleware=[Middleware(BackendBaseUrl)])
