"""Task accuracy by lm-eval: the offline suite (suite), task files (files) and the runs
with removals applied in-process or on a checkpoint by path (engine). Imports core, model
and data; above ablate, playground and plans, below search, heal, reporting and cli.
"""
