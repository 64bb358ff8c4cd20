"""Distilling a zoo model into a thinking model that overthinks (docs/reasoner.md)."""
