"""The one record type every dataset layout yields.

A record is cheap to make and cheap to pickle (it is shipped to Ray tasks): it holds the key,
the source path, and loaders for the image and, when the layout has one, the semantic mask.
Decoding happens where the work runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from glocon.ops import IGNORE_INDEX

# PFENet's make_dataset keeps a class for an image only when it covers at least 2 x 32 x 32 pixels.
MIN_CLASS_PIXELS = 2 * 32 * 32


@dataclass(frozen=True)
class Record:
    """key: unique within a layout; source: the image file; loaders return RGB PIL / (H, W) uint8."""

    key: str
    source: str
    load_image: Callable[[], Image.Image]
    load_mask: Callable[[], np.ndarray] | None = None
    layout: str = "folder"
    extra: dict = field(default_factory=dict)

    @property
    def has_mask(self) -> bool:
        return self.load_mask is not None


def class_pixels(mask: np.ndarray, ignore_index: int = IGNORE_INDEX, background: int = 0) -> dict[int, int]:
    """Pixel count per class id present in ``mask`` (background and ignore excluded). (H, W) -> {id: n}."""
    ids, counts = np.unique(mask, return_counts=True)
    return {int(i): int(n) for i, n in zip(ids, counts) if i != ignore_index and i != background}


def classes_present(pixels: dict[int, int], min_pixels: int = MIN_CLASS_PIXELS) -> list[int]:
    """Classes that count for an image: at least ``min_pixels`` pixels (PFENet's rule)."""
    return sorted(c for c, n in pixels.items() if n >= min_pixels)
