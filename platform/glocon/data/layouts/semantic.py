"""Any labelled set: a folder of images, a folder of masks of class ids, and a class-names file.

CamVid, ADE-style exports, a lab's own annotations: anything where each image has a mask whose
pixels are class ids, with one id meaning "void" (not annotated). Settings (``LayoutConfig``):

- ``data.root``, ``data.image_dir`` (default ``images``), ``data.mask_dir`` (default ``masks``):
  image and mask folders (relative to the root unless absolute). An image and its mask share a
  file stem; either may have any image extension (.jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff).
  Hidden files are ignored; the folders are not searched recursively.
- ``data.class_names``: the id -> name table. YAML (``.yaml``/``.yml``): a mapping ``{id: name}``
  or a list (position = id); any other file: one name per line, the line number (from 0) is the id.
- ``data.background_id`` (default 0; ``null`` when the set has no background class) and
  ``data.void_ids`` (default ``[255]``).

Ids become glocon's convention: ``background_id`` -> 0, each of ``void_ids`` -> 255 (ignore), the
other named ids -> 1..N in increasing id order (a stable order: it depends on the names file
only). The mapping and the names go into the shard manifest's ``class_table``. A mask value that
is neither named nor void is an error naming the mask and the values. EXIF orientation is never
applied: the masks lie on the stored pixel grid. Keys are ``semantic/<stem>``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from glocon.config import read_yaml
from glocon.data.imageio import load_mask
from glocon.data.layouts import ClassTable
from glocon.data.layouts._common import image_loader, require_root
from glocon.data.record import Record
from glocon.ops import IGNORE_INDEX
from glocon.errors import ConfigError, DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def read_class_names(path: str | os.PathLike) -> dict[int, str]:
    """Source id -> name from a YAML mapping / list, or a text file of one name per line (line = id)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.class_names {p}: file not found (expected YAML {{id: name}} or one name per line)")
    if p.suffix.lower() in (".yaml", ".yml"):
        data = read_yaml(p, "data.class_names", DataError)
        items = list(enumerate(data)) if isinstance(data, list) else list(data.items()) if isinstance(data, dict) else None
        if items is None:
            raise DataError(f"data.class_names {p}: expected a mapping {{id: name}} or a list of names, got {type(data).__name__}")
    else:
        lines = p.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        items = list(enumerate(lines))
    names: dict[int, str] = {}
    for raw_id, name in items:
        try:
            cid = int(raw_id)
        except (TypeError, ValueError):
            raise DataError(f"data.class_names {p}: id {raw_id!r} is not an integer") from None
        if not 0 <= cid <= 255:
            raise DataError(f"data.class_names {p}: id {cid} is outside 0..255 (masks hold uint8 ids)")
        if not str(name or "").strip():
            raise DataError(f"data.class_names {p}: id {cid} has an empty name (in a text file the line number is the id)")
        names[cid] = str(name).strip()
    if not names:
        raise DataError(f"data.class_names {p}: no class names")
    return names


def class_table(names: dict[int, str], background: int | None, void: list[int], source: str) -> ClassTable:
    """The source -> glocon id mapping: background 0, void 255, the rest 1..N in id order."""
    bad = [v for v in void if not 0 <= v <= 255]
    if bad:
        raise ConfigError(f"data.void_ids: {bad} are outside 0..255 (masks hold uint8 ids)")
    if background is not None and background in void:
        raise ConfigError(f"data.background_id={background} is also in data.void_ids: an id is one or the other")
    objects = sorted(c for c in names if c != background and c not in void)
    if len(objects) >= IGNORE_INDEX:
        raise DataError(f"{source}: {len(objects)} classes, expected fewer than {IGNORE_INDEX} to fit in uint8 masks")
    ids = {c: i + 1 for i, c in enumerate(objects)}
    table_names = {ids[c]: names[c] for c in objects}
    if background is not None:
        ids[background] = 0
        table_names[0] = names.get(background, "background")
    ids.update({v: IGNORE_INDEX for v in void})
    return ClassTable(scheme="semantic", source=source, names=dict(sorted(table_names.items())),
                      source_ids=dict(sorted(ids.items())))


def lookup(table: ClassTable) -> tuple[np.ndarray, np.ndarray]:
    """(256,) uint8 source id -> glocon id, and (256,) bool: which source ids are known."""
    lut = np.zeros(256, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    for src, dst in table.source_ids.items():
        lut[src], known[src] = dst, True
    return lut, known


def remapped_mask(path: str | os.PathLike, lut: np.ndarray, known: np.ndarray, names_file: str) -> np.ndarray:
    """(H, W) uint8 glocon ids from a mask of source ids; unknown ids are a DataError naming the mask."""
    raw = load_mask(path)
    bad = np.unique(raw[~known[raw]])
    if bad.size:
        raise DataError(
            f"mask {path}: values {bad[:10].tolist()} are neither named in {names_file} nor in data.void_ids "
            f"(expected one of {np.flatnonzero(known).tolist()[:20]})"
        )
    return lut[raw]


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    """stem -> file for every image file in ``folder``; two files with one stem are an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in EXTENSIONS or not p.is_file():
            continue
        if p.stem in found:
            raise DataError(f"{what} {found[p.stem]} and {p} share the stem {p.stem!r}: expected one file per stem")
        found[p.stem] = p
    return found


def _folder(root: Path, sub: str, key: str) -> Path:
    p = Path(sub).expanduser()
    p = p if p.is_absolute() else root / p
    if not p.is_dir():
        raise DataError(f"{key}={sub}: {p} is not a folder (the semantic layout expects images and masks in two folders)")
    return p


def records_and_classes(cfg) -> tuple[list[Record], ClassTable]:
    root = require_root(cfg.root, "semantic", "a folder holding the image folder and the mask folder")
    if not cfg.class_names:
        raise ConfigError("data.class_names is not set: the semantic layout needs a class-names file (YAML or one name per line)")
    names_file = Path(cfg.class_names).expanduser()
    names_file = names_file if names_file.is_absolute() else root / names_file
    table = class_table(read_class_names(names_file), cfg.background_id, list(cfg.void_ids), str(names_file))
    lut, known = lookup(table)
    image_dir, mask_dir = _folder(root, cfg.image_dir, "data.image_dir"), _folder(root, cfg.mask_dir, "data.mask_dir")
    images, masks = _by_stem(image_dir, "images"), _by_stem(mask_dir, "masks")
    if not images:
        raise DataError(f"data.image_dir {image_dir} holds no images (expected files ending in {', '.join(EXTENSIONS)})")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(f"mask {masks[orphans[0]]} has no image in {image_dir} (expected {orphans[0]}.<ext>; {len(orphans)} such masks)")
    n_classes = max((c for c in table.names if c != IGNORE_INDEX), default=0)
    out = []
    for stem, image in images.items():
        mask = masks.get(stem)
        loader = functools.partial(remapped_mask, mask, lut, known, str(names_file)) if mask else functools.partial(_no_mask, image, mask_dir)
        out.append(Record(
            key=f"semantic/{stem}", source=str(image), layout="semantic",
            load_image=image_loader(image, cfg), load_mask=loader,
            extra={"mask_source": str(mask or mask_dir / f"{stem}.png"), "max_class": n_classes},
        ))
    return out, table


def _no_mask(image: Path, mask_dir: Path) -> np.ndarray:
    raise DataError(f"image {image} has no mask in {mask_dir} (expected {image.stem}.<ext> there)")


def records(cfg) -> list[Record]:
    return records_and_classes(cfg)[0]
