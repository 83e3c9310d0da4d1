"""What a model is measured on: corpora and their token windows, and the split into
calibration and evaluation windows (`EvalSpec`, `Split`, `windows_for`).

May import: core.
"""
