"""Dataset layouts behind one factory: ``open_layout(cfg) -> list[Record]``.

One small reader per layout (HSNet's ``data/`` shape). Each module defines
``records(cfg: LayoutConfig) -> list[Record]``; records are sorted by key, so every run sees
the same order.
"""

from __future__ import annotations

import importlib
from typing import Literal

from glocon.config import GloconModel
from glocon.data.record import MIN_CLASS_PIXELS, Record

LAYOUTS = ("folder", "voc", "coco", "fss", "embedded")


class EmbeddedConfig(GloconModel):
    """The procedurally generated default data set (layouts/embedded.py)."""

    n_images: int = 400
    size: int = 256
    seed: int = 0
    objects_per_image: tuple[int, int] = (1, 3)
    cache_dir: str | None = None  # where generated images are written; None: <out>/embedded


class LayoutConfig(GloconModel):
    layout: Literal["folder", "voc", "coco", "fss", "embedded"] = "embedded"
    root: str | None = None  # data root; meaning per layout (see README)
    split: str = "train"  # voc: train|val|trainaug; coco: train2014|val2017|...; fss: trn|val|test
    coco_format: Literal["instances", "panoptic", "semantic_png"] = "instances"
    min_class_pixels: int = MIN_CLASS_PIXELS
    limit: int | None = None  # keep the first N records (sorted by key), for smoke runs
    embedded: EmbeddedConfig = EmbeddedConfig()


def open_layout(cfg: LayoutConfig) -> list[Record]:
    """All records of the configured layout, sorted by key, cut to ``cfg.limit``."""
    module = importlib.import_module(f"glocon.data.layouts.{cfg.layout}")
    records = sorted(module.records(cfg), key=lambda r: r.key)
    return records[: cfg.limit] if cfg.limit else records
