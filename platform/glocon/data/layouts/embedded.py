"""The embedded default data set: few-shot segmentation that needs no download.

20 object classes (ids 1..20) are the 5 x 4 combinations of a SHAPE family (ellipse,
rectangle, triangle, star, cross) and a TEXTURE family (stripes, checker, dots, blotches;
each texture family also has its own hue range). Classes are ordered so that every
PASCAL-5i-style fold (fold i = classes 5i+1..5i+5) holds all five shapes and a mix of
textures: a novel class shares its shape with some base classes and its texture with others,
so only the combination names it.

Objects are drawn with hard edges onto backgrounds cut from the natural photos that
scikit-image ships inside its wheel (``glocon.data.layouts._embedded_draw``: the pixels).

Masks are exact: 0 = background, the class id wherever an object's pixels were drawn (later
objects occlude earlier ones in both image and mask). With ``embedded.ignore_border = b > 0``
the pixels within b px of a label change become 255, like VOC's border; the default is 0
because the boundaries here are exact.

Everything is deterministic from ``embedded.seed``: the class plan comes from
``default_rng(seed)`` and image i from ``default_rng([seed, i])``, so any image can be
re-rendered alone. ``data.split`` picks one of two disjoint image sets drawn the same way:
``train`` (keys ``embedded/NNNNNN``) and ``val`` (keys ``embedded-val/NNNNNN``, from the streams
``[seed, VAL_STREAM]`` and ``[seed, VAL_STREAM, i]``), so that pretraining and few-shot fit can
see one set and evaluation the other, as the real benchmarks' train / val splits do.

Images (PNG, lossless) and masks (8-bit PNG) are written atomically to
``<cache>/embedded-<hash>/`` (cache: ``embedded.cache_dir``, else ``$GLOCON_CACHE``, else
``runs/cache``), keyed by a hash of everything that changes the pixels, and reused when
``index.json`` (written last) and every file are present.

Sizes: objects cover ``object_area`` of the image, but never less than 1.2 x
``min_class_pixels`` while that fits (it stops fitting below ~128 px with the default 2048;
lower ``min_class_pixels`` for small images). Every class then needs >= 6 images
(5-shot support + query), which the default (400 images, ~40 objects per class) meets many
times over; ``records`` warns when a configuration does not.
"""

from __future__ import annotations

import functools
import io
import json
import os
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from glocon.data.folds import embedded_fold_classes
from glocon.data.layouts._embedded_draw import NUM_CLASSES, SHAPES, TEXTURES, Spec, _backgrounds, class_shape_texture, plan_classes, render
from glocon.data.record import Record, class_pixels, classes_present
from glocon.errors import ConfigError
from glocon.io import atomic_write_bytes, atomic_write_json

N_FOLDS = 4
SHOTS_NEEDED = 6  # a 5-shot episode needs 5 support images + 1 query of the class
SPLITS = ("train", "val")
KEY_PREFIX = {"train": "embedded", "val": "embedded-val"}


CLASS_NAMES = {
    c: f"{TEXTURES[class_shape_texture(c)[1]]}-{SHAPES[class_shape_texture(c)[0]]}"
    for c in range(1, NUM_CLASSES + 1)
}


def fold_classes(fold: int) -> list[int]:
    """PASCAL-5i rule: fold i holds classes 5i+1..5i+5 (the one definition is in glocon.data.folds)."""
    return embedded_fold_classes(fold)


# ----------------------------------------------------------------------------- configuration


def spec_from(cfg) -> Spec:
    """LayoutConfig -> validated Spec. Errors name the ``embedded.*`` field."""
    e = cfg.embedded
    if e.n_images < 1:
        raise ConfigError(f"embedded.n_images: expected >= 1, got {e.n_images}")
    if e.size < 32:
        raise ConfigError(f"embedded.size: expected >= 32 px, got {e.size}")
    lo, hi = e.objects_per_image
    if not 1 <= lo <= hi:
        raise ConfigError(f"embedded.objects_per_image: expected 1 <= min <= max, got {list(e.objects_per_image)}")
    a_lo, a_hi = e.object_area
    if not 0 < a_lo <= a_hi <= 0.5:
        raise ConfigError(f"embedded.object_area: expected 0 < min <= max <= 0.5, got {list(e.object_area)}")
    if e.ignore_border < 0:
        raise ConfigError(f"embedded.ignore_border: expected >= 0, got {e.ignore_border}")
    if cfg.split not in SPLITS:
        raise ConfigError(f"data.split: the embedded layout has the splits {list(SPLITS)}, got {cfg.split!r}")
    area = float(e.size * e.size)
    # An unoccluded object should count for its image (PFENet's min-pixels rule), as far as it fits.
    floor = min(1.2 * cfg.min_class_pixels, 0.3 * area)
    px_lo = max(a_lo * area, floor)
    px_hi = min(max(a_hi * area, 1.5 * px_lo), 0.45 * area)
    return Spec(
        n_images=e.n_images,
        size=e.size,
        seed=e.seed,
        objects_per_image=(lo, hi),
        area_px=(round(px_lo, 3), round(px_hi, 3)),
        ignore_border=e.ignore_border,
        backgrounds=tuple(name for name, _ in _backgrounds()),
        split=cfg.split,
    )


def cache_root(cfg) -> Path:
    if cfg.embedded.cache_dir:
        return Path(cfg.embedded.cache_dir)
    return Path(os.environ.get("GLOCON_CACHE") or "runs/cache")


def cache_dir_for(cfg) -> Path:
    """``<cache>/embedded-<hash of the Spec>``."""
    return cache_root(cfg) / f"embedded-{spec_from(cfg).digest()}"


# ----------------------------------------------------------------------------- files


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _name(index: int) -> str:
    return f"{index:06d}"


def _index_ok(folder: Path, spec: Spec) -> dict | None:
    path = folder / "index.json"
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if index.get("digest") != spec.digest() or len(index.get("images", [])) != spec.n_images:
        return None
    for item in index["images"]:
        if not (folder / item["image"]).is_file() or not (folder / item["mask"]).is_file():
            return None
    return index


def generate(cfg, progress=None) -> tuple[Path, dict]:
    """Write (or reuse) the data set for ``cfg``; -> (folder, index). ``progress(n)`` is called per image."""
    spec = spec_from(cfg)
    folder = cache_root(cfg) / f"embedded-{spec.digest()}"
    index = _index_ok(folder, spec)
    if index is not None:
        return folder, index
    plan = plan_classes(spec)
    items = []
    for i, classes in enumerate(plan):
        img_rel, mask_rel = f"images/{_name(i)}.png", f"masks/{_name(i)}.png"
        out = render(i, spec, classes)
        # Files left by an interrupted run are complete (atomic writes) and deterministic: keep them.
        if not (folder / img_rel).is_file():
            atomic_write_bytes(folder / img_rel, _png(out.image))
        if not (folder / mask_rel).is_file():
            atomic_write_bytes(folder / mask_rel, _png(out.mask))
        items.append(
            {
                "key": f"{KEY_PREFIX[spec.split]}/{_name(i)}",
                "image": img_rel,
                "mask": mask_rel,
                "classes": {str(k): v for k, v in class_pixels(out.mask).items()},
                "objects": [
                    {"class_id": o.class_id, "cy": round(o.cy, 2), "cx": round(o.cx, 2), "radius": round(o.radius, 2)}
                    for o in out.objects
                ],
            }
        )
        if progress is not None:
            progress(1)
    index = {
        "digest": spec.digest(),
        "spec": asdict(spec),
        "class_names": {str(c): n for c, n in CLASS_NAMES.items()},
        "folds": {str(f): fold_classes(f) for f in range(N_FOLDS)},
        "images": items,
    }
    atomic_write_json(folder / "index.json", index)  # last: its presence marks the folder complete
    return folder, index


def _load_image(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def _load_mask(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.uint8).copy()


def coverage(index: dict, min_pixels: int) -> dict[int, int]:
    """Class id -> number of images where it covers >= ``min_pixels`` (all 20 ids present)."""
    counts = Counter()
    for item in index["images"]:
        pixels = {int(k): int(v) for k, v in item["classes"].items()}
        counts.update(classes_present(pixels, min_pixels))
    return {c: counts.get(c, 0) for c in range(1, NUM_CLASSES + 1)}


def records(cfg) -> list[Record]:
    """The embedded data set as Records (generated into the cache on first use)."""
    spec = spec_from(cfg)
    folder = cache_dir_for(cfg)
    if _index_ok(folder, spec) is None:
        from glocon.dashboard import Dashboard

        with Dashboard("embedded data", total=spec.n_images, unit="img") as dash:
            dash.log(f"generating {spec.n_images} images of {spec.size} px (seed {spec.seed}) into {folder}")
            folder, index = generate(cfg, progress=dash.advance)
    else:
        folder, index = generate(cfg)  # complete: reads index.json only
    short = {c: n for c, n in coverage(index, cfg.min_class_pixels).items() if n < SHOTS_NEEDED}
    if short:
        worst = dict(sorted(short.items(), key=lambda kv: kv[1])[:5])
        warnings.warn(
            f"embedded layout ({folder}): {len(short)} of {NUM_CLASSES} classes occur in fewer than "
            f"{SHOTS_NEEDED} images with >= {cfg.min_class_pixels} px (class: images, e.g. {worst}), too few "
            f"for 5-shot episodes; raise embedded.n_images or embedded.size, or lower min_class_pixels",
            stacklevel=2,
        )
    out = []
    for item in index["images"]:
        image_path, mask_path = str(folder / item["image"]), str(folder / item["mask"])
        out.append(
            Record(
                key=item["key"],
                source=image_path,
                load_image=functools.partial(_load_image, image_path),
                load_mask=functools.partial(_load_mask, mask_path),
                layout="embedded",
                extra={
                    "classes": {int(k): int(v) for k, v in item["classes"].items()},
                    "mask_source": mask_path,
                    "max_class": NUM_CLASSES,
                },
            )
        )
    return out
