"""Small helpers shared by the layout readers (not a layout itself)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from PIL import Image

from glocon.data.imageio import load_rgb
from glocon.errors import ConfigError, DataError


def image_loader(path: Path, cfg, apply_exif: bool = False) -> Callable[[], Image.Image]:
    """A picklable loader for a record: ``load_rgb`` with the layout's pixel limit.

    ``apply_exif`` is True only for plain folders: annotated layouts keep the stored pixel grid.
    """
    return functools.partial(load_rgb, path, apply_exif=apply_exif, max_pixels=cfg.max_image_pixels)


def require_root(root: str | None, layout: str, expected: str) -> Path:
    """``cfg.root`` as an existing folder, or an error saying what the layout expects there."""
    if not root:
        raise ConfigError(f"data.root is not set: the {layout} layout needs {expected}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.root {path} is not a folder (the {layout} layout expects {expected})")
    return path


def first_existing(candidates: list[Path], what: str) -> Path:
    """The first candidate path that exists, or a DataError listing every place looked at."""
    for c in candidates:
        if c.exists():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"{what} not found; looked at: {tried}")
