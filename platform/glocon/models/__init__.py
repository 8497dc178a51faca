"""Backbones, heads and the prior extractor (with its momentum twin)."""
