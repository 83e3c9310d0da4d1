"""The model itself: loading through TransformerLens (and where weights come from), the
verified architectures, hook names, model anatomy (decoder layers, output
projections), the unwrapped decoder every pass runs on, and what a removal is
(`Removal`, its zeroing hooks).

May import: core.
"""
