"""Few-shot class splits: PASCAL-5i, COCO-20i, FSS-1000 and the embedded default.

Class ids are 1-based, as in the masks (0 = background, 255 = ignore).

- PASCAL-5i (Shaban et al.; PFENet and HSNet): fold i holds classes 5i+1..5i+5 of the 20.
- COCO-20i, interleaved (PFENet's ``use_split_coco: True``, HSNet's lists): fold i holds
  {i+1, i+5, ..., i+77} over 1..80. ``contiguous`` (the original split of Nguyen and Todorovic):
  fold i holds 20i+1..20i+20.
- FSS-1000 (HSNet's ``data/splits/fss``): 520 / 240 / 240 class names in trn / val / test. A class's
  id is its 1-based index in the sorted union of the three lists.
- Embedded default: 20 classes in 4 folds of 5, like PASCAL-5i.

A fold's classes are its novel classes; the other classes of the data set are its base classes.
Whether a class counts for an image (at least 2x32x32 pixels, as in PFENet) is
``glocon.data.record.classes_present``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from glocon.errors import ConfigError, DataError

NUM_CLASSES = {"pascal": 20, "coco": 80, "embedded": 20}
NUM_FOLDS = {"pascal": 4, "coco": 4, "embedded": 4}
FSS_SPLITS = ("trn", "val", "test")
CocoMode = Literal["interleaved", "contiguous"]


def _check_fold(dataset: str, fold: int) -> None:
    n = NUM_FOLDS[dataset]
    if not isinstance(fold, int) or not 0 <= fold < n:
        raise ConfigError(f"{dataset} fold {fold!r}: expected an integer in 0..{n - 1}")


def pascal_fold_classes(fold: int) -> list[int]:
    """PASCAL-5i: fold i -> [5i+1, ..., 5i+5]."""
    _check_fold("pascal", fold)
    return list(range(5 * fold + 1, 5 * fold + 6))


def embedded_fold_classes(fold: int) -> list[int]:
    """The embedded data set's 20 classes, in 4 folds of 5 like PASCAL-5i."""
    _check_fold("embedded", fold)
    return list(range(5 * fold + 1, 5 * fold + 6))


def coco_fold_classes(fold: int, mode: CocoMode = "interleaved") -> list[int]:
    """COCO-20i over ids 1..80. interleaved: [i+1, i+5, ..., i+77]; contiguous: [20i+1, ..., 20i+20]."""
    _check_fold("coco", fold)
    if mode == "interleaved":
        return list(range(fold + 1, 81, 4))
    if mode == "contiguous":
        return list(range(20 * fold + 1, 20 * fold + 21))
    raise ConfigError(f"coco fold mode {mode!r}: expected 'interleaved' or 'contiguous'")


def fss_split_classes(split: str, split_dir: str | os.PathLike) -> list[str]:
    """Class names of an FSS-1000 split, in file order, from HSNet's ``{split}.txt``."""
    if split not in FSS_SPLITS:
        raise ConfigError(f"fss split {split!r}: expected one of {', '.join(FSS_SPLITS)}")
    path = Path(split_dir) / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"FSS-1000 split file not found: {path} (expected HSNet's data/splits/fss/{split}.txt)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name is listed twice (expected unique class names)")
    return names


def fss_class_ids(split_dir: str | os.PathLike) -> dict[str, int]:
    """FSS-1000 class name -> id: its 1-based index in the sorted union of trn, val and test."""
    names = sorted({n for s in FSS_SPLITS for n in fss_split_classes(s, split_dir)})
    return {n: i + 1 for i, n in enumerate(names)}


def novel_classes(
    dataset: str,
    fold: int | str,
    *,
    coco_mode: CocoMode = "interleaved",
    split_dir: str | os.PathLike | None = None,
) -> list[int]:
    """Novel (test) class ids of a fold. For 'fss', ``fold`` is a split name and ``split_dir`` is needed."""
    if dataset == "pascal":
        return pascal_fold_classes(fold)  # type: ignore[arg-type]
    if dataset == "coco":
        return coco_fold_classes(fold, coco_mode)  # type: ignore[arg-type]
    if dataset == "embedded":
        return embedded_fold_classes(fold)  # type: ignore[arg-type]
    if dataset == "fss":
        if split_dir is None:
            raise ConfigError("fss classes need split_dir (HSNet's data/splits/fss)")
        ids = fss_class_ids(split_dir)
        return sorted(ids[n] for n in fss_split_classes(str(fold), split_dir))
    raise ConfigError(f"dataset {dataset!r}: expected one of pascal, coco, fss, embedded")


def base_classes(
    dataset: str,
    fold: int | str,
    *,
    coco_mode: CocoMode = "interleaved",
    split_dir: str | os.PathLike | None = None,
) -> list[int]:
    """Base (training) class ids of a fold: every class not novel. For 'fss': the trn split's classes."""
    if dataset == "fss":
        return novel_classes("fss", "trn", split_dir=split_dir)
    novel = set(novel_classes(dataset, fold, coco_mode=coco_mode, split_dir=split_dir))
    return [c for c in range(1, NUM_CLASSES[dataset] + 1) if c not in novel]
