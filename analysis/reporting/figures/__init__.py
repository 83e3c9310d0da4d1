"""Plotly figures: functions that take arrays and return a figure (no Streamlit)."""
