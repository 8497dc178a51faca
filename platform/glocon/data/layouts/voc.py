"""PASCAL VOC 2012 with the SBD augmentation.

Layout (``cfg.root`` is the folder holding ``VOCdevkit``, or ``VOC2012`` itself)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      VOC's palette PNGs: 0 bg, 1..20, 255 border
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   SBD-converted masks (VOC ids too), same ids
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

Splits (``cfg.split``):

- ``train`` / ``val``: VOC's lists; masks from SegmentationClass, or SegmentationClassAug for an
  id that has no SegmentationClass PNG.
- ``trainaug``: rebuilt as VOC train plus SBD, minus VOC val (PFENet's
  ``voc_sbd_merge_noduplicate.txt``), masks from SegmentationClassAug. The SBD ids come from
  ``cfg.voc_sbd_list`` when set (PFENet's ``sbd_data.txt`` gives its exact 5953-image list), else
  from every PNG in SegmentationClassAug (the usual 10582-image "trainaug"). The order is PFENet's:
  SBD ids in list order, then the VOC train ids SBD lacks.

Masks are read as stored (palette indices, losslessly): class ids 1..20, 0 background, 255
ignore; the border is kept. EXIF orientation is never applied: masks lie on the stored grid.
A list naming an id whose image or mask is missing is a DataError naming the list and the id.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from glocon.data.imageio import load_mask
from glocon.data.layouts._common import first_existing, image_loader, require_root
from glocon.data.record import Record
from glocon.errors import ConfigError, DataError
from glocon.io import atomic_write_text

NUM_CLASSES = 20
SPLITS = ("train", "val", "trainaug")


def voc2012_dir(root: str | os.PathLike) -> Path:
    """The VOC2012 folder under ``root`` (``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``)."""
    root = Path(root)
    cands = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    for c in cands:
        if (c / "JPEGImages").is_dir():
            return c
    raise DataError(
        f"no VOC2012 folder under {root}: expected JPEGImages/ in one of {', '.join(str(c) for c in cands)}"
    )


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids from a list file: one id per line, or PFENet's ``JPEGImages/X.jpg SegmentationClassAug/X.png``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"id list not found: {path} (expected one VOC id per line)")
    ids = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        first = line.split()[0]
        ident = Path(first).stem if "/" in first or "." in first else first
        if not ident:
            raise DataError(f"{path}:{n}: cannot read an image id from {line!r}")
        ids.append(ident)
    return ids


def trainaug_ids(train: list[str], sbd: list[str], val: list[str]) -> list[str]:
    """VOC train + SBD - VOC val, without duplicates: SBD ids in order, then train ids SBD lacks."""
    held_out = set(val)
    out: list[str] = []
    seen: set[str] = set()
    for ident in list(sbd) + list(train):
        if ident not in held_out and ident not in seen:
            seen.add(ident)
            out.append(ident)
    return out


def format_pfenet_list(ids: list[str]) -> str:
    """PFENet's list format: ``JPEGImages/X.jpg SegmentationClassAug/X.png`` per line."""
    return "".join(f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png\n" for i in ids)


def write_pfenet_list(ids: list[str], path: str | os.PathLike) -> Path:
    """Write ``ids`` in PFENet's list format (atomically)."""
    return atomic_write_text(path, format_pfenet_list(ids))


def split_ids(voc: Path, split: str, sbd_list: str | None = None) -> tuple[list[str], str]:
    """(ids, where they came from) for a split."""
    lists = voc / "ImageSets" / "Segmentation"
    if split in ("train", "val"):
        path = lists / f"{split}.txt"
        return read_id_list(path), str(path)
    if split == "trainaug":
        train = read_id_list(lists / "train.txt")
        val = read_id_list(lists / "val.txt")
        if sbd_list:
            sbd, origin = read_id_list(sbd_list), str(sbd_list)
        else:
            aug = voc / "SegmentationClassAug"
            if not aug.is_dir():
                raise DataError(
                    f"{aug} not found (trainaug needs SBD's SegmentationClassAug masks, or data.voc_sbd_list)"
                )
            sbd, origin = sorted(p.stem for p in aug.glob("*.png")), str(aug)
        return trainaug_ids(train, sbd, val), f"{lists / 'train.txt'} + {origin} - {lists / 'val.txt'}"
    raise ConfigError(f"voc split {split!r}: expected one of {', '.join(SPLITS)}")


def records(cfg) -> list[Record]:
    root = require_root(cfg.root, "voc", "the folder holding VOCdevkit/VOC2012 (or VOC2012 itself)")
    voc = voc2012_dir(root)
    ids, origin = split_ids(voc, cfg.split, cfg.voc_sbd_list)
    aug = voc / "SegmentationClassAug"
    mask_dirs = [aug] if cfg.split == "trainaug" else [voc / "SegmentationClass", aug]
    out = []
    for ident in ids:
        image = voc / "JPEGImages" / f"{ident}.jpg"
        if not image.is_file():
            raise DataError(f"{origin}: id {ident} names a missing image {image}")
        try:
            mask = first_existing([d / f"{ident}.png" for d in mask_dirs], f"mask of id {ident}")
        except DataError as exc:
            raise DataError(f"{origin}: id {ident} has no mask ({exc})") from None
        out.append(
            Record(
                key=f"voc/{ident}",
                source=str(image),
                load_image=image_loader(image, cfg),
                load_mask=functools.partial(load_mask, mask),
                layout="voc",
                extra={"mask_source": str(mask), "max_class": NUM_CLASSES},
            )
        )
    return out
