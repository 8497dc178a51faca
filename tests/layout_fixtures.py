"""Tiny data sets written in the exact on-disk layouts glocon reads, plus hostile images.

Every ``make_*`` writes under ``root`` (a fresh tmp folder) and returns the path to give
``LayoutConfig.root``. Sizes stay at 64 x 48 px so tests are cheap. Other tests (shards, readers,
drills) import these:

- ``make_folder(root) -> Path``                 plain folder, subfolders, EXIF-rotated JPEG
- ``make_voc(root, n=4) -> Path``               VOCdevkit/VOC2012 with palette PNGs + 255 border, Aug, lists
- ``make_coco_instances(root, split, ...) -> Path``  instances JSON: polygon, RLE (both kinds), crowd
- ``make_coco_panoptic(root, split) -> Path``   panoptic JSON + RGB PNGs
- ``make_coco_semantic(root, split, n=3) -> Path``  the coco128 layout (one image without a mask)
- ``make_coco_subset(root, split)``, ``make_voc_ids_coco(root, split)``  instances JSONs that list
  a subset of COCO's categories / VOC's ids with labelme's ``_background_``
- ``make_semantic(root) -> Path``   the ``semantic`` layout (CamVid-style): images + id masks + names
- ``make_camvid(root) -> Path``     SegNet's CamVid folders (train/, trainannot/, classes.txt)
- ``make_fss(root, n=2) -> (data_root, split_dir)``   FSS-1000 tree + HSNet-style class lists
- ``make_hostile_images(folder) -> dict[name, Path]``  truncated JPEG, zero-byte, text-as-PNG, ...
- ``write_bomb_png(path, w, h)``, ``add_symlink_loop(folder) -> Path``

Geometry constants (``VOC_BOX``, ``COCO_*``) say where each object lies, so tests can check
pixels without re-deriving the fixture.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 48  # stored size (width, height) of every fixture image
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF orientation 6: display = stored rotated 90 degrees clockwise

# COCO's 80 thing category ids (written out here, independent of glocon's own table).
COCO_THING_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
]
COCO_THING_NAMES = [  # as COCO's own panoptic_val2017.json spells them
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
COCO_STUFF = [(92, "banner"), (184, "tree-merged"), (200, "rug-merged")]
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _photo(seed: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """A small RGB image with some structure (JPEG-friendly)."""
    w, h = size
    rng = _rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(40, 200, size=3)
    a = np.stack([base[c] + 40 * np.sin((xx + 7 * c) / (5 + c)) + 20 * np.cos(yy / 6) for c in range(3)], -1)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _save_jpeg(im: Image.Image, path: Path, orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": 90}
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        kwargs["exif"] = exif
    im.save(path, "JPEG", **kwargs)
    return path


def _save_png(a: np.ndarray | Image.Image, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = a if isinstance(a, Image.Image) else Image.fromarray(a, mode) if mode else Image.fromarray(a)
    im.save(path, "PNG")
    return path


# ---------------------------------------------------------------- plain folder
def make_folder(root: Path) -> Path:
    """``root/photos`` with 4 images in subfolders (mixed-case extensions), plus files to ignore.

    ``a.jpg`` is stored 64x48 with EXIF orientation 6: displayed (and loaded) as 48x64.
    Ignored: ``notes.txt``, ``.hidden/e.jpg``, ``sub/._b.PNG``-style hidden files.
    """
    top = root / "photos"
    _save_jpeg(_photo(1), top / "a.jpg", orientation=ROTATE_90_CW)
    _save_png(np.asarray(_photo(2)), top / "sub" / "b.PNG")
    (top / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    _photo(3).save(top / "sub" / "deeper" / "c.webp", "WEBP", lossless=True)
    _save_jpeg(_photo(4), top / "d.JPEG")
    (top / "notes.txt").write_text("not an image\n")
    _save_jpeg(_photo(5), top / ".hidden" / "e.jpg")
    (top / "sub" / "._b.PNG").write_bytes(b"\x00\x05\x16\x07 resource fork")
    return top


def add_symlink_loop(folder: Path) -> Path:
    """``folder/sub/loop -> folder``: a symlink back to an ancestor. Returns the link."""
    sub = folder / "sub"
    sub.mkdir(parents=True, exist_ok=True)
    link = sub / "loop"
    os.symlink(folder.resolve(), link, target_is_directory=True)
    return link


# ---------------------------------------------------------------- VOC
def voc_palette() -> list[int]:
    """VOC's colour map (bit-interleaved, as in the devkit's ``labelcolormap``), 256 x RGB."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


VOC_BOX = (16, 12, 40, 32)  # x0, y0, x1, y1 (exclusive) of the object in every VOC mask
VOC_BORDER = 2  # width of the 255 band around the object


def voc_mask(cls: int) -> np.ndarray:
    """(H, W) uint8: background 0, a box of ``cls``, and VOC's 255 band around it."""
    m = np.zeros((H, W), dtype=np.uint8)
    x0, y0, x1, y1 = VOC_BOX
    b = VOC_BORDER
    m[y0 - b : y1 + b, x0 - b : x1 + b] = 255
    m[y0:y1, x0:x1] = cls
    return m


def make_voc(root: Path, n: int = 4) -> Path:
    """``root/VOCdevkit/VOC2012`` with n train, n val and n SBD-only ids; returns ``root``.

    - train ids ``2007_00000{i}``, val ids ``2007_00010{i}``, SBD-only ids ``2008_00000{i}``;
    - SegmentationClass: palette PNGs (VOC colour map) for train + val, with the 255 border;
    - SegmentationClassAug: grayscale PNGs for train + val + SBD (as DeepLab's aug set ships);
    - ImageSets/Segmentation/{train,val,trainval}.txt;
    - ``root/sbd_data.txt``: PFENet-format SBD list (SBD-only ids + the first train id, overlapping);
    - the first train image is stored with EXIF orientation 6 (annotated layouts must ignore it).
    Object class of id number k (0-based over train, val, SBD in order) is ``k % 20 + 1``.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    train = [f"2007_{i:06d}" for i in range(1, n + 1)]
    val = [f"2007_{100 + i:06d}" for i in range(1, n + 1)]
    sbd = [f"2008_{i:06d}" for i in range(1, n + 1)]
    pal = voc_palette()
    for k, ident in enumerate(train + val + sbd):
        cls = k % 20 + 1
        m = voc_mask(cls)
        _save_jpeg(_photo(10 + k), voc / "JPEGImages" / f"{ident}.jpg", orientation=ROTATE_90_CW if k == 0 else None)
        if ident not in sbd:
            p = Image.fromarray(m, "P")
            p.putpalette(pal)
            _save_png(p, voc / "SegmentationClass" / f"{ident}.png")
        _save_png(m, voc / "SegmentationClassAug" / f"{ident}.png", "L")
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(i + "\n" for i in train))
    (lists / "val.txt").write_text("".join(i + "\n" for i in val))
    (lists / "trainval.txt").write_text("".join(i + "\n" for i in train + val))
    (root / "sbd_data.txt").write_text(
        "".join(f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png\n" for i in sbd + train[:1])
    )
    return root


# ---------------------------------------------------------------- COCO instances
def _rle_uncompressed(m: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths over the column-major flattening, starting with zeros."""
    flat = np.asarray(m, dtype=np.uint8).ravel(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(c) for c in counts]}


def _rle_compressed(m: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


# Image 1: a large car (compressed RLE), a small person polygon on top of it, a dog (uncompressed
# RLE) and a crowd of people (uncompressed RLE, iscrowd=1) that partly overlaps the dog.
COCO_CAR = (20, 48, 0, 40)  # rows y0:y1, cols x0:x1 (compressed RLE), category 3 -> class 3
COCO_PERSON_POLY = [12.0, 28.0, 28.0, 28.0, 28.0, 40.0, 12.0, 40.0]  # category 1 -> class 1
COCO_DOG = (2, 14, 44, 60)  # uncompressed RLE, category 18 -> class 17
COCO_CROWD = (0, 10, 50, 64)  # uncompressed RLE crowd, category 1 -> 255 where no instance lies
# Image 2: a toothbrush polygon reaching far outside the image (clipped), category 90 -> class 80.
COCO_OOB_POLY = [-30.0, -20.0, 30.0, -20.0, 30.0, 20.0, -30.0, 20.0]
COCO_HUGE_POLY = [50.0, 30.0, 1e7, 30.0, 1e7, 1e7, 50.0, 1e7]  # clipped to cols 50:64, rows 30:48


def coco_categories() -> list[dict]:
    return [{"id": cid, "name": name, "supercategory": "thing"} for cid, name in zip(COCO_THING_IDS, COCO_THING_NAMES)]


def make_coco_instances(
    root: Path, split: str = "val2017", missing_category: bool = False, images_subdir: bool = False
) -> Path:
    """``root/annotations/instances_{split}.json`` + ``root/{split}/*.jpg`` (or ``images/{split}``).

    Image 1: polygon, compressed RLE, uncompressed RLE and a crowd (see ``COCO_*``); image 2:
    out-of-bounds polygons; image 3: no annotation at all. ``missing_category`` adds an annotation
    whose category id (999) is not in ``categories``.
    """
    folder = root / "images" / split if images_subdir else root / split
    imgs = []
    for i in (1, 2, 3):
        name = f"{i:012d}.jpg"
        _save_jpeg(_photo(30 + i), folder / name)
        imgs.append({"id": i, "file_name": name, "height": H, "width": W})
    car = _box(*COCO_CAR)
    dog = _box(*COCO_DOG)
    crowd = _box(*COCO_CROWD)
    anns = [
        # the small person comes first in the file: painting in file order would bury it under the car
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0 * 12.0, "segmentation": [COCO_PERSON_POLY]},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": float(car.sum()), "segmentation": _rle_compressed(car)},
        {"id": 3, "image_id": 1, "category_id": 18, "iscrowd": 0, "area": float(dog.sum()), "segmentation": _rle_uncompressed(dog)},
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": float(crowd.sum()), "segmentation": _rle_uncompressed(crowd)},
        {"id": 5, "image_id": 2, "category_id": 90, "iscrowd": 0, "area": 600.0, "segmentation": [COCO_OOB_POLY]},
        {"id": 6, "image_id": 2, "category_id": 90, "iscrowd": 0, "area": 252.0, "segmentation": [COCO_HUGE_POLY]},
    ]
    if missing_category:
        anns.append({"id": 7, "image_id": 3, "category_id": 999, "iscrowd": 0, "area": 4.0,
                     "segmentation": [[1.0, 1.0, 3.0, 1.0, 3.0, 3.0]]})
    data = {"images": imgs, "annotations": anns, "categories": coco_categories()}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def _write_instances(root: Path, split: str, categories: list[dict], boxes: list[tuple[int, tuple[int, int, int, int]]]) -> Path:
    """One image ``000000000001.jpg`` whose annotations are boxes (category id, rows y0:y1, cols x0:x1)."""
    _save_jpeg(_photo(40), root / split / "000000000001.jpg")
    anns = [{"id": i + 1, "image_id": 1, "category_id": cid, "iscrowd": 0, "area": float((y1 - y0) * (x1 - x0)),
             "segmentation": _rle_compressed(_box(y0, y1, x0, x1))} for i, (cid, (y0, y1, x0, x1)) in enumerate(boxes)]
    data = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}],
            "annotations": anns, "categories": categories}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


SUBSET_BOXES = [(1, (0, 20, 0, 20)), (3, (20, 48, 0, 32)), (44, (0, 24, 40, 64))]  # person, car, bottle


def make_coco_subset(root: Path, split: str = "val2017") -> Path:
    """An instances JSON listing only person (1), car (3) and bottle (44), with their COCO names,
    in an order that is neither id order nor name order; one box of each (``SUBSET_BOXES``)."""
    names = dict(zip(COCO_THING_IDS, COCO_THING_NAMES))
    cats = [{"id": cid, "name": names[cid], "supercategory": "thing"} for cid in (44, 1, 3)]
    return _write_instances(root, split, cats, SUBSET_BOXES)


VOC_IDS_BOXES = [(15, (0, 24, 0, 32)), (7, (24, 48, 32, 64)), (0, (0, 48, 48, 64))]  # person, car, _background_


def make_voc_ids_coco(root: Path, split: str = "val2017") -> Path:
    """labelme's COCO export of VOC-labelled photos: category 0 is ``_background_``, 1..20 are VOC's
    classes by VOC id (15 person, 7 car); one box each, and a box of ``_background_`` over both."""
    cats = [{"id": 0, "name": "_background_", "supercategory": None}]
    cats += [{"id": i + 1, "name": n, "supercategory": None} for i, n in enumerate(VOC_NAMES)]
    return _write_instances(root, split, cats, VOC_IDS_BOXES)


# ---------------------------------------------------------------- semantic (CamVid-style)
SEMANTIC_NAMES = {0: "unlabelled", 3: "road", 7: "car", 12: "pedestrian"}  # non-contiguous source ids
SEMANTIC_VOID = 30
SEMANTIC_MAP = {0: 0, 3: 1, 7: 2, 12: 3, SEMANTIC_VOID: 255}  # what glocon must make of them


def semantic_source_mask(i: int) -> np.ndarray:
    """(H, W) uint8 of source ids: background, the three classes in bands shifted by i, a void strip."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[:, (4 + i) : 24] = 3
    m[10:30, 24:44] = 7
    m[30:, 44:] = 12
    m[:, :2] = SEMANTIC_VOID
    return m


def make_semantic(root: Path, n: int = 3) -> Path:
    """``root/images/<stem>.{jpg,png}`` + ``root/masks/<stem>.png`` + ``root/classes.yaml`` (``SEMANTIC_NAMES``).

    Image extensions differ per file (jpg, png) and masks are PNGs of the source ids of
    ``semantic_source_mask`` (void ``SEMANTIC_VOID``). Returns ``root``.
    """
    for i in range(n):
        stem = f"frame{i:03d}"
        image = _photo(120 + i)
        if i % 2:
            _save_png(np.asarray(image), root / "images" / f"{stem}.png")
        else:
            _save_jpeg(image, root / "images" / f"{stem}.jpg")
        _save_png(semantic_source_mask(i), root / "masks" / f"{stem}.png", "L")
    (root / "classes.yaml").write_text("".join(f"{k}: {v}\n" for k, v in SEMANTIC_NAMES.items()))
    return root


CAMVID_NAMES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                "Bicyclist", "Unlabelled"]  # SegNet's CamVid: ids 0..10, 11 = void


def make_camvid(root: Path, n: int = 2) -> Path:
    """SegNet's CamVid layout: ``train/*.png`` frames, ``trainannot/*.png`` masks of ids 0..11
    (11 void, in a border), and ``classes.txt`` with one name per line. Returns ``root``."""
    for i in range(n):
        stem = f"0001TP_{6690 + 30 * i:06d}"
        _save_png(np.asarray(_photo(140 + i)), root / "train" / f"{stem}.png")
        ids = ((np.arange(H)[:, None] // 8 + np.arange(W)[None, :] // 8 + i) % 11).astype(np.uint8)
        ids[:1], ids[-1:] = 11, 11
        _save_png(ids, root / "trainannot" / f"{stem}.png", "L")
    (root / "classes.txt").write_text("".join(n + "\n" for n in CAMVID_NAMES))
    return root


# ---------------------------------------------------------------- COCO panoptic
PANOPTIC_SEGMENTS = [  # (segment id, category id, iscrowd, rows y0:y1, cols x0:x1) of image 1
    (3226956, 1, 0, 0, 24, 0, 32),  # person -> 1
    (2 + 256 * 7, 3, 0, 24, 48, 0, 32),  # car -> 3
    (5 + 256 * 5 + 65536 * 5, 1, 1, 0, 24, 32, 48),  # crowd person -> 255
    (8000000, 184, 0, 24, 48, 32, 64),  # stuff (tree) -> 0
]  # cols 48:64 of rows 0:24 stay 0 = unlabeled -> 255


def _encode_ids(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)


def make_coco_panoptic(root: Path, split: str = "val2017") -> Path:
    """``root/annotations/panoptic_{split}.json`` + ``annotations/panoptic_{split}/*.png`` + ``{split}/*.jpg``.

    Image 1 holds ``PANOPTIC_SEGMENTS``; image 2 is all one stuff segment.
    """
    ann_dir = root / "annotations"
    png_dir = ann_dir / f"panoptic_{split}"
    cats = [{"id": c, "name": n, "isthing": 1, "supercategory": "thing"} for c, n in zip(COCO_THING_IDS, COCO_THING_NAMES)]
    cats += [{"id": c, "name": n, "isthing": 0, "supercategory": "stuff"} for c, n in COCO_STUFF]
    images, anns = [], []
    for i in (1, 2):
        stem = f"{i:012d}"
        _save_jpeg(_photo(50 + i), root / split / f"{stem}.jpg")
        images.append({"id": i, "file_name": f"{stem}.jpg", "height": H, "width": W})
        ids = np.zeros((H, W), dtype=np.int64)
        segs = []
        spec = PANOPTIC_SEGMENTS if i == 1 else [(77, 200, 0, 0, H, 0, W)]
        for sid, cid, crowd, y0, y1, x0, x1 in spec:
            ids[y0:y1, x0:x1] = sid
            segs.append({"id": sid, "category_id": cid, "iscrowd": crowd, "area": (y1 - y0) * (x1 - x0),
                         "bbox": [x0, y0, x1 - x0, y1 - y0]})
        _save_png(_encode_ids(ids), png_dir / f"{stem}.png", "RGB")
        anns.append({"image_id": i, "file_name": f"{stem}.png", "segments_info": segs})
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"panoptic_{split}.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


# ---------------------------------------------------------------- coco128-style semantic PNGs
SEMANTIC_REGIONS = [  # (panoptic category id, rows y0:y1, cols x0:x1); the rest stays 0 = unlabeled
    (1, 0, 24, 0, 32),  # person -> 1
    (90, 24, 48, 0, 32),  # toothbrush -> 80
    (184, 0, 48, 32, 56),  # stuff -> 0
]


def make_coco_semantic(root: Path, split: str = "val2017", n: int = 3) -> Path:
    """coco128's layout: ``images/{split}/*.jpg`` + ``semantic_segmentation/masks/{split}/*.png``.

    n images with masks (``SEMANTIC_REGIONS``) and one more without a mask. The first image is
    stored with EXIF orientation 6 (must be ignored).
    """
    for i in range(n + 1):
        stem = f"{i + 1:012d}"
        _save_jpeg(_photo(70 + i), root / "images" / split / f"{stem}.jpg", orientation=ROTATE_90_CW if i == 0 else None)
        if i < n:
            m = np.zeros((H, W), dtype=np.uint8)
            for cid, y0, y1, x0, x1 in SEMANTIC_REGIONS:
                m[y0:y1, x0:x1] = cid
            _save_png(m, root / "semantic_segmentation" / "masks" / split / f"{stem}.png", "L")
    return root


# ---------------------------------------------------------------- FSS-1000
FSS_CLASSES = {"trn": ["bus", "airliner", "cat"], "val": ["eagle", "dog"], "test": ["goose", "fox"]}
FSS_BOX = (10, 30, 20, 44)  # rows y0:y1, cols x0:x1 of the object


def make_fss(root: Path, n: int = 2) -> tuple[Path, Path]:
    """``root/FSS-1000/<class>/<k>.jpg`` + ``<k>.png`` (k = 1..n) and ``root/splits/{trn,val,test}.txt``.

    Masks are 0/255; the ``cat`` class stores them as RGB (as some FSS-1000 files are).
    Returns (data root, split folder).
    """
    data = root / "FSS-1000"
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for split, names in FSS_CLASSES.items():
        (splits / f"{split}.txt").write_text("".join(c + "\n" for c in names))
        for c, name in enumerate(names):
            for k in range(1, n + 1):
                _save_jpeg(_photo(90 + 7 * c + k), data / name / f"{k}.jpg")
                m = np.zeros((H, W), dtype=np.uint8)
                y0, y1, x0, x1 = FSS_BOX
                m[y0:y1, x0:x1] = 255
                _save_png(np.stack([m] * 3, -1) if name == "cat" else m, data / name / f"{k}.png")
    return data, splits


# ---------------------------------------------------------------- hostile images
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int, height: int) -> Path:
    """A few-hundred-byte PNG whose header claims ``width x height`` 8-bit gray pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def make_hostile_images(folder: Path) -> dict[str, Path]:
    """One file per hostile case, named for it. Bad: truncated_jpeg(_header), zero_byte, text_as_png, bomb.

    Convertible (must decode to correct RGB): cmyk_jpeg, png16 (16-bit gray ramp), gray, palette,
    palette_transparent, rgba, la, one_by_one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    good = _save_jpeg(_photo(7), folder / "good.jpg")
    data = good.read_bytes()
    out["truncated_jpeg"] = folder / "truncated.jpg"  # header intact, scan data cut
    out["truncated_jpeg"].write_bytes(data[: len(data) * 4 // 5])
    out["truncated_jpeg_header"] = folder / "truncated_header.jpg"  # cut inside the header
    out["truncated_jpeg_header"].write_bytes(data[:200])
    out["zero_byte"] = folder / "zero.jpg"
    out["zero_byte"].write_bytes(b"")
    out["text_as_png"] = folder / "text.png"
    out["text_as_png"].write_text("<html>404 Not Found</html>\n")
    out["bomb"] = write_bomb_png(folder / "bomb.png", 10_000, 10_000)  # 1e8 px > PIL's 89.5 M default
    cmyk = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(folder / "cmyk.jpg", "JPEG", quality=95)
    out["cmyk_jpeg"] = folder / "cmyk.jpg"
    ramp = (np.arange(W, dtype=np.uint32)[None, :].repeat(H, 0) * 65535 // (W - 1)).astype(np.uint16)
    out["png16"] = _save_png(ramp, folder / "gray16.png")
    out["gray"] = _save_png(np.full((H, W), 77, np.uint8), folder / "gray.png", "L")
    pal = Image.fromarray(np.tile(np.array([[0, 1], [2, 1]], np.uint8), (H // 2, W // 2)), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    out["palette"] = _save_png(pal, folder / "palette.png")
    pal.info["transparency"] = 1  # index 1 (green) is transparent
    pal.save(folder / "palette_t.png", transparency=1)
    out["palette_transparent"] = folder / "palette_t.png"
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 2] = 200  # blue ...
    rgba[:, : W // 2, 3] = 255  # ... opaque on the left half, transparent on the right
    out["rgba"] = _save_png(rgba, folder / "rgba.png", "RGBA")
    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0] = 100
    la[..., 1] = 255
    la[: H // 2, :, 1] = 0  # top half transparent
    out["la"] = _save_png(Image.fromarray(la, "LA"), folder / "la.png")
    out["one_by_one"] = _save_png(np.array([[[10, 20, 30]]], np.uint8), folder / "one.png", "RGB")
    return out
