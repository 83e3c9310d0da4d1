"""Removals measured exactly: blocks replayed with their own forward's arguments from a
clean prefix (`replay`), the exact 3L sweep and the attribution estimate (`sweep`), the
shared memo of measured removals, parameter and FLOP costs, bounds, and the
progressive (estimate-first) evaluation.

May import: core, model, data, measure.
"""
