"""Dataset layouts behind one factory: ``open_layout(cfg) -> list[Record]``.

One small reader per layout (HSNet's ``data/`` shape). Each module defines
``records(cfg: LayoutConfig) -> list[Record]``; records are sorted by key, so every run sees
the same order. A layout that renumbers its source's class ids (coco, semantic) also defines
``records_and_classes(cfg) -> (records, ClassTable)``: how each source id became a glocon id,
and the class names, which ``make_shards`` writes into the manifest and prints.
"""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import Field

from glocon.config import GloconModel
from glocon.data.imageio import MAX_IMAGE_PIXELS
from glocon.data.record import MIN_CLASS_PIXELS, Record

LAYOUTS = ("folder", "voc", "coco", "fss", "embedded", "semantic")


class ClassTable(GloconModel):
    """How a layout's own class ids became glocon's: 0 background, 1..N objects, 255 ignore."""

    scheme: str  # "coco" (COCO's standard 80), "by_name" (sorted names), "semantic" (a class-names file)
    source: str  # the file the ids and names were read from
    names: dict[int, str]  # glocon class id -> name (0 only when the source names a background)
    source_ids: dict[int, int] = {}  # source id (category id / mask value) -> glocon id (0, 1..N or 255)

    def describe(self, limit: int = 100) -> str:
        """What ``make_shards`` prints: the scheme, then ``source id -> glocon id name`` per class."""
        head = {
            "coco": f"class ids: COCO's standard 80 thing ids -> 1..80 in COCO's order ({self.source})",
            "by_name": f"class ids: by category name, sorted -> 1..{sum(1 for c in self.names if 0 < c < 255)} ({self.source})",
            "semantic": f"class ids: from {self.source} -> 0 background, 1..N, 255 ignore",
        }.get(self.scheme, f"class ids ({self.scheme}, {self.source})")
        rows = [f"  {src} -> {dst} {self.names.get(dst, 'ignore' if dst == 255 else '')}".rstrip()
                for src, dst in sorted(self.source_ids.items())]
        more = [f"  ... and {len(rows) - limit} more (see the manifest's class_table)"] if len(rows) > limit else []
        return "\n".join([head, *rows[:limit], *more])


class EmbeddedConfig(GloconModel):
    """The procedurally generated default data set (layouts/embedded.py)."""

    n_images: int = 400
    size: int = Field(256, gt=0)
    seed: int = 0
    objects_per_image: tuple[int, int] = (1, 3)  # inclusive range, drawn per image
    cache_dir: str | None = None  # root of the generated files; None: $GLOCON_CACHE or runs/cache
    object_area: tuple[float, float] = (0.04, 0.12)  # object area as a fraction of the image (before occlusion)
    ignore_border: int = 0  # >0: pixels this close to a label change become 255, as in VOC


class LayoutConfig(GloconModel):
    layout: Literal["folder", "voc", "coco", "fss", "embedded", "semantic"] = "embedded"
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
    # semantic: images in image_dir, masks of class ids in mask_dir (matched by file stem, any image
    # extension; both relative to root unless absolute), class names in class_names (YAML {id: name}
    # or a list, or one name per line: the line number, from 0, is the id). background_id becomes 0,
    # void_ids become 255, the other named ids 1..N in increasing id order.
    image_dir: str = "images"
    mask_dir: str = "masks"
    class_names: str | None = None
    background_id: int | None = Field(0, ge=0, le=255)  # None: the data set has no background class
    void_ids: list[int] = [255]


def open_layout(cfg: LayoutConfig) -> list[Record]:
    """All records of the configured layout, sorted by key, cut to ``cfg.limit``."""
    return open_layout_classes(cfg)[0]


def open_layout_classes(cfg: LayoutConfig) -> tuple[list[Record], ClassTable | None]:
    """``open_layout`` plus the layout's ClassTable (None for layouts that keep their ids)."""
    module = importlib.import_module(f"glocon.data.layouts.{cfg.layout}")
    if hasattr(module, "records_and_classes"):
        found, table = module.records_and_classes(cfg)
    else:
        found, table = module.records(cfg), None
    records = sorted(found, key=lambda r: r.key)
    return (records[: cfg.limit] if cfg.limit else records), table
