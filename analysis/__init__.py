"""Layer Lab analyses: pure Python/torch, never imports streamlit."""
