"""Healing a pruned model: a LoRA fine-tune on the calibration windows (`train`) and the
background run that writes the healed checkpoint (`run`).

May import: everything below (core ... search).
"""
