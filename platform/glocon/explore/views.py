"""A sample drawn for the page: image, optional mask tint and SLIC / FH boundaries, optional query
outline, as PNG bytes. Overlays are drawn at the shard's resolution, then the picture is enlarged
by a whole factor (nearest), so each image pixel stays a crisp block a click can address."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from glocon.bank.render import QUERY_OUTLINE, outline
from glocon.data.schema import Sample
from glocon.ops import IGNORE_INDEX

OVERLAYS = ("mask", "slic", "fh")
BOUNDARY = {"slic": (255, 255, 0), "fh": (0, 255, 255)}  # yellow as in Fig. 4; FH cyan so both can show


def class_colour(cls: int) -> np.ndarray:
    """A fixed, bright colour per class id (the same on every page)."""
    rng = np.random.default_rng(1000 + int(cls))
    return rng.integers(60, 256, size=3).astype(np.float32)


def display_scale(h: int, w: int, display: int) -> int:
    return max(1, math.ceil(display / max(h, w)))


def _tint(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32)
    for cls in np.unique(mask):
        if cls == 0:
            continue
        where = mask == cls
        colour = np.array([40, 40, 40], np.float32) if cls == IGNORE_INDEX else class_colour(int(cls))
        out[where] = (1 - alpha) * out[where] + alpha * colour
    return out.clip(0, 255).astype(np.uint8)


def compose(sample: Sample, overlays: set[str], region: np.ndarray | None = None, scale: int = 1) -> np.ndarray:
    """(H*scale, W*scale, 3) uint8. region: (H, W) bool, outlined in the query colour."""
    img = sample.image.copy()
    if "mask" in overlays and sample.mask is not None:
        img = _tint(img, sample.mask)
    for method in ("slic", "fh"):
        if method in overlays:
            img[find_boundaries(sample.label_map(method), mode="inner")] = BOUNDARY[method]
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    if region is not None:
        big = np.repeat(np.repeat(region, scale, axis=0), scale, axis=1) if scale > 1 else region
        img[outline(big)] = QUERY_OUTLINE
    return img


def png(array: np.ndarray, longest: int | None = None) -> bytes:
    """PNG bytes; ``longest``: resize (bilinear) so the longer side has that many pixels (thumbnails)."""
    im = Image.fromarray(array)
    if longest is not None and max(im.size) != longest:
        s = longest / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # speed over size: the page is local
    return buf.getvalue()


def parse_overlays(text: str | None) -> set[str]:
    wanted = {t for t in (text or "").split(",") if t}
    unknown = wanted - set(OVERLAYS)
    if unknown:
        from glocon.explore.folders import ExploreError

        raise ExploreError(400, f"overlay {sorted(unknown)[0]!r}: expected some of {', '.join(OVERLAYS)} (comma-separated)")
    return wanted
