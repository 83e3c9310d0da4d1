"""Streamlit glue shared by app.py and pages/: sidebar, session context, URL state."""
