"""Fold splits equal the published split files (PFENet / HSNet) in ../shared/data/splits."""

from __future__ import annotations

import json

import pytest

from glocon.data import folds
from glocon.errors import ConfigError, DataError


def hsnet_pascal_classes(splits_dir, part: str, fold: int) -> set[int]:
    """Classes named in HSNet's PASCAL-5i list (lines ``IMAGEID__CLASS``, 1-based)."""
    lines = (splits_dir / "hsnet" / "pascal" / part / f"fold{fold}.txt").read_text().split()
    return {int(line.rsplit("__", 1)[1]) for line in lines}


@pytest.mark.parametrize("fold", range(4))
def test_pascal_folds_equal_hsnet_lists(splits_dir, fold):
    assert folds.pascal_fold_classes(fold) == [5 * fold + k for k in range(1, 6)]
    assert set(folds.novel_classes("pascal", fold)) == hsnet_pascal_classes(splits_dir, "val", fold)
    assert set(folds.novel_classes("pascal", fold)) == hsnet_pascal_classes(splits_dir, "trn", fold)
    # HSNet's data/pascal.py trains fold i on the trn lists of every other fold.
    others = set().union(*(hsnet_pascal_classes(splits_dir, "trn", j) for j in range(4) if j != fold))
    assert set(folds.base_classes("pascal", fold)) == others


@pytest.mark.parametrize("fold", range(4))
def test_coco_interleaved_folds_equal_hsnet_class_counts(splits_dir, fold):
    counts = json.loads((splits_dir / "hsnet" / "coco_fold_class_counts.json").read_text())[f"fold{fold}"]
    novel = sorted(int(c) + 1 for c, n in counts["val"].items() if n > 0)  # 0-based in the file
    base = sorted(int(c) + 1 for c, n in counts["trn"].items() if n > 0)
    assert folds.coco_fold_classes(fold) == novel == folds.novel_classes("coco", fold)
    assert folds.base_classes("coco", fold) == base
    assert novel[:3] == [fold + 1, fold + 5, fold + 9] and novel[-1] == fold + 77


def test_coco_contiguous_folds_partition_1_to_80():
    parts = [folds.coco_fold_classes(f, "contiguous") for f in range(4)]
    assert parts[1] == list(range(21, 41))
    assert sorted(c for p in parts for c in p) == list(range(1, 81))
    assert folds.base_classes("coco", 2, coco_mode="contiguous") == list(range(1, 41)) + list(range(61, 81))


def test_interleaved_folds_partition_1_to_80():
    assert sorted(c for f in range(4) for c in folds.coco_fold_classes(f)) == list(range(1, 81))


def test_fss_splits_are_520_240_240_disjoint_and_ids_cover_1_to_1000(splits_dir):
    d = splits_dir / "hsnet" / "fss"
    sizes = {s: len(folds.fss_split_classes(s, d)) for s in folds.FSS_SPLITS}
    assert sizes == {"trn": 520, "val": 240, "test": 240}
    ids = folds.fss_class_ids(d)
    assert sorted(ids.values()) == list(range(1, 1001))
    names = sorted(ids)
    assert all(ids[n] == i + 1 for i, n in enumerate(names))
    test, val, trn = (set(folds.novel_classes("fss", s, split_dir=d)) for s in ("test", "val", "trn"))
    assert not (test & val or test & trn or val & trn)
    assert set(folds.base_classes("fss", "test", split_dir=d)) == trn


def test_embedded_folds_are_four_folds_of_five():
    parts = [folds.embedded_fold_classes(f) for f in range(4)]
    assert parts[3] == [16, 17, 18, 19, 20]
    assert sorted(c for p in parts for c in p) == list(range(1, 21))
    assert folds.base_classes("embedded", 0) == list(range(6, 21))


def test_bad_fold_dataset_or_split_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"pascal fold 4: expected an integer in 0\.\.3"):
        folds.pascal_fold_classes(4)
    with pytest.raises(ConfigError, match="expected 'interleaved' or 'contiguous'"):
        folds.coco_fold_classes(0, "random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dataset 'ade'"):
        folds.novel_classes("ade", 0)
    with pytest.raises(ConfigError, match="fss split 'train'"):
        folds.fss_split_classes("train", tmp_path)
    with pytest.raises(DataError, match=r"FSS-1000 split file not found: .*trn\.txt"):
        folds.fss_split_classes("trn", tmp_path)
