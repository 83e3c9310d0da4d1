"""Pruning plans: the JSON schema (`schema`), validation of plans a user brings
(`check`), `apply` (a real smaller checkpoint) and MergeKit YAML.

May import: core, model, data, measure, ablate.
"""
