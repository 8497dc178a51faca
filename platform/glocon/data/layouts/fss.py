"""FSS-1000: ``<root>/<class>/<n>.jpg`` with its binary mask ``<n>.png``.

- ``cfg.split`` is ``trn``, ``val`` or ``test``: the 520 / 240 / 240 class split of HSNet's
  ``data/splits/fss/{split}.txt``, read from ``cfg.fss_split_dir`` (default:
  ``../shared/data/splits/hsnet/fss`` relative to the working directory, when it exists).
- A class's id is its 1-based index in the sorted union of the three lists (``folds.fss_class_ids``),
  so it is the same whichever split is read.
- Masks are binary: the PNG is read as grayscale and thresholded at 128, as HSNet's
  ``data/fss.py`` does (``mask[mask < 128] = 0; mask[mask >= 128] = 1``), giving 0/1.
  ``extra["binary_class"]`` says which class 1 stands for (the glocon convention for FSS-1000).
- EXIF orientation is never applied: masks lie on the stored pixel grid.
- Keys are ``fss/<class>/<n>``; images are listed in numeric order of ``<n>``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from glocon.data.folds import FSS_SPLITS, fss_class_ids, fss_split_classes
from glocon.data.imageio import open_image
from glocon.data.layouts._common import image_loader, require_root
from glocon.data.record import Record
from glocon.errors import ConfigError, DataError

DEFAULT_SPLIT_DIR = Path("..") / "shared" / "data" / "splits" / "hsnet" / "fss"


def split_dir(configured: str | None) -> Path:
    """The folder of HSNet's trn/val/test.txt: the configured one, else the default if it exists."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise DataError(
                f"data.fss_split_dir {path} is not a folder "
                "(expected HSNet's data/splits/fss with trn.txt, val.txt, test.txt)"
            )
        return path
    default = Path.cwd() / DEFAULT_SPLIT_DIR
    if default.is_dir():
        return default
    raise ConfigError(
        "the fss layout needs HSNet's class split files: set data.fss_split_dir to a folder with trn.txt, "
        f"val.txt and test.txt (e.g. hsnet/data/splits/fss); the default {default} does not exist"
    )


def binary_mask(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 in {0, 1}: grayscale >= 128 is the object (HSNet's rule)."""
    im = open_image(path, expected="a binary mask PNG (0 background, 255 object)")
    return (np.asarray(im.convert("L")) >= 128).astype(np.uint8)


def _numeric(p: Path) -> tuple[int, str]:
    return (int(p.stem), p.stem) if p.stem.isdigit() else (1 << 62, p.stem)


def records(cfg) -> list[Record]:
    if cfg.split not in FSS_SPLITS:
        raise ConfigError(f"fss split {cfg.split!r}: expected one of {', '.join(FSS_SPLITS)}")
    root = require_root(cfg.root, "fss", "the FSS-1000 folder of <class>/<n>.jpg + <n>.png")
    sdir = split_dir(cfg.fss_split_dir)
    ids = fss_class_ids(sdir)
    out = []
    for name in fss_split_classes(cfg.split, sdir):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{sdir / (cfg.split + '.txt')}: class {name} has no folder {folder}")
        images = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".jpg"), key=_numeric)
        if not images:
            raise DataError(f"{folder}: no <n>.jpg images for class {name}")
        for image in images:
            mask = image.with_suffix(".png")
            if not mask.is_file():
                raise DataError(f"{image}: its mask {mask} is missing (expected <n>.png beside <n>.jpg)")
            out.append(Record(
                key=f"fss/{name}/{image.stem}", source=str(image), layout="fss",
                load_image=image_loader(image, cfg),
                load_mask=functools.partial(binary_mask, mask),
                extra={"binary_class": ids[name], "class_name": name, "mask_source": str(mask), "max_class": 1},
            ))
    return out
