"""COCO 2014 and 2017 in three formats (``cfg.coco_format``), one semantic mask per image.

``cfg.split`` names the image folder with its year: ``train2017``, ``val2014``, ...

Mapping choices (the same 1..80 in all three formats, so a shard's class ids never depend on the
format it came from):

- **instances**: ``annotations/instances_{split}.json`` with images in ``{split}/`` or
  ``images/{split}/``. Category ids (``category_classes``): a JSON whose categories are standard
  COCO things (each id with COCO's name for it) keeps COCO's mapping, the 80 thing ids -> 1..80 in
  COCO's order (1 person .. 80 toothbrush, the ids of COCO-20i), even when it lists only some of
  them; any other JSON (labelme's, a VOC-ids export, a custom set) maps by category name, sorted,
  -> 1..N. Either way a category named like background (``_background_``, ``background``) is 0,
  and the mapping goes into the shard manifest (``class_table``) and is printed. Polygons, compressed RLE and
  uncompressed RLE are rasterised with pycocotools. Instances are painted largest first, so a
  small object lying on a large one stays visible. Crowd regions (``iscrowd=1``) become 255 where
  no non-crowd instance claims the pixel. Everything else is 0 (background). Polygons reaching
  outside the image are clipped to it (Sutherland-Hodgman) before rasterising: not an error, and
  it keeps a wild coordinate from making pycocotools trace a huge outline. An annotation whose
  ``category_id`` is missing from ``categories`` is a DataError naming the JSON and the id.
- **panoptic**: ``annotations/panoptic_{split}.json`` plus its PNG folder
  ``annotations/panoptic_{split}/`` (also looked for under ``panoptic_segmentation/``, as in
  coco128). A pixel's segment id is R + 256 G + 256^2 B. Thing categories (``isthing=1``) map as
  for instances (COCO's 1..80, else by name); stuff becomes 0 (background: few-shot segmentation on COCO-20i
  has only the 80 object classes); id 0 (unlabeled) and crowd segments become 255.
- **semantic_png**: the coco128 layout, ``images/{split}/*.jpg`` with
  ``semantic_segmentation/masks/{split}/<stem>.png``, one byte per pixel holding a COCO panoptic
  category id. Things 1..90 (80 ids with gaps) become 1..80 in id order; stuff 92..200 becomes 0;
  0 (unlabeled) becomes 255, and 255 stays 255. Any other value is a DataError. Only images with
  a mask file are annotated; the others are yielded without a mask.

EXIF orientation is never applied: the annotations lie on the stored pixel grid.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import numpy as np

from glocon.data.imageio import IMAGE_KINDS, load_mask, open_image
from glocon.data.layouts import ClassTable
from glocon.data.layouts._coco_classes import COCO_THING_IDS, NUM_CLASSES, STUFF_IDS, category_classes, max_class, standard_table
from glocon.data.layouts._common import first_existing, image_loader, require_root
from glocon.data.record import Record
from glocon.ops import IGNORE_INDEX
from glocon.errors import ConfigError, DataError

_SPLIT = re.compile(r"^(train|val|test|minival|valminusminival)\d{4}$")
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------- shared
def _check_split(root: Path, split: str) -> None:
    if not _SPLIT.match(split):
        found = sorted({m.group(0) for p in [root, root / "images", root / "annotations"] if p.is_dir()
                        for q in p.iterdir() for m in [re.search(r"(train|val|test)\d{4}", q.name)] if m})
        raise ConfigError(
            f"coco split {split!r}: expected an image folder name with its year, e.g. train2017 or val2014"
            + (f" (found under {root}: {', '.join(found)})" if found else "")
        )


def _image_dir(root: Path, split: str) -> Path:
    return first_existing([root / split, root / "images" / split], f"COCO image folder for {split}")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    for k in ("images", "categories"):
        if k not in data:
            raise DataError(f"{path}: no '{k}' list (expected a COCO annotation file)")
    return data


def _image_records(root: Path, split: str, data: dict, json_path: Path) -> dict[int, tuple[str, Path]]:
    """image id -> (key, image path), every file checked to exist."""
    folder = _image_dir(root, split)
    out = {}
    for im in data["images"]:
        path = folder / im["file_name"]
        if not path.is_file():
            raise DataError(f"{json_path}: image {im['id']} names a missing file {path}")
        out[int(im["id"])] = (f"coco/{split}/{Path(im['file_name']).stem}", path)
    return out


# ---------------------------------------------------------------- instances
def clip_polygon(xy: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip a polygon (K, 2) to the box [0, width] x [0, height] (Sutherland-Hodgman). -> (K', 2)."""
    pts = [tuple(p) for p in np.asarray(xy, dtype=np.float64)]
    # each edge of the box as (axis, limit, keep-below?)
    for axis, limit, below in ((0, 0.0, False), (0, float(width), True), (1, 0.0, False), (1, float(height), True)):
        if not pts:
            break
        inside = (lambda p: p[axis] <= limit) if below else (lambda p: p[axis] >= limit)
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(_cross(prev, cur, axis, limit))
                out.append(cur)
            elif inside(prev):
                out.append(_cross(prev, cur, axis, limit))
        pts = out
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _cross(a, b, axis: int, limit: float) -> tuple[float, float]:
    t = (limit - a[axis]) / (b[axis] - a[axis])
    p = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
    p[axis] = limit
    return (p[0], p[1])


def segmentation_mask(seg, height: int, width: int, where: str) -> np.ndarray:
    """One COCO ``segmentation`` (polygons, compressed or uncompressed RLE) -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polys = []
        for poly in seg:
            xy = np.asarray(poly, dtype=np.float64)
            if xy.ndim != 1 or xy.size % 2:
                raise DataError(f"{where}: polygon with {xy.size} coordinates, expected x,y pairs")
            if not np.isfinite(xy).all():
                raise DataError(f"{where}: polygon has non-finite coordinates")
            clipped = clip_polygon(xy.reshape(-1, 2), width, height)
            if len(clipped) >= 3:  # fewer vertices cover no area (and pycocotools reads 4 numbers as a box)
                polys.append(clipped.ravel().tolist())
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(s) for s in seg["size"]] != [height, width]:
            raise DataError(
                f"{where}: RLE size {seg['size']} differs from the image's [height, width] = [{height}, {width}]"
            )
        if isinstance(seg["counts"], list):  # uncompressed RLE (crowd annotations use it)
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            counts = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
            rle = {"size": [height, width], "counts": counts}
    else:
        raise DataError(f"{where}: segmentation is neither polygons nor RLE (expected a list or {{counts, size}})")
    try:
        return mask_utils.decode(rle).astype(bool)
    except Exception as exc:
        raise DataError(f"{where}: cannot decode RLE ({exc})") from None


def instances_mask(anns: tuple[dict, ...], height: int, width: int, where: str) -> np.ndarray:
    """(H, W) uint8: classes painted largest first; crowd -> 255 where no instance lies.

    anns: dicts with ``cls`` (1..N), ``iscrowd``, ``segmentation``, ``area``, ``id``.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    crowd = np.zeros((height, width), dtype=bool)
    for ann in sorted(anns, key=lambda a: (-float(a.get("area", 0.0)), a["id"])):
        m = segmentation_mask(ann["segmentation"], height, width, f"{where}, annotation {ann['id']}")
        if ann.get("iscrowd", 0):
            crowd |= m
        else:
            mask[m] = ann["cls"]
    mask[crowd & (mask == 0)] = IGNORE_INDEX
    return mask


def _instances_records(root: Path, split: str, cfg) -> tuple[list[Record], ClassTable]:
    json_path = first_existing([root / "annotations" / f"instances_{split}.json"], f"COCO instances file for {split}")
    data = _read_json(json_path)
    classes, table = category_classes(data["categories"], json_path)
    images = _image_records(root, split, data, json_path)
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in data["images"]}
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    for ann in data.get("annotations", []):
        cid = int(ann["category_id"])
        if cid not in classes:
            raise DataError(
                f"{json_path}: annotation {ann.get('id')} has category_id {cid}, which is missing from 'categories' "
                f"(expected one of {sorted(classes)[:5]}...)"
            )
        iid = int(ann["image_id"])
        if iid not in per_image:
            raise DataError(f"{json_path}: annotation {ann.get('id')} names image_id {iid}, missing from 'images'")
        if classes[cid] == 0:
            continue  # a background-named category: its pixels are background already
        per_image[iid].append({"cls": classes[cid], "iscrowd": int(ann.get("iscrowd", 0)), "id": ann.get("id", 0),
                               "area": float(ann.get("area", 0.0)), "segmentation": ann["segmentation"]})
    out = []
    for iid, (key, path) in images.items():
        h, w = sizes[iid]
        where = f"{json_path}, image {iid}"
        out.append(Record(
            key=key, source=str(path),
            load_image=image_loader(path, cfg),
            load_mask=functools.partial(instances_mask, tuple(per_image[iid]), h, w, where),
            layout="coco", extra={"mask_source": where, "max_class": max_class(table)},
        ))
    return out, table


# ---------------------------------------------------------------- panoptic
def panoptic_ids(png: str | os.PathLike) -> np.ndarray:
    """(H, W) int64 segment ids from a COCO panoptic PNG: R + 256 G + 256^2 B."""
    im = open_image(png, expected="an RGB panoptic PNG")
    if im.mode != "RGB":
        raise DataError(f"{png}: panoptic PNG has mode {im.mode}, expected RGB (id = R + 256 G + 256^2 B)")
    a = np.asarray(im).astype(np.int64)
    return a[..., 0] + 256 * a[..., 1] + 256 * 256 * a[..., 2]


def panoptic_mask(png: str | os.PathLike, segments: dict[int, int]) -> np.ndarray:
    """(H, W) uint8 classes from a panoptic PNG; ``segments`` maps segment id -> class (0, 1..N or 255)."""
    ids = panoptic_ids(png)
    uniq, inverse = np.unique(ids, return_inverse=True)
    lut = np.empty(len(uniq), dtype=np.uint8)
    for i, sid in enumerate(uniq.tolist()):
        if sid == 0:
            lut[i] = IGNORE_INDEX  # unlabeled
        elif sid in segments:
            lut[i] = segments[sid]
        else:
            raise DataError(
                f"{png}: segment id {sid} is not in the JSON's segments_info (expected one of {sorted(segments)})"
            )
    return lut[inverse.reshape(ids.shape)]


def _panoptic_records(root: Path, split: str, cfg) -> tuple[list[Record], ClassTable]:
    name = f"panoptic_{split}"
    json_path = first_existing(
        [root / "annotations" / f"{name}.json", root / "panoptic_segmentation" / "annotations" / f"{name}.json"],
        f"COCO panoptic file for {split}",
    )
    png_dir = first_existing([json_path.parent / name, root / name], f"COCO panoptic PNG folder {name}")
    data = _read_json(json_path)
    things, table = category_classes(data["categories"], json_path, things_only=True)
    known = {int(c["id"]) for c in data["categories"]}
    images = _image_records(root, split, data, json_path)
    out = {}
    for ann in data.get("annotations", []):
        iid = int(ann["image_id"])
        if iid not in images:
            raise DataError(f"{json_path}: annotation for image_id {iid}, missing from 'images'")
        segments = {}
        for s in ann["segments_info"]:
            cid = int(s["category_id"])
            if cid not in known:
                raise DataError(
                    f"{json_path}: image {iid}, segment {s['id']} has category_id {cid}, missing from 'categories'"
                )
            segments[int(s["id"])] = IGNORE_INDEX if s.get("iscrowd", 0) else things.get(cid, 0)
        png = png_dir / ann["file_name"]
        if not png.is_file():
            raise DataError(f"{json_path}: image {iid} names a missing panoptic PNG {png}")
        key, path = images[iid]
        out[iid] = Record(
            key=key, source=str(path),
            load_image=image_loader(path, cfg),
            load_mask=functools.partial(panoptic_mask, png, segments),
            layout="coco", extra={"mask_source": str(png), "max_class": max_class(table)},
        )
    for iid, (key, path) in images.items():  # images with no panoptic annotation: no mask
        if iid not in out:
            out[iid] = Record(key=key, source=str(path), load_image=image_loader(path, cfg), layout="coco")
    return list(out.values()), table


# ---------------------------------------------------------------- semantic PNGs (coco128)
def _semantic_lut() -> tuple[np.ndarray, np.ndarray]:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    valid = np.zeros(256, dtype=bool)
    for i, cid in enumerate(COCO_THING_IDS):
        lut[cid], valid[cid] = i + 1, True
    lut[list(STUFF_IDS)], valid[list(STUFF_IDS)] = 0, True
    valid[0] = valid[IGNORE_INDEX] = True  # 0 unlabeled -> 255; 255 stays ignore
    return lut, valid


SEMANTIC_LUT, SEMANTIC_VALID = _semantic_lut()


def semantic_mask(png: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 classes from a single-channel PNG of COCO panoptic category ids."""
    raw = load_mask(png)
    bad = np.unique(raw[~SEMANTIC_VALID[raw]])
    if bad.size:
        raise DataError(
            f"{png}: values {bad[:10].tolist()} are not COCO panoptic category ids "
            "(expected 0 unlabeled, things 1-90, stuff 92-200)"
        )
    return SEMANTIC_LUT[raw]


def _semantic_records(root: Path, split: str, cfg) -> tuple[list[Record], ClassTable]:
    folder = first_existing([root / "images" / split, root / split], f"COCO image folder for {split}")
    masks = first_existing([root / "semantic_segmentation" / "masks" / split], f"semantic mask folder for {split}")
    images = {
        p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in _IMAGE_EXT and not p.name.startswith(".")
    }
    for png in masks.glob("*.png"):
        if png.stem not in images:
            raise DataError(f"{png}: mask without an image (expected {folder / png.stem}.jpg, {IMAGE_KINDS})")
    out = []
    for stem, path in images.items():
        png = masks / f"{stem}.png"
        has_mask = png.is_file()
        out.append(Record(
            key=f"coco/{split}/{stem}", source=str(path), layout="coco",
            load_image=image_loader(path, cfg),
            load_mask=functools.partial(semantic_mask, png) if has_mask else None,
            extra={"mask_source": str(png), "max_class": NUM_CLASSES} if has_mask else {},
        ))
    return out, standard_table(str(masks))


READERS = {"instances": _instances_records, "panoptic": _panoptic_records, "semantic_png": _semantic_records}


def records_and_classes(cfg) -> tuple[list[Record], ClassTable]:
    root = require_root(cfg.root, "coco", "a COCO folder (annotations/ and image folders such as val2017/)")
    _check_split(root, cfg.split)
    return READERS[cfg.coco_format](root, cfg.split, cfg)


def records(cfg) -> list[Record]:
    return records_and_classes(cfg)[0]
