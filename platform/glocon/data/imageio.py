"""Robust decoding of images and masks, with errors that name the file and what was expected.

``load_rgb(path, apply_exif)`` returns an RGB ``PIL.Image`` (8 bits per channel) whatever the
stored mode: CMYK, grayscale (``L``, ``1``), 16/32-bit grayscale (``I;16``, ``I``), float
(``F``), palette (``P``, with or without transparency), and alpha modes (``RGBA``, ``LA``, ``PA``).
Transparent pixels are composited over :data:`ALPHA_BACKGROUND`: dropping the alpha channel, as
``Image.convert("RGB")`` does, would reveal whatever colour the encoder left under it.

EXIF orientation is applied only when asked. Plain folders apply it (a phone photo should stand
upright); annotated layouts never do, because their masks lie on the stored pixel grid.

``load_record(record)`` decodes a layout record and checks its mask against its image.

``load_mask(path)`` returns the (H, W) uint8 class ids stored in a palette or grayscale PNG,
losslessly: for a palette PNG the indices, not the colours they stand for.

Every failure is a :class:`~glocon.errors.DataError` naming the path: an empty file, a file that is
not an image (text posing as a PNG), a truncated file, a decompression bomb (more pixels than
``max_pixels``), a mask of the wrong size (:func:`check_mask`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from glocon.ops import IGNORE_INDEX
from glocon.errors import DataError

# PIL's own default (about 89.5 megapixels, ~1 GB of RGBA). PIL only warns above it and raises
# above twice it; we raise above it, and the limit is a config value (LayoutConfig.max_image_pixels).
MAX_IMAGE_PIXELS: int = 89_478_485
ALPHA_BACKGROUND = (255, 255, 255)
IMAGE_KINDS = "a JPEG, PNG or WebP image"

_PIL_LIMIT_LOCK = threading.Lock()


def _describe_head(path: Path, n: int = 16) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
    except OSError:
        return ""
    return f"; it starts with {head!r}"


@contextlib.contextmanager
def _pil_limit(max_pixels: int | None) -> Iterator[None]:
    """Let ``Image.open`` accept up to ``max_pixels`` (we enforce the limit ourselves, after).

    PIL checks its module-global ``MAX_IMAGE_PIXELS`` inside ``Image.open`` (a warning above it,
    an error above twice it). Its warning is silenced here; only when our limit is above PIL's
    error threshold is the global raised, for the duration of the header read, under a lock.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pil = Image.MAX_IMAGE_PIXELS
        if pil is not None and (max_pixels is None or max_pixels >= 2 * pil):
            with _PIL_LIMIT_LOCK:
                Image.MAX_IMAGE_PIXELS = max_pixels
                try:
                    yield
                finally:
                    Image.MAX_IMAGE_PIXELS = pil
        else:
            yield


def open_image(
    path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS, expected: str = IMAGE_KINDS
) -> Image.Image:
    """Open and fully decode ``path``; raise :class:`DataError` naming it when that is not possible."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {expected})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc}; expected {expected})") from None
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes; expected {expected})")
    try:
        with _pil_limit(max_pixels):
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: decompression bomb refused ({exc}; expected at most {max_pixels} pixels)") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a decodable image (expected {expected}){_describe_head(path)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt image header ({exc}; expected {expected})") from None
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise DataError(
            f"{path}: decompression bomb refused: {w}x{h} = {w * h} pixels, expected at most {max_pixels} "
            "(raise data.max_image_pixels to accept it)"
        )
    if w < 1 or h < 1:
        raise DataError(f"{path}: image has size {w}x{h} (expected at least 1x1)")
    try:
        im.load()  # decode now, so a truncated file fails here, naming the path
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt image data ({exc}; expected {expected})") from None
    return im


def _composite(im: Image.Image) -> Image.Image:
    """RGBA -> RGB over ALPHA_BACKGROUND."""
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit RGB, scaled (``convert`` would clip at 255)."""
    a = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255):
        # 16-bit data (PNG stores 16-bit gray as I;16 or I): map 0..65535 onto 0..255.
        a8 = np.round(np.clip(a.astype(np.float64), 0, 65535) / 257.0)
    else:
        # 'I' holding 8-bit values, or 'F': clip to the 8-bit range.
        a8 = np.round(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 255))
    return Image.fromarray(a8.astype(np.uint8), mode="L").convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB uint8, respecting alpha, palette transparency and bit depth."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        return _composite(im) if "transparency" in im.info else im.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("L", "RGB") and "transparency" in im.info):
        return _composite(im)
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(im)
    # L, 1, CMYK, YCbCr, ...: PIL's conversions are correct for these (CMYK without an ICC profile
    # is converted naively; PIL's JPEG plugin already un-inverts Adobe CMYK).
    return im.convert("RGB")


def load_rgb(
    path: str | os.PathLike,
    apply_exif: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode ``path`` as an RGB uint8 image. ``apply_exif``: rotate/flip per the EXIF orientation tag.

    Raises DataError (naming the path) for an empty, non-image, truncated or oversized file.
    """
    im = open_image(path, max_pixels=max_pixels)
    if apply_exif:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:  # a malformed EXIF block must not lose the image; report it clearly
            raise DataError(f"{path}: malformed EXIF orientation ({exc})") from None
    return to_rgb(im)


def load_mask(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W) uint8 class ids from a palette or grayscale PNG, losslessly (palette -> indices).

    Accepted: ``P`` (indices), ``L``, ``1`` (0/1), ``I``/``I;16`` with values <= 255, and ``RGB``
    whose three channels are equal (grayscale saved as RGB). Anything else is a DataError, since a
    colour mask cannot be read as class ids without knowing its palette.
    """
    expected = "a single-channel palette or grayscale PNG of class ids"
    im = open_image(path, max_pixels=max_pixels, expected=expected)
    mode = im.mode
    if mode in ("P", "L"):
        return np.array(im, dtype=np.uint8)  # P: np.asarray gives the indices, not the colours
    if mode == "1":
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I"):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"{path}: mask values span {int(a.min())}..{int(a.max())}, expected class ids in 0..255")
        return a.astype(np.uint8)
    if mode == "RGB":
        a = np.asarray(im)
        if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]):
            return np.ascontiguousarray(a[..., 0])
    raise DataError(f"{path}: mask has mode {mode}, expected {expected}")


def check_mask(
    image_size: tuple[int, int],
    mask: np.ndarray,
    where: str,
    max_class: int | None = None,
) -> np.ndarray:
    """Check a decoded mask against its image; return it. Raise DataError naming ``where``.

    image_size: PIL's ``(width, height)`` of the image. mask: (H, W) uint8. ``max_class``: when
    given, every id must be in 0..max_class or be IGNORE_INDEX (255).
    """
    w, h = image_size
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"{where}: mask has shape {mask.shape}, expected (H, W) = ({h}, {w})")
    if mask.dtype != np.uint8:
        raise DataError(f"{where}: mask has dtype {mask.dtype}, expected uint8 class ids")
    if mask.shape != (h, w):
        raise DataError(
            f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {w}x{h}; "
            "expected the same size"
        )
    if max_class is not None:
        bad = np.unique(mask[(mask > max_class) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise DataError(
                f"{where}: mask holds class ids {bad[:10].tolist()} out of range "
                f"(expected 0..{max_class} or {IGNORE_INDEX} = ignore)"
            )
    return mask


def check_min_side(image_size: tuple[int, int], where: str, min_side: int) -> None:
    """Raise DataError when the image is smaller than ``min_side`` on a side (e.g. a 1x1 image).

    Decoding accepts any size; callers that need room (superpixels, crops) call this with their
    own minimum, so a tiny image is rejected with a reason instead of failing deep inside.
    """
    w, h = image_size
    if min(w, h) < min_side:
        raise DataError(f"{where}: image is {w}x{h}, expected at least {min_side} px on each side")


def image_size(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) from the header only (no decode). Raises DataError like ``open_image``."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise DataError(f"{path}: missing or empty file (expected {IMAGE_KINDS})")
    try:
        with _pil_limit(max_pixels), Image.open(path) as im:
            return im.size
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read the image header ({exc})") from None


def load_record(record, min_side: int = 1) -> tuple[Image.Image, np.ndarray | None]:
    """Decode a :class:`~glocon.data.record.Record`: (RGB image, checked (H, W) uint8 mask or None).

    The mask is checked against the image (same size, uint8, ids within ``record.extra["max_class"]``
    when the layout states it). Every failure is a DataError naming the record's key and file, which
    the shard writer turns into a ``rejected`` entry.
    """
    image = record.load_image()
    check_min_side(image.size, f"{record.key} ({record.source})", min_side)
    if record.load_mask is None:
        return image, None
    where = f"{record.key} (mask {record.extra.get('mask_source', '?')})"
    try:
        mask = record.load_mask()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001  # a loader bug or an unexpected decoder error: still name the record
        raise DataError(f"{where}: cannot load the mask ({type(exc).__name__}: {exc})") from None
    return image, check_mask(image.size, mask, where, record.extra.get("max_class"))
