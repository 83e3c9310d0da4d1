"""The live playground: removal toggles evaluated from cached clean residuals, shared
by every session (`live`), and prompts and generation with removals (`prompts`).

May import: core, model, data, measure, ablate.
"""
