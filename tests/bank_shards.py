"""Small real-photo shards for the bank tests (COCO128 photos + masks, ~96 px), written with the
project's sample schema and webdataset's TarWriter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from glocon.data.record import class_pixels
from glocon.data.schema import Sample, encode_sample
from glocon.data.superpixels import FHConfig, SlicConfig, fh_labels, slic_labels

SLIC = SlicConfig(n_segments=24)
FH = FHConfig(scale=100.0, min_size=40)


def masked_images(coco128: Path, n: int) -> list[tuple[Path, Path]]:
    masks = sorted((coco128 / "semantic_segmentation" / "masks" / "train2017").glob("*.png"))[:n]
    return [(coco128 / "images" / "train2017" / (m.stem + ".jpg"), m) for m in masks]


def load_pair(image: Path, mask: Path | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    img = Image.open(image).convert("RGB")
    scale = size / max(img.size)
    wh = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    arr = np.asarray(img.resize(wh, Image.BILINEAR))
    m = np.asarray(Image.open(mask).resize(wh, Image.NEAREST)).astype(np.uint8) if mask is not None else None
    return arr, m


def write_shards(coco128: Path, out: Path, n_images: int = 8, per_shard: int = 4, size: int = 96, with_masks: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pairs = masked_images(coco128, n_images)
    paths = []
    for s in range(0, len(pairs), per_shard):
        path = out / f"shard-{s // per_shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for image_path, mask_path in pairs[s : s + per_shard]:
                image, mask = load_pair(image_path, mask_path if with_masks else None, size)
                meta = {
                    "key": f"coco128/{image_path.stem}", "source": str(image_path),
                    "orig_size": list(Image.open(image_path).size[::-1]), "size": list(image.shape[:2]),
                    "classes": {str(k): v for k, v in class_pixels(mask).items()} if mask is not None else {},
                    "layout": "coco",
                }
                sample = Sample(key=meta["key"], image=image, slic=slic_labels(image, SLIC), fh=fh_labels(image, FH), meta=meta, mask=mask)
                sink.write(encode_sample(sample))
        paths.append(path)
    return paths
