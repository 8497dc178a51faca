"""The paper's Fig. 4 for any sample: image | SLIC boundaries | FH boundaries, side by side.

``superpixel_figure`` draws given label maps; ``show_superpixels`` fetches them first, either
from shards (the maps the pretraining job will read) or by computing them on the fly from a
layout (with ``glocon.data.superpixels``). Backgrounds of the boundaries come from
``skimage.segmentation.mark_boundaries``; the picture is assembled with PIL (no display
needed) and written atomically.
"""

from __future__ import annotations

import difflib
import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import mark_boundaries

from glocon.data.schema import Sample
from glocon.data.superpixels import SuperpixelConfig, superpixels
from glocon.errors import DataError
from glocon.io import atomic_write_bytes

GAP = 4  # white px between panels
LABEL_H = 22  # caption strip above the panels
TITLE_H = 22  # extra strip when a title is given
MIN_PANEL = 256  # small images are enlarged (nearest, integer factor) so boundaries stay readable
BOUNDARY_COLOR = (1.0, 1.0, 0.0)  # yellow, as in Fig. 4


def panel_scale(height: int, width: int, min_panel: int = MIN_PANEL) -> int:
    """Integer enlargement so the longer side reaches ``min_panel`` px (1 for large images)."""
    return max(1, math.ceil(min_panel / max(height, width)))


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font without sizes
        return ImageFont.load_default()


def _boundaries(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 + (H, W) labels -> (H, W, 3) uint8 with segment boundaries marked."""
    marked = mark_boundaries(image, labels, color=BOUNDARY_COLOR, mode="inner")
    return np.clip(np.round(marked * 255.0), 0, 255).astype(np.uint8)


def superpixel_figure(
    image: np.ndarray,
    slic: np.ndarray,
    fh: np.ndarray,
    out_path: str | os.PathLike,
    title: str | None = None,
    min_panel: int = MIN_PANEL,
) -> Path:
    """Write the Fig. 4 picture as PNG. image (H, W, 3) uint8; slic, fh (H, W) int label maps.

    Size: width 3 * s * W + 2 * GAP, height s * H + LABEL_H (+ TITLE_H with a title), where
    s = ``panel_scale(H, W, min_panel)``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"superpixel figure: image must be (H, W, 3), got shape {image.shape}")
    image = image.astype(np.uint8)
    h, w = image.shape[:2]
    for name, labels in (("slic", slic), ("fh", fh)):
        if np.asarray(labels).shape != (h, w):
            raise DataError(f"superpixel figure: {name} label map has shape {np.asarray(labels).shape}, expected the image's {(h, w)}")
    s = panel_scale(h, w, min_panel)

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.asarray(a), s, axis=0), s, axis=1)

    big = up(image)
    panels = [big, _boundaries(big, up(slic)), _boundaries(big, up(fh))]
    captions = ["image", f"SLIC ({len(np.unique(slic))} segments)", f"FH ({len(np.unique(fh))} segments)"]

    top = LABEL_H + (TITLE_H if title else 0)
    ph, pw = big.shape[:2]
    canvas = Image.new("RGB", (3 * pw + 2 * GAP, ph + top), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        x = i * (pw + GAP)
        canvas.paste(Image.fromarray(panel), (x, top))
        draw.text((x + 4, top - LABEL_H + 3), caption, fill=(0, 0, 0), font=font)

    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return atomic_write_bytes(out_path, buf.getvalue())


# ----------------------------------------------------------------------------- sources


def sample_from_shards(source, key: str) -> Sample:
    """Look ``key`` up in shards: anything ``glocon.data.shardset.ShardSet.open`` takes (a list of
    .tar paths, one .tar, a shard folder or its manifest.json, a glob). With a manifest, by its
    index (which checks shards against it); without one, the tars' headers are scanned."""
    from glocon.data.shardset import ShardSet

    return ShardSet.open(source).get(key)


def _resize_longest(image: Image.Image, longest_side: int | None) -> Image.Image:
    if not longest_side:
        return image
    w, h = image.size
    f = longest_side / max(w, h)
    return image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)


def sample_from_layout(layout_cfg, key: str, cfg: SuperpixelConfig | None = None, longest_side: int | None = None):
    """(image, slic, fh) for one record of a layout, superpixels computed now with ``cfg``."""
    from glocon.data.layouts import open_layout

    records = open_layout(layout_cfg)
    by_key = {r.key: r for r in records}
    if key not in by_key:
        near = difflib.get_close_matches(key, list(by_key), n=3)
        raise DataError(f"key {key!r} not in the {layout_cfg.layout} layout ({len(records)} records); nearest: {near}")
    image = np.asarray(_resize_longest(by_key[key].load_image().convert("RGB"), longest_side))
    slic, fh = superpixels(image, cfg or SuperpixelConfig())
    return image, slic, fh


def show_superpixels(
    source,
    key: str,
    out_path: str | os.PathLike,
    cfg: SuperpixelConfig | None = None,
    longest_side: int | None = None,
) -> Path:
    """Fig. 4 for sample ``key``.

    source: shards (list of .tar paths, shard folder or manifest.json: the stored maps are shown,
    ``cfg`` is not used) or a ``LayoutConfig`` (maps computed now with ``cfg``, on the image
    resized to ``longest_side`` if given, as the shard job would).
    """
    from glocon.data.layouts import LayoutConfig

    if isinstance(source, LayoutConfig):
        image, slic, fh = sample_from_layout(source, key, cfg, longest_side)
    elif isinstance(source, (str, os.PathLike, list, tuple)):
        sample = sample_from_shards(source, key)
        image, slic, fh = sample.image, sample.slic, sample.fh
    else:
        raise DataError(f"show_superpixels: source must be shard paths, a shard folder/manifest or a LayoutConfig, got {type(source).__name__}")
    return superpixel_figure(image, slic, fh, out_path, title=key)


__all__: Sequence[str] = ("superpixel_figure", "show_superpixels", "sample_from_shards", "sample_from_layout", "panel_scale")
