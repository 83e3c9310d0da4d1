"""The instrumented pass and what it measures: `collect.run_pass` (one forward, hooks
capturing the residual stream), the fused reductions, the reducers (similarity,
sublayers, sparsity, logit lens and early exit) and `pipeline.analyse` that runs them.

May import: core, model, data.
"""
