"""Dataset layouts behind one factory: ``open_layout(cfg) -> list[Record]``.

One small reader per layout (HSNet's ``data/`` shape). Each module defines
``records(cfg: LayoutConfig) -> list[Record]``; records are sorted by key, so every run sees
the same order.
"""

from __future__ import annotations

import importlib
from typing import Literal

from glocon.config import GloconModel
from glocon.data.imageio import MAX_IMAGE_PIXELS
from glocon.data.record import MIN_CLASS_PIXELS, Record

LAYOUTS = ("folder", "voc", "coco", "fss", "embedded")


class EmbeddedConfig(GloconModel):
    """The procedurally generated default data set (layouts/embedded.py)."""

    n_images: int = 400
    size: int = 256
    seed: int = 0
    objects_per_image: tuple[int, int] = (1, 3)  # inclusive range, drawn per image
    cache_dir: str | None = None  # root of the generated files; None: $GLOCON_CACHE or runs/cache
    object_area: tuple[float, float] = (0.04, 0.12)  # object area as a fraction of the image (before occlusion)
    ignore_border: int = 0  # >0: pixels this close to a label change become 255, as in VOC


class LayoutConfig(GloconModel):
    layout: Literal["folder", "voc", "coco", "fss", "embedded"] = "embedded"
    root: str | None = None  # data root; meaning per layout (see README)
    split: str = "train"  # voc: train|val|trainaug; coco: train2014|val2017|...; fss: trn|val|test
    coco_format: Literal["instances", "panoptic", "semantic_png"] = "instances"
    min_class_pixels: int = MIN_CLASS_PIXELS
    limit: int | None = None  # keep the first N records (sorted by key), for smoke runs
    embedded: EmbeddedConfig = EmbeddedConfig()
    # decoding: images with more pixels are refused as decompression bombs (None: no limit)
    max_image_pixels: int | None = MAX_IMAGE_PIXELS
    # voc trainaug: SBD ids (one id, or PFENet's `JPEGImages/X.jpg SegmentationClassAug/X.png`, per
    # line); None: every id with a SegmentationClassAug PNG. PFENet's 5953-image list needs its
    # splits/pfenet/pascal/sbd_data.txt here.
    voc_sbd_list: str | None = None
    # fss: folder with HSNet's trn.txt / val.txt / test.txt class lists; None:
    # ../shared/data/splits/hsnet/fss relative to the working directory, when it exists
    fss_split_dir: str | None = None


def open_layout(cfg: LayoutConfig) -> list[Record]:
    """All records of the configured layout, sorted by key, cut to ``cfg.limit``."""
    module = importlib.import_module(f"glocon.data.layouts.{cfg.layout}")
    records = sorted(module.records(cfg), key=lambda r: r.key)
    return records[: cfg.limit] if cfg.limit else records
