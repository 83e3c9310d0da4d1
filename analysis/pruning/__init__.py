"""Removing layers: measured cost, the live playground, presets, plans, apply."""
