"""The contact sheet: the query patch outlined on its image, then its neighbours.

Every tile is ``tile`` x ``tile`` pixels plus a caption band, laid out ``columns`` to a row, so
a sheet's size depends only on (number of tiles, tile, columns): predictable for tests and for a
web page that shows it. A neighbour tile is a crop around its superpixel's bbox (with a margin)
scaled to fit; outlines are drawn after scaling so they stay one crisp colour.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from glocon.io import atomic_open

BACKGROUND = (24, 24, 24)
QUERY_OUTLINE = (255, 0, 0)
HIT_OUTLINE = (255, 255, 0)
TEXT = (240, 240, 240)
CAPTION = 18  # caption band height in pixels
MARGIN = 0.35  # crop margin around a neighbour's bbox, as a share of its larger side


@dataclass
class Tile:
    image: np.ndarray  # (H, W, 3) uint8
    region: np.ndarray  # (H, W) bool
    caption: str
    bbox: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1); None: from the region
    full: bool = False  # show the whole image (the query) instead of a crop


def grid(n_tiles: int, columns: int) -> tuple[int, int]:
    """(columns, rows) of a sheet of n tiles."""
    cols = max(1, min(columns, n_tiles))
    return cols, max(1, math.ceil(n_tiles / cols))


def sheet_size(n_tiles: int, tile: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of n tiles."""
    cols, rows = grid(n_tiles, columns)
    return cols * tile, rows * (tile + CAPTION)


def _crop_box(bbox: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0)
    pad = max(4, int(MARGIN * side))
    half = side // 2 + pad
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return max(0, cx - half), max(0, cy - half), min(w, cx + half + 1), min(h, cy + half + 1)


def outline(region: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the region's boundary, 2 px thick."""
    inner = region & ~ndimage.binary_erosion(region, iterations=2, border_value=0)
    return inner


def render_tile(t: Tile, tile: int, color: tuple[int, int, int]) -> Image.Image:
    """One tile x tile image (letterboxed on the background), outline drawn."""
    h, w = t.region.shape
    if t.full:
        x0, y0, x1, y1 = 0, 0, w, h
    else:
        if t.bbox is None:
            ys, xs = np.nonzero(t.region)
            t.bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, w, h)
        x0, y0, x1, y1 = _crop_box(t.bbox, h, w)
    crop = t.image[y0:y1, x0:x1]
    reg = t.region[y0:y1, x0:x1]
    scale = tile / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    img = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR)).copy()
    reg = np.asarray(Image.fromarray(reg.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    img[outline(reg)] = color
    canvas = Image.new("RGB", (tile, tile), BACKGROUND)
    canvas.paste(Image.fromarray(img), ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return canvas


def sheet_image(query: Tile, hits: list[Tile], tile: int = 160, columns: int = 6) -> tuple[Image.Image, dict]:
    """The contact sheet in memory; returns (image, {'size': (w, h), 'tiles': n, 'columns', 'rows', 'tile'})."""
    tiles = [(query, QUERY_OUTLINE)] + [(h, HIT_OUTLINE) for h in hits]
    cols, rows = grid(len(tiles), columns)
    sheet = Image.new("RGB", sheet_size(len(tiles), tile, columns), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (t, color) in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = c * tile, r * (tile + CAPTION)
        sheet.paste(render_tile(t, tile, color), (x, y))
        draw.text((x + 3, y + tile + 3), t.caption[: max(8, tile // 6)], fill=TEXT, font=font)
    return sheet, {"size": list(sheet.size), "tiles": len(tiles), "columns": cols, "rows": rows, "tile": tile}


def render_sheet(query: Tile, hits: list[Tile], path: str | os.PathLike, tile: int = 160, columns: int = 6) -> dict:
    """Write the PNG atomically; returns {'size': (w, h), 'tiles': n, 'columns', 'rows', 'tile'}."""
    sheet, info = sheet_image(query, hits, tile, columns)
    with atomic_open(Path(path), "wb") as fh:
        sheet.save(fh, format="PNG")
    return info
