"""One definition of a shard sample, used by the writer and by every reader.

A sample in a WebDataset tar is a group of members sharing a key:

==============  =====================================================================
member          content
==============  =====================================================================
``jpg``         the image, RGB, re-encoded at the configured longest side
``mask.png``    optional: (H, W) uint8 class ids, 255 = ignore; 8-bit grayscale PNG
``slic.png``    (H, W) SLIC label map, contiguous from 0; 16-bit grayscale PNG
``fh.png``      (H, W) Felzenszwalb label map, contiguous from 0; 16-bit grayscale PNG
``json``        metadata: key, source, orig_size, size, classes {id: pixels}, layout
==============  =====================================================================

Masks and label maps are PNG, which is lossless, and decoded here with PIL as integer arrays.
webdataset's ``.decode("rgb")`` would turn them into float RGB and lose the ids, so readers
never use it on these members.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from PIL import Image

from glocon.errors import DataError

IMAGE = "jpg"
MASK = "mask.png"
SLIC = "slic.png"
FH = "fh.png"
META = "json"
REQUIRED = (IMAGE, SLIC, FH, META)
LABEL_MAPS = ("slic", "fh")
META_FIELDS = ("key", "source", "orig_size", "size", "classes")
MAX_LABEL = 65535  # 16-bit PNG

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_\-]")


def tar_key(key: str) -> str:
    """A key webdataset can group by: no dots (they start the extension) and no slashes."""
    return _KEY_SAFE.sub("_", key)


@dataclass
class Sample:
    """A decoded sample. image (H, W, 3) uint8; mask (H, W) uint8 or None; slic/fh (H, W) int32."""

    key: str
    image: np.ndarray
    slic: np.ndarray
    fh: np.ndarray
    meta: dict[str, Any]
    mask: np.ndarray | None = None
    shard: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def label_map(self, method: str) -> np.ndarray:
        if method not in LABEL_MAPS:
            raise DataError(f"patch method {method!r}: expected one of {LABEL_MAPS}")
        return self.slic if method == "slic" else self.fh

    @property
    def classes(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.meta.get("classes", {}).items()}


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=None).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def encode_label_map(labels: np.ndarray, name: str = "label map") -> bytes:
    if labels.ndim != 2:
        raise DataError(f"{name}: expected a (H, W) array, got shape {labels.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > MAX_LABEL:
        raise DataError(f"{name}: ids must lie in [0, {MAX_LABEL}], got [{labels.min()}, {labels.max()}]")
    return _png_bytes(labels.astype(np.uint16), "I;16")


def encode_mask(mask: np.ndarray) -> bytes:
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"mask: expected (H, W) uint8, got shape {mask.shape} dtype {mask.dtype}")
    return _png_bytes(mask, "L")


def encode_image(image: np.ndarray, quality: int = 95) -> bytes:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"image: expected (H, W, 3) uint8, got shape {image.shape} dtype {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def encode_sample(sample: Sample, quality: int = 95) -> dict[str, Any]:
    """Sample -> the member dict ``webdataset.TarWriter.write`` takes (bytes values)."""
    h, w = sample.image.shape[:2]
    for name, arr in (("slic", sample.slic), ("fh", sample.fh), ("mask", sample.mask)):
        if arr is not None and arr.shape != (h, w):
            raise DataError(f"sample {sample.key!r}: {name} has shape {arr.shape}, expected the image's {(h, w)}")
    meta = dict(sample.meta)
    meta.setdefault("key", sample.key)
    meta["size"] = [int(h), int(w)]
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise DataError(f"sample {sample.key!r}: metadata lacks {missing}")
    out: dict[str, Any] = {
        "__key__": tar_key(sample.key),
        IMAGE: encode_image(sample.image, quality),
        SLIC: encode_label_map(sample.slic, "slic"),
        FH: encode_label_map(sample.fh, "fh"),
        META: json.dumps(meta, sort_keys=True).encode("utf-8"),
    }
    if sample.mask is not None:
        out[MASK] = encode_mask(sample.mask)
    return out


def _where(shard: str, key: str, member: str) -> str:
    return f"shard {shard or '?'}, sample {key!r}, field {member!r}"


def _decode_png(data: bytes, where: str, expect: tuple[str, ...]) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # PIL raises many types for corrupt data
        raise DataError(f"{where}: not a readable PNG ({exc})") from None
    if img.mode not in expect:
        raise DataError(f"{where}: expected PNG mode {' or '.join(expect)}, got {img.mode}")
    return np.asarray(img)


def decode_sample(raw: Mapping[str, Any], shard: str = "") -> Sample:
    """The raw member dict of one tar sample -> a validated ``Sample``; errors name shard, key, field."""
    key = str(raw.get("__key__", "?"))
    shard = shard or str(raw.get("__url__", ""))
    for member in REQUIRED:
        if member not in raw:
            raise DataError(f"{_where(shard, key, member)}: missing (a sample needs {', '.join(REQUIRED)})")
    try:
        meta = json.loads(bytes(raw[META]).decode("utf-8"))
    except Exception as exc:
        raise DataError(f"{_where(shard, key, META)}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{_where(shard, key, META)}: expected a JSON object")
    for f in META_FIELDS:
        if f not in meta:
            raise DataError(f"{_where(shard, key, META)}: lacks {f!r}")
    try:
        img = Image.open(io.BytesIO(raw[IMAGE]))
        img = img.convert("RGB")
    except Exception as exc:
        raise DataError(f"{_where(shard, key, IMAGE)}: not a readable image ({exc})") from None
    image = np.asarray(img)
    h, w = image.shape[:2]
    if list(meta["size"]) != [h, w]:
        raise DataError(f"{_where(shard, key, META)}: size {meta['size']} but the image is {[h, w]}")
    maps = {}
    for name, member in (("slic", SLIC), ("fh", FH)):
        arr = _decode_png(raw[member], _where(shard, key, member), ("I;16", "I;16B", "I", "L"))
        if arr.shape != (h, w):
            raise DataError(f"{_where(shard, key, member)}: shape {arr.shape}, expected {(h, w)}")
        maps[name] = arr.astype(np.int32)
    mask = None
    if MASK in raw:
        mask = _decode_png(raw[MASK], _where(shard, key, MASK), ("L",))
        if mask.shape != (h, w):
            raise DataError(f"{_where(shard, key, MASK)}: shape {mask.shape}, expected {(h, w)}")
        mask = mask.astype(np.uint8)
    return Sample(key=meta["key"], image=image, slic=maps["slic"], fh=maps["fh"], meta=meta, mask=mask, shard=shard)
