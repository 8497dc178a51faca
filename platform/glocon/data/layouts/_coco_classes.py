"""COCO's class ids as glocon's, for every COCO format (not a layout itself).

COCO's 80 thing ids -> 1..80 in COCO's order; a category list that is not standard COCO maps by
sorted name -> 1..N; a background-named category -> 0. The ``ClassTable`` that records the mapping
goes into the shard manifest. The rules per format are in ``glocon.data.layouts.coco``'s module doc.
"""

from __future__ import annotations

import re
from pathlib import Path

from glocon.data.layouts import ClassTable
from glocon.errors import DataError
from glocon.ops import IGNORE_INDEX

# COCO's 80 thing category ids (1..90 with 10 gaps), shared by instances, panoptic and the
# coco128 semantic PNGs. Index + 1 is the class id used everywhere in glocon.
COCO_THING_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91),
)  # fmt: skip
# Their names, as COCO's own annotation files spell them (panoptic_val2017.json, isthing=1).
COCO_THING_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
STUFF_IDS = range(92, 201)
NUM_CLASSES = len(COCO_THING_IDS)
BACKGROUND = "background"  # what _background_, Background, __background__ normalise to


def _norm(name: str) -> str:
    """Names compared loosely: case, and runs of spaces, '_' and '-' do not matter."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


_COCO_BY_ID = {cid: _norm(n) for cid, n in zip(COCO_THING_IDS, COCO_THING_NAMES)}


def standard_table(source: str, listed: dict[int, int] | None = None) -> ClassTable:
    """COCO's 80 thing ids -> 1..80; ``source_ids`` holds the ids the source lists (all 80 by default)."""
    ids = listed if listed is not None else {cid: i + 1 for i, cid in enumerate(COCO_THING_IDS)}
    names = {i + 1: n for i, n in enumerate(COCO_THING_NAMES)}
    return ClassTable(scheme="coco", source=source, names=names, source_ids=ids)


def category_classes(categories: list[dict], json_path: Path, things_only: bool = False) -> tuple[dict[int, int], ClassTable]:
    """Category id -> glocon class id, and the table that records it (see the module doc).

    Standard COCO (each id is a COCO thing id and its name COCO's) keeps 1..80; anything else maps
    by sorted name to 1..N. Background-named categories map to 0. ``things_only`` (panoptic)
    leaves out ``isthing=0`` categories: the caller maps stuff to 0.
    """
    cats = []
    for c in categories:
        if things_only and not c.get("isthing", 1):
            continue
        name = str(c.get("name") or "").strip()
        if not name:
            raise DataError(f"{json_path}: category {c.get('id')} has no 'name' (expected COCO categories: id, name)")
        cats.append((int(c["id"]), name))
    background = {cid for cid, name in cats if _norm(name) == BACKGROUND}
    objects = [(cid, name) for cid, name in cats if cid not in background]
    if all(_COCO_BY_ID.get(cid) == _norm(name) for cid, name in objects):
        index = {cid: i + 1 for i, cid in enumerate(COCO_THING_IDS)}
        mapping = {cid: index[cid] for cid, _ in objects}
        table = standard_table(str(json_path), dict(mapping))
    else:
        order = sorted({_norm(name) for _, name in objects})
        if len(order) >= IGNORE_INDEX:
            raise DataError(f"{json_path}: {len(order)} category names, expected fewer than {IGNORE_INDEX} to fit in uint8 masks")
        by_name = {n: i + 1 for i, n in enumerate(order)}
        mapping = {cid: by_name[_norm(name)] for cid, name in objects}
        spelled = {mapping[cid]: name for cid, name in reversed(objects)}  # the first spelling of each name
        table = ClassTable(scheme="by_name", source=str(json_path), names=spelled, source_ids=dict(mapping))
    for cid in background:
        mapping[cid] = 0
        table.source_ids[cid] = 0
        table.names[0] = next(name for c, name in cats if c == cid)
    table.source_ids = dict(sorted(table.source_ids.items()))
    table.names = dict(sorted(table.names.items()))
    return mapping, table


def max_class(table: ClassTable) -> int:
    return max((c for c in table.names if c != IGNORE_INDEX), default=0)
