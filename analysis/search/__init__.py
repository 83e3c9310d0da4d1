"""Choosing what to remove: presets, the exact iterative greedy, pruning curves
(`curves`, `curves_run`) and the dynamic-depth oracle.

May import: everything below (core ... plans).
"""
