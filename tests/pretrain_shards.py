"""Small shards of real photos (../shared/data/coco128) for the pretraining tests and bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from glocon.data.schema import Sample, encode_sample
from glocon.data.superpixels import FHConfig, SlicConfig, fh_labels, slic_labels


def write_photo_shards(photos: Path, out: Path, n_images: int = 16, per_shard: int = 4, side: int = 96) -> list[Path]:
    """The first ``n_images`` coco128 photos, longest side ``side``, SLIC + FH maps, in tars of ``per_shard``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(photos.glob("*.jpg"))[:n_images]
    shards: list[Path] = []
    for start in range(0, len(paths), per_shard):
        shard = out / f"photos-{start // per_shard:06d}.tar"
        with wds.TarWriter(str(shard)) as sink:
            for path in paths[start : start + per_shard]:
                img = Image.open(path).convert("RGB")
                orig = [img.height, img.width]
                img.thumbnail((side, side))
                image = np.asarray(img).copy()
                sample = Sample(
                    key=path.stem,
                    image=image,
                    slic=slic_labels(image, SlicConfig(n_segments=24)),
                    fh=fh_labels(image, FHConfig(scale=100, min_size=30)),
                    meta={"key": path.stem, "source": "coco128", "orig_size": orig, "size": list(image.shape[:2]), "classes": {}},
                )
                sink.write(encode_sample(sample))
        shards.append(shard)
    return shards
