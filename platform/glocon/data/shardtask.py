"""One sample, one shard: what a ``make_shards`` Ray task runs.

One task builds one shard: decode, convert to RGB, resize to the configured longest side (the
mask with nearest neighbour), SLIC + Felzenszwalb on the resized image, encode with the one sample
schema (``glocon.data.schema``), and write the tar with fixed metadata (mtime 0, fixed owner and
mode) to a temp file that is renamed into place. So a shard's bytes depend only on its records and
the config. After its tar the task writes ``_done/{shard}.json``, the shard's done-record (sha256,
sizes, keys, the classes of every sample, what was rejected), which a rerun checks before it
reuses the shard.

Bad input (an unreadable or truncated image, a mask whose size differs from its image, ...) is
not fatal here: it becomes a rejection with its path and a reason that names every file it
concerns (the image, and the mask when the mask is at fault).

Images are only shrunk to ``longest_side``; a smaller image keeps its size (and its mask is not
resampled) unless ``upscale=true``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from glocon.data.imageio import check_mask
from glocon.data.record import Record, class_pixels
from glocon.data.schema import Sample, encode_sample
from glocon.data.shardplan import WRITER_VERSION, BuildSpec, ShardPlan
from glocon.data.superpixels import SuperpixelConfig, superpixels
from glocon.errors import DataError
from glocon.io import atomic_open, atomic_write_json, sha256_file
from glocon.ops import IGNORE_INDEX

DONE_DIR = "_done"
# Fixed tar metadata: with these, a shard's bytes depend only on its samples.
TAR_USER = TAR_GROUP = "glocon"
TAR_MODE = 0o444
TAR_MTIME = 0


class Rejected(Exception):
    """A record that cannot become a sample; the message is the reason."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no message"
    return text if isinstance(exc, DataError) else f"{type(exc).__name__}: {text}"


def resized_size(width: int, height: int, longest_side: int, upscale: bool = False) -> tuple[int, int]:
    """(W, H) scaled so that max(W, H) == longest_side (aspect kept, each side >= 1); a smaller
    image keeps its size unless ``upscale``."""
    if max(width, height) <= longest_side and not upscale:
        return width, height
    scale = longest_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _naming(text: str, *paths: str) -> str:
    """``text``, prefixed with each of ``paths`` it does not already name (a rejection names its files)."""
    missing = [p for p in paths if p and p not in text]
    return f"{', '.join(missing)}: {text}" if missing else text


def _load_image(record: Record) -> Image.Image:
    try:
        image = record.load_image()
        image.load()  # decode now: a truncated file fails here, not in SLIC
        if image.mode != "RGB":
            image = image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise Rejected(_naming(f"unreadable image ({_describe(exc)})", record.source)) from None
    return image


def _load_mask(record: Record, size: tuple[int, int]) -> np.ndarray | None:
    if record.load_mask is None:
        return None
    mask_file = str(record.extra.get("mask_source", ""))
    try:
        mask = np.asarray(record.load_mask())
    except Exception as exc:
        raise Rejected(_naming(f"unreadable mask ({_describe(exc)})", mask_file)) from None
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise Rejected(_naming(f"mask must be a (H, W) uint8 array of class ids, got shape {mask.shape} dtype {mask.dtype}", mask_file))
    w, h = size
    if mask.shape != (h, w):
        where = f"mask {mask_file}, image {record.source}" if mask_file else f"image {record.source}"
        raise Rejected(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {w}x{h} ({where})")
    try:  # ids beyond the layout's classes (37 in a VOC mask) would otherwise be indexed as a class
        check_mask(size, mask, f"mask {mask_file or record.source}", record.extra.get("max_class"))
    except DataError as exc:
        raise Rejected(str(exc)) from None
    return mask


def _json_safe(extra: dict) -> dict:
    try:
        json.dumps(extra)
        return dict(extra)
    except TypeError:
        return {str(k): (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in extra.items()}


def sample_classes(mask: np.ndarray, extra: dict) -> dict[int, int]:
    """Pixels per class id at the original resolution. FSS binary masks: 1 means ``extra['binary_class']``."""
    pixels = class_pixels(mask, ignore_index=IGNORE_INDEX)
    if "binary_class" in extra:
        n = pixels.get(1, 0)
        return {int(extra["binary_class"]): n} if n else {}
    return pixels


def make_sample(record: Record, spec: BuildSpec) -> Sample:
    """Record -> Sample: decode, resize (image bicubic, mask nearest), superpixels on the resized image.

    Raises ``Rejected`` (with the reason) for input that cannot become a sample.
    """
    image = _load_image(record)
    w, h = image.size
    size = resized_size(w, h, spec.longest_side, spec.upscale)
    # min_side guards what is stored and fed to superpixels: the resized image (a 10x20000 strip
    # passes at its own size but becomes 1x256)
    if min(size) < spec.min_side:
        after = "" if size == (w, h) else f", {size[0]}x{size[1]} after resizing to longest_side={spec.longest_side}"
        raise Rejected(f"image {record.source} is {w}x{h}{after}, smaller than min_side={spec.min_side}")
    mask = _load_mask(record, (w, h))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.uint8)
    meta: dict[str, Any] = {
        "key": record.key,
        "source": record.source,
        "layout": record.layout,
        "orig_size": [int(h), int(w)],
        # Counted at the original resolution, where PFENet's 2x32x32 rule is defined.
        "classes": {},
        "extra": _json_safe(record.extra),
    }
    resized_mask = None
    if mask is not None:
        meta["classes"] = {str(c): n for c, n in sorted(sample_classes(mask, record.extra).items())}
        resized_mask = mask if size == (w, h) else np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    slic, fh = superpixels(pixels, _superpixel_cfg(spec))
    return Sample(key=record.key, image=pixels, slic=slic, fh=fh, meta=meta, mask=resized_mask)


def _superpixel_cfg(spec: BuildSpec) -> SuperpixelConfig:
    return SuperpixelConfig.model_validate(spec.superpixels)


def done_path(out_dir: Path, name: str) -> Path:
    return out_dir / DONE_DIR / f"{name}.json"


def open_tar_writer(fileobj: IO[bytes]):
    """A ``webdataset.TarWriter`` with fixed metadata, so equal samples give equal bytes."""
    import webdataset as wds

    return wds.TarWriter(fileobj, user=TAR_USER, group=TAR_GROUP, mode=TAR_MODE, mtime=TAR_MTIME, encoder=False)


def build_shard(plan: ShardPlan, out_dir: str, spec: BuildSpec) -> dict[str, Any]:
    """Write one shard (temp file, then rename) and its done-record; return the done-record.

    ``out_dir`` is absolute: a Ray worker's cwd is not the driver's.
    """
    out = Path(out_dir)
    path = out / plan.name
    keys: list[str] = []
    classes: dict[str, dict[str, int]] = {}
    rejected: list[dict[str, str]] = []
    t0 = time.perf_counter()
    with atomic_open(path, "wb") as fh:
        with open_tar_writer(fh) as writer:
            for record in plan.records:
                try:
                    sample = make_sample(record, spec)
                except Rejected as exc:
                    rejected.append({"key": record.key, "path": record.source, "reason": str(exc), "shard": plan.name})
                    continue
                writer.write(encode_sample(sample, spec.jpeg_quality))
                keys.append(record.key)
                classes[record.key] = sample.meta["classes"]
    record = {
        "writer": WRITER_VERSION,
        "name": plan.name,
        "fingerprint": plan.fingerprint,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "count": len(keys),
        "keys": keys,
        "classes": classes,
        "rejected": rejected,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(done_path(out, plan.name), record)
    return record


def read_done(out_dir: Path, plan: ShardPlan, verify_sha: bool = True) -> dict[str, Any] | None:
    """The shard's done-record if the shard on disk is finished and matches it, else None."""
    dpath, tpath = done_path(out_dir, plan.name), out_dir / plan.name
    try:
        record = json.loads(dpath.read_text(encoding="utf-8"))
        if record.get("fingerprint") != plan.fingerprint or record.get("name") != plan.name:
            return None
        if tpath.stat().st_size != record["bytes"]:
            return None
        if verify_sha and sha256_file(tpath) != record["sha256"]:
            return None
        if record["count"] != len(record["keys"]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record
