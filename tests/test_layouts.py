"""Every layout reader on fixtures in the exact on-disk layout, and on the real coco128 files."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glocon.data.imageio import check_mask, image_size, load_record
from glocon.data.layouts import LayoutConfig, open_layout, open_layout_classes
from glocon.data.layouts import coco, voc
from glocon.data.layouts._coco_classes import category_classes
from glocon.data.record import class_pixels, classes_present
from glocon.errors import ConfigError, DataError
from layout_fixtures import (
    COCO_CAR,
    COCO_CROWD,
    COCO_DOG,
    FSS_BOX,
    FSS_CLASSES,
    H,
    VOC_BORDER,
    VOC_BOX,
    W,
    add_symlink_loop,
    make_coco_instances,
    make_coco_panoptic,
    SEMANTIC_MAP,
    SEMANTIC_VOID,
    make_coco_semantic,
    make_coco_subset,
    make_folder,
    make_fss,
    make_semantic,
    make_voc,
    make_voc_ids_coco,
    semantic_source_mask,
    voc_mask,
)


def by_key(cfg: LayoutConfig) -> dict:
    recs = open_layout(cfg)
    keys = [r.key for r in recs]
    assert len(set(keys)) == len(keys), "keys must be unique"
    assert keys == [r.key for r in open_layout(cfg)], "keys must be stable across calls"
    pickle.loads(pickle.dumps(recs))  # records travel to Ray tasks
    return {r.key: r for r in recs}


# ---------------------------------------------------------------- folder
def test_folder_finds_images_recursively_any_case_and_skips_hidden_and_other_files(tmp_path):
    top = make_folder(tmp_path)
    recs = by_key(LayoutConfig(layout="folder", root=str(top)))
    assert sorted(recs) == ["folder/a.jpg", "folder/d.JPEG", "folder/sub/b.PNG", "folder/sub/deeper/c.webp"]
    assert all(not r.has_mask for r in recs.values())
    assert recs["folder/sub/deeper/c.webp"].load_image().size == (W, H)


def test_folder_applies_exif_orientation(tmp_path):
    recs = by_key(LayoutConfig(layout="folder", root=str(make_folder(tmp_path))))
    assert Image.open(recs["folder/a.jpg"].source).size == (W, H)  # stored landscape
    assert recs["folder/a.jpg"].load_image().size == (H, W)  # loaded upright


def test_empty_folder_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"folder .*empty holds no images \(expected files ending in \.jpg"):
        open_layout(LayoutConfig(layout="folder", root=str(tmp_path / "empty")))


def test_folder_root_must_be_set_and_exist(tmp_path):
    with pytest.raises(ConfigError, match="data.root is not set"):
        open_layout(LayoutConfig(layout="folder"))
    with pytest.raises(DataError, match=r"data.root .*missing is not a folder"):
        open_layout(LayoutConfig(layout="folder", root=str(tmp_path / "missing")))


@pytest.mark.timeout(120)
def test_symlink_loop_is_skipped_with_a_warning_and_no_duplicates(tmp_path, caplog):
    top = make_folder(tmp_path)
    link = add_symlink_loop(top)
    (top / "self").symlink_to(top / "self")  # a link to itself: ELOOP on stat
    with caplog.at_level(logging.WARNING, logger="glocon.data.layouts.folder"):
        recs = by_key(LayoutConfig(layout="folder", root=str(top)))  # a loop followed forever hangs: the timeout mark ends it
    assert len(recs) == 4
    assert any(str(link) in m and "symlink loop" in m for m in caplog.messages)
    assert any("self" in m for m in caplog.messages)


# ---------------------------------------------------------------- VOC
def test_voc_masks_keep_palette_indices_and_the_255_border(tmp_path):
    root = make_voc(tmp_path)
    recs = by_key(LayoutConfig(layout="voc", root=str(root), split="train"))
    assert sorted(recs) == [f"voc/2007_{i:06d}" for i in range(1, 5)]
    m = recs["voc/2007_000002"].load_mask()
    assert np.array_equal(m, voc_mask(2))
    x0, y0, x1, y1 = VOC_BOX
    assert m[y0 - 1, x0 + 3] == 255 and m[y0 - VOC_BORDER - 1, x0] == 0
    assert classes_present(class_pixels(m), min_pixels=(x1 - x0) * (y1 - y0)) == [2]
    assert recs["voc/2007_000002"].extra["mask_source"].endswith("SegmentationClass/2007_000002.png")


def test_voc_never_applies_exif_so_masks_stay_aligned(tmp_path):
    root = make_voc(tmp_path)
    r = by_key(LayoutConfig(layout="voc", root=str(root), split="train"))["voc/2007_000001"]
    assert "exif" in Image.open(r.source).info  # the fixture's file really carries orientation 6
    img = r.load_image()
    assert img.size == (W, H)
    check_mask(img.size, r.load_mask(), r.key, max_class=20)


def test_voc_root_may_be_the_devkit_parent_or_voc2012_itself(tmp_path):
    root = make_voc(tmp_path)
    a = by_key(LayoutConfig(layout="voc", root=str(root), split="val"))
    b = by_key(LayoutConfig(layout="voc", root=str(root / "VOCdevkit" / "VOC2012"), split="val"))
    assert sorted(a) == sorted(b) == [f"voc/2007_{100 + i:06d}" for i in range(1, 5)]


def test_voc_trainaug_is_train_plus_sbd_minus_val(tmp_path):
    root = make_voc(tmp_path)
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    train = voc.read_id_list(lists / "train.txt")
    val = voc.read_id_list(lists / "val.txt")
    recs = by_key(LayoutConfig(layout="voc", root=str(root), split="trainaug"))
    ids = {k.split("/")[1] for k in recs}
    # every Aug PNG (train + val + SBD-only) minus val
    assert ids == set(train) | {f"2008_{i:06d}" for i in range(1, 5)}
    assert not ids & set(val)
    assert all("SegmentationClassAug" in r.extra["mask_source"] for r in recs.values())
    # with PFENet's SBD list: its order (SBD ids, then the train ids SBD lacks), no duplicates
    ordered, _ = voc.split_ids(root / "VOCdevkit" / "VOC2012", "trainaug", str(root / "sbd_data.txt"))
    sbd = voc.read_id_list(root / "sbd_data.txt")
    assert ordered == sbd + [i for i in train if i not in sbd]


def test_voc_list_naming_a_missing_file_is_an_error_naming_list_and_id(tmp_path):
    root = make_voc(tmp_path)
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    with open(lists / "val.txt", "a") as fh:
        fh.write("2009_999999\n")
    with pytest.raises(DataError, match=r"val\.txt: id 2009_999999 names a missing image .*2009_999999\.jpg"):
        open_layout(LayoutConfig(layout="voc", root=str(root), split="val"))
    (root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000001.png").unlink()
    (root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / "2007_000001.png").unlink()
    with pytest.raises(DataError, match=r"train\.txt: id 2007_000001 has no mask"):
        open_layout(LayoutConfig(layout="voc", root=str(root), split="train"))


def test_voc_unknown_split_and_missing_devkit_are_clear_errors(tmp_path):
    root = make_voc(tmp_path)
    with pytest.raises(ConfigError, match=r"voc split 'test': expected one of train, val, trainaug"):
        open_layout(LayoutConfig(layout="voc", root=str(root), split="test"))
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match=r"no VOC2012 folder under .*other: expected JPEGImages/"):
        open_layout(LayoutConfig(layout="voc", root=str(tmp_path / "other"), split="val"))


def test_trainaug_rebuilt_from_pfenet_inputs_equals_pfenet_list_byte_for_byte(splits_dir, tmp_path):
    pascal = splits_dir / "pfenet" / "pascal"
    train = voc.read_id_list(pascal / "voc_original_train.txt")
    val = voc.read_id_list(pascal / "val.txt")
    sbd = voc.read_id_list(pascal / "sbd_data.txt")
    ids = voc.trainaug_ids(train, sbd, val)
    assert len(ids) == 5953 and len(set(ids)) == 5953
    assert not set(ids) & set(val)
    assert set(ids) == (set(train) | set(sbd)) - set(val)
    out = voc.write_pfenet_list(ids, tmp_path / "trainaug.txt")
    assert out.read_bytes() == (pascal / "voc_sbd_merge_noduplicate.txt").read_bytes()
    assert voc.format_pfenet_list(val) == (pascal / "val.txt").read_text()


# ---------------------------------------------------------------- COCO instances
def test_coco_instances_rasterise_polygon_rle_and_crowd(tmp_path):
    root = make_coco_instances(tmp_path)
    recs = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017"))
    assert sorted(recs) == [f"coco/val2017/{i:012d}" for i in (1, 2, 3)]
    m = recs["coco/val2017/000000000001"].load_mask()
    assert m.shape == (H, W) and m.dtype == np.uint8
    px = class_pixels(m)
    # person polygon (id 1 -> 1) painted over the larger car (compressed RLE, id 3 -> 3)
    assert m[34, 20] == 1 and px[1] == 16 * 12
    y0, y1, x0, x1 = COCO_CAR
    assert px[3] == (y1 - y0) * (x1 - x0) - 16 * 12
    y0, y1, x0, x1 = COCO_DOG  # uncompressed RLE, id 18 -> 17
    assert px[17] == (y1 - y0) * (x1 - x0) and m[y0, x0] == 17
    cy0, cy1, cx0, cx1 = COCO_CROWD  # crowd -> 255 where the dog does not lie
    assert m[0, 63] == 255 and m[5, 55] == 17
    assert int((m == 255).sum()) == (cy1 - cy0) * (cx1 - cx0) - (min(y1, cy1) - max(y0, cy0)) * (min(x1, cx1) - max(x0, cx0))
    assert recs["coco/val2017/000000000001"].extra["max_class"] == 80
    assert not recs["coco/val2017/000000000003"].load_mask().any()  # no annotations: all background


@pytest.mark.timeout(120)
def test_coco_polygons_out_of_bounds_are_clipped_not_fatal(tmp_path):
    root = make_coco_instances(tmp_path)
    r = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017"))["coco/val2017/000000000002"]
    m = r.load_mask()  # a 1e7 coordinate traced pixel by pixel would not end: the timeout mark catches it
    assert set(np.unique(m)) == {0, 80}  # toothbrush (id 90) is class 80
    assert m[0, 0] == 80 and m[19, 29] == 80 and m[25, 5] == 0  # [-30, 30] x [-20, 20] clipped
    assert m[47, 63] == 80 and m[29, 55] == 0  # [50, 1e7] x [30, 1e7] clipped
    assert abs(int((m == 80).sum()) - (30 * 20 + 14 * 18)) <= 40


def test_clip_polygon_matches_pycocotools_on_moderate_overflow():
    from pycocotools import mask as mask_utils

    poly = np.array([[-7.0, 3.0], [30.0, -9.0], [41.0, 22.0], [12.0, 60.0]])
    clipped = coco.clip_polygon(poly, W, H)
    assert clipped[:, 0].min() >= 0 and clipped[:, 0].max() <= W and clipped[:, 1].max() <= H
    raw = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly.ravel().tolist()], H, W)))
    ours = coco.segmentation_mask([poly.ravel().tolist()], H, W, "test")
    assert abs(int(raw.sum()) - int(ours.sum())) <= 0.02 * raw.sum()
    assert (raw.astype(bool) != ours).sum() <= 0.02 * raw.sum()


def test_coco_category_missing_from_categories_is_an_error_naming_json_and_id(tmp_path):
    root = make_coco_instances(tmp_path, missing_category=True)
    with pytest.raises(DataError, match=r"instances_val2017\.json: annotation 7 has category_id 999, which is missing"):
        open_layout(LayoutConfig(layout="coco", root=str(root), split="val2017"))


def test_coco_images_may_live_under_images_split(tmp_path):
    root = make_coco_instances(tmp_path, split="train2014", images_subdir=True)
    recs = by_key(LayoutConfig(layout="coco", root=str(root), split="train2014"))
    assert len(recs) == 3 and all(k.startswith("coco/train2014/") for k in recs)


def test_coco_split_must_name_its_year(tmp_path):
    root = make_coco_instances(tmp_path)
    with pytest.raises(ConfigError, match=r"coco split 'val': expected .* e\.g\. train2017 .*found under .*val2017"):
        open_layout(LayoutConfig(layout="coco", root=str(root), split="val"))


def test_coco_rle_of_the_wrong_size_is_a_data_error():
    seg = {"size": [10, 10], "counts": [100]}
    with pytest.raises(DataError, match=r"img 5: RLE size \[10, 10\] differs"):
        coco.segmentation_mask(seg, H, W, "img 5")


# ---------------------------------------------------------------- COCO panoptic
def test_coco_panoptic_things_stuff_crowd_and_unlabeled(tmp_path):
    root = make_coco_panoptic(tmp_path)
    recs = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017", coco_format="panoptic"))
    m = recs["coco/val2017/000000000001"].load_mask()
    assert m[0, 0] == 1  # person (thing) -> 1
    assert m[30, 0] == 3  # car -> 3
    assert m[0, 40] == 255  # crowd person
    assert m[30, 40] == 0  # stuff (tree) -> background
    assert m[0, 60] == 255  # id 0: unlabeled
    assert not recs["coco/val2017/000000000002"].load_mask().any()  # all stuff
    assert recs["coco/val2017/000000000001"].load_image().size == (W, H)


def test_coco_panoptic_segment_missing_from_json_is_a_data_error(tmp_path):
    root = make_coco_panoptic(tmp_path)
    png = root / "annotations" / "panoptic_val2017" / "000000000002.png"
    a = np.array(Image.open(png))
    a[0, 0] = [9, 9, 9]
    Image.fromarray(a).save(png)
    r = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017", coco_format="panoptic"))["coco/val2017/000000000002"]
    with pytest.raises(DataError, match=r"000000000002\.png: segment id 592137 is not in the JSON's segments_info"):
        r.load_mask()


# ---------------------------------------------------------------- COCO category ids
def test_coco_json_listing_a_subset_of_coco_categories_keeps_the_standard_ids(tmp_path):
    from layout_fixtures import SUBSET_BOXES

    root = make_coco_subset(tmp_path)
    records, table = open_layout_classes(LayoutConfig(layout="coco", root=str(root), split="val2017"))
    (record,) = records
    m = record.load_mask()
    for cid, want in ((1, 1), (3, 3), (44, 40)):  # person, car and bottle: COCO-20i's 1, 3, 40, not 1, 2, 3
        y0, y1, x0, x1 = next(box for c, box in SUBSET_BOXES if c == cid)
        assert (m[y0:y1, x0:x1] == want).any(), (cid, np.unique(m[y0:y1, x0:x1]))
    assert set(np.unique(m).tolist()) == {0, 1, 3, 40}
    assert table.scheme == "coco" and table.source_ids == {1: 1, 3: 3, 44: 40}
    assert len(table.names) == 80 and table.names[40] == "bottle" and record.extra["max_class"] == 80
    assert "COCO's standard 80" in table.describe() and "44 -> 40 bottle" in table.describe()


def test_coco_json_with_voc_ids_and_a_background_category_maps_by_name_with_background_zero(tmp_path):
    from layout_fixtures import VOC_IDS_BOXES, VOC_NAMES

    root = make_voc_ids_coco(tmp_path)
    records, table = open_layout_classes(LayoutConfig(layout="coco", root=str(root), split="val2017"))
    m = records[0].load_mask()
    boxes = dict(VOC_IDS_BOXES)
    y0, y1, x0, x1 = boxes[15]
    assert (m[y0:y1, x0:x1] == 15).all()  # person is 15, as in the voc shards of the same photos (not 16)
    y0, y1, x0, x1 = boxes[7]
    assert (m[y0:y1, x0:48] == 7).all()  # car is 7; the _background_ box over it paints nothing
    assert set(np.unique(m).tolist()) == {0, 7, 15}
    assert table.scheme == "by_name" and table.source_ids[0] == 0 and table.names[0] == "_background_"
    assert {table.source_ids[i + 1]: table.names[table.source_ids[i + 1]] for i in range(20)} == {i + 1: n for i, n in enumerate(VOC_NAMES)}
    assert records[0].extra["max_class"] == 20
    text = table.describe()
    assert "by category name" in text and "15 -> 15 person" in text and "0 -> 0 _background_" in text


def test_coco_category_names_decide_standard_or_by_name_whatever_the_json_order(tmp_path):
    cats = [{"id": 3, "name": "Car"}, {"id": 1, "name": "person"}]  # COCO's ids and names (case aside)
    mapping, table = category_classes(cats, tmp_path / "x.json")
    assert mapping == {1: 1, 3: 3} and table.scheme == "coco"
    renamed = [{"id": 3, "name": "auto"}, {"id": 1, "name": "human"}, {"id": 9, "name": "auto"}]  # not COCO's names
    mapping, table = category_classes(renamed, tmp_path / "x.json")
    assert mapping == {3: 1, 9: 1, 1: 2} and table.names == {1: "auto", 2: "human"}  # sorted by name, merged
    with pytest.raises(DataError, match=r"x\.json: category 5 has no 'name'"):
        category_classes([{"id": 5}], tmp_path / "x.json")


# ---------------------------------------------------------------- semantic (any labelled set)
def semantic_cfg(root, **kw) -> LayoutConfig:
    return LayoutConfig(layout="semantic", root=str(root), class_names="classes.yaml", void_ids=[SEMANTIC_VOID], **kw)


def test_semantic_layout_remaps_non_contiguous_ids_background_and_void(tmp_path):
    root = make_semantic(tmp_path)
    records, table = open_layout_classes(semantic_cfg(root))
    assert [r.key for r in records] == ["semantic/frame000", "semantic/frame001", "semantic/frame002"]
    assert {Path(r.source).suffix for r in records} == {".jpg", ".png"}  # matched by stem, any extension
    lut = np.vectorize(SEMANTIC_MAP.__getitem__)
    for i, r in enumerate(records):
        got = r.load_mask()
        assert got.dtype == np.uint8 and np.array_equal(got, lut(semantic_source_mask(i)).astype(np.uint8))
        assert r.extra["max_class"] == 3 and r.load_image().size == (W, H)
    assert table.source_ids == SEMANTIC_MAP
    assert table.names == {0: "unlabelled", 1: "road", 2: "car", 3: "pedestrian"}
    pickle.loads(pickle.dumps(records))


@pytest.mark.parametrize("style", ["text", "yaml_list"])
def test_semantic_class_names_may_be_one_per_line_or_a_yaml_list(tmp_path, style):
    root = make_semantic(tmp_path)
    names = [f"c{i}" for i in range(13)]  # ids 0..12 by position
    path = root / ("names.txt" if style == "text" else "names.yml")
    path.write_text("\n".join(names) + "\n\n" if style == "text" else "".join(f"- {n}\n" for n in names))
    cfg = LayoutConfig(layout="semantic", root=str(root), class_names=path.name, background_id=None, void_ids=[SEMANTIC_VOID])
    (r, *_), table = open_layout_classes(cfg)
    assert table.source_ids[0] == 1 and table.source_ids[12] == 13 and 0 not in table.names  # no background class
    assert np.array_equal(np.unique(r.load_mask()), [1, 4, 8, 13, 255])


def test_semantic_mask_value_neither_named_nor_void_is_an_error_naming_the_mask(tmp_path):
    root = make_semantic(tmp_path)
    recs = by_key(LayoutConfig(layout="semantic", root=str(root), class_names="classes.yaml"))  # void 30 not declared
    mask = root / "masks" / "frame000.png"
    with pytest.raises(DataError, match=rf"mask {re.escape(str(mask))}: values \[30\] are neither named in .*classes\.yaml nor in data\.void_ids"):
        recs["semantic/frame000"].load_mask()


def test_semantic_layout_settings_that_cannot_work_are_errors_naming_the_key(tmp_path):
    root = make_semantic(tmp_path)
    with pytest.raises(ConfigError, match="data.class_names is not set"):
        open_layout(LayoutConfig(layout="semantic", root=str(root)))
    with pytest.raises(ConfigError, match=r"data\.background_id=0 is also in data\.void_ids"):
        open_layout(semantic_cfg(root, background_id=0).model_copy(update={"void_ids": [0]}))
    with pytest.raises(DataError, match=r"data\.mask_dir=labels: .*labels is not a folder"):
        open_layout(semantic_cfg(root, mask_dir="labels"))
    (root / "masks" / "orphan.png").write_bytes((root / "masks" / "frame000.png").read_bytes())
    with pytest.raises(DataError, match=r"mask .*orphan\.png has no image in .*images"):
        open_layout(semantic_cfg(root))
    (root / "masks" / "orphan.png").unlink()
    (root / "images" / "frame000.png").write_bytes((root / "images" / "frame001.png").read_bytes())
    with pytest.raises(DataError, match=r"images .*frame000\.jpg and .*frame000\.png share the stem 'frame000'"):
        open_layout(semantic_cfg(root))


# ---------------------------------------------------------------- coco128-style semantic PNGs
def test_coco_semantic_png_maps_things_stuff_and_unlabeled(tmp_path):
    root = make_coco_semantic(tmp_path)
    recs = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017", coco_format="semantic_png"))
    assert len(recs) == 4
    m = recs["coco/val2017/000000000001"].load_mask()
    assert m[0, 0] == 1 and m[30, 0] == 80 and m[0, 40] == 0 and m[0, 60] == 255
    assert not recs["coco/val2017/000000000004"].has_mask  # no mask file: yielded without a mask


def test_coco_semantic_png_never_applies_exif(tmp_path):
    root = make_coco_semantic(tmp_path)
    r = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017", coco_format="semantic_png"))["coco/val2017/000000000001"]
    assert "exif" in Image.open(r.source).info
    check_mask(r.load_image().size, r.load_mask(), r.key, max_class=80)


def test_coco_semantic_png_with_a_non_coco_id_is_a_data_error(tmp_path):
    root = make_coco_semantic(tmp_path, n=1)
    png = root / "semantic_segmentation" / "masks" / "val2017" / "000000000001.png"
    a = np.array(Image.open(png))
    a[0, 0] = 91  # between things and stuff: no such category
    Image.fromarray(a).save(png)
    with pytest.raises(DataError, match=r"000000000001\.png: values \[91\] are not COCO panoptic category ids"):
        coco.semantic_mask(png)


# ---------------------------------------------------------------- FSS-1000
def test_fss_binary_masks_class_ids_and_splits(tmp_path):
    data, splits = make_fss(tmp_path, n=2)
    names = sorted(n for ns in FSS_CLASSES.values() for n in ns)
    for split, classes in FSS_CLASSES.items():
        recs = by_key(LayoutConfig(layout="fss", root=str(data), split=split, fss_split_dir=str(splits)))
        assert sorted(recs) == sorted(f"fss/{c}/{k}" for c in classes for k in (1, 2))
        for key, r in recs.items():
            name = key.split("/")[1]
            assert r.extra["binary_class"] == names.index(name) + 1
            m = r.load_mask()
            y0, y1, x0, x1 = FSS_BOX
            assert set(np.unique(m)) == {0, 1} and int(m.sum()) == (y1 - y0) * (x1 - x0) and m[y0, x0] == 1
            check_mask(r.load_image().size, m, key, max_class=1)


def test_fss_split_dir_defaults_to_shared_data_relative_to_cwd(tmp_path, monkeypatch):
    data, splits = make_fss(tmp_path / "a" / "b", n=1)
    work = tmp_path / "work"
    work.mkdir()
    hs = tmp_path / "shared" / "data" / "splits" / "hsnet"
    hs.mkdir(parents=True)
    splits.rename(hs / "fss")
    monkeypatch.chdir(work)
    recs = by_key(LayoutConfig(layout="fss", root=str(data), split="test"))
    assert sorted(recs) == ["fss/fox/1", "fss/goose/1"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="set data.fss_split_dir"):
        open_layout(LayoutConfig(layout="fss", root=str(data), split="test"))


def test_fss_missing_class_folder_or_mask_is_a_data_error(tmp_path):
    data, splits = make_fss(tmp_path, n=2)
    (data / "dog" / "2.png").unlink()
    with pytest.raises(DataError, match=r"dog/2\.jpg: its mask .*dog/2\.png is missing"):
        open_layout(LayoutConfig(layout="fss", root=str(data), split="val", fss_split_dir=str(splits)))
    with open(splits / "test.txt", "a") as fh:
        fh.write("zebra\n")
    with pytest.raises(DataError, match=r"test\.txt: class zebra has no folder"):
        open_layout(LayoutConfig(layout="fss", root=str(data), split="test", fss_split_dir=str(splits)))


# ---------------------------------------------------------------- the real coco128 files
@pytest.mark.realdata
def test_coco128_semantic_png_reproduces_the_data_readme_facts(coco128):
    per_class: dict[int, int] = {}
    seen: set[int] = set()
    n_masks = 0
    for split in ("train2017", "val2017"):
        recs = open_layout(LayoutConfig(layout="coco", root=str(coco128), split=split, coco_format="semantic_png"))
        assert len(recs) == 128 and sum(r.has_mask for r in recs) == 100
        for r in recs:
            if not r.has_mask:
                continue
            n_masks += 1
            m = check_mask(image_size(r.source), r.load_mask(), r.key, max_class=80)
            px = class_pixels(m)
            seen |= set(px)
            for c in classes_present(px):
                per_class[c] = per_class.get(c, 0) + 1
    # Measured here, and stated in ../shared/data/README.md.
    assert n_masks == 200
    assert per_class[1] == 96  # person covers >= 2x32x32 px in 96 images
    assert len(seen) == 76  # thing classes that occur
    assert sum(n >= 2 for n in per_class.values()) == 63  # 1-shot-able
    assert sum(n >= 5 for n in per_class.values()) == 32  # 5-shot-able


@pytest.mark.realdata
def test_coco128_panoptic_agrees_with_semantic_png_except_crowd(coco128):
    sem = {r.key: r for r in open_layout(LayoutConfig(layout="coco", root=str(coco128), split="val2017", coco_format="semantic_png"))}
    pan = open_layout(LayoutConfig(layout="coco", root=str(coco128), split="val2017", coco_format="panoptic"))
    assert len(pan) == 100 and all(r.has_mask for r in pan)
    assert {r.key for r in pan} == {k for k, r in sem.items() if r.has_mask}
    for r in pan[:12]:
        p = r.load_mask()
        s = sem[r.key].load_mask()
        assert p.shape == s.shape
        both = (p != 255) & (s != 255)
        assert np.array_equal(p[both], s[both])
        assert np.all(p[s == 255] == 255)  # unlabeled in one is unlabeled in the other
        assert r.load_image().size == (p.shape[1], p.shape[0])


# ---------------------------------------------------------------- load_record: image + mask checked together
def test_load_record_detects_a_mask_whose_size_differs_from_its_image(tmp_path):
    import json

    root = make_coco_instances(tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["images"][2]["height"] = H + 8  # the JSON disagrees with the JPEG on disk
    path.write_text(json.dumps(data))
    recs = by_key(LayoutConfig(layout="coco", root=str(root), split="val2017"))
    image, mask = load_record(recs["coco/val2017/000000000001"])
    assert image.size == (W, H) and mask.shape == (H, W)
    with pytest.raises(DataError, match=r"coco/val2017/000000000003 \(mask .*instances_val2017\.json, image 3\): mask is 64x56"):
        load_record(recs["coco/val2017/000000000003"])


def test_load_record_detects_voc_class_ids_out_of_range(tmp_path):
    root = make_voc(tmp_path, n=1)
    png = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000001.png"
    im = Image.open(png)
    a = np.array(im)
    a[0, 0] = 42
    bad = Image.fromarray(a, "P")
    bad.putpalette(im.getpalette())
    bad.save(png)
    r = by_key(LayoutConfig(layout="voc", root=str(root), split="train"))["voc/2007_000001"]
    with pytest.raises(DataError, match=r"voc/2007_000001 .*class ids \[42\] out of range \(expected 0\.\.20 or 255"):
        load_record(r)


def test_load_record_without_mask_and_min_side(tmp_path):
    top = make_folder(tmp_path)
    r = by_key(LayoutConfig(layout="folder", root=str(top)))["folder/d.JPEG"]
    image, mask = load_record(r)
    assert mask is None and image.size == (W, H)
    with pytest.raises(DataError, match=r"folder/d\.JPEG .*d\.JPEG\): image is 64x48, expected at least 100 px"):
        load_record(r, min_side=100)
