"""Pictures of what glocon computes (superpixels now; banks render their own)."""

from glocon.viz.superpixels import show_superpixels, superpixel_figure

__all__ = ["show_superpixels", "superpixel_figure"]
