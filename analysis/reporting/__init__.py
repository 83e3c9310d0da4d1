"""What leaves the app: report.json (`report`), the offline HTML report, comparisons of
two runs, and the plotly figures (`figures`, no Streamlit).

May import: everything below (core ... heal).
"""
