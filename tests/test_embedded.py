"""The embedded default data set: deterministic, exact masks, every class usable for 5-shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from glocon.data.folds import embedded_fold_classes
from glocon.data.layouts import LayoutConfig, open_layout
from glocon.data.layouts import _embedded_draw as D
from glocon.data.layouts import embedded as E
from glocon.data.record import class_pixels, classes_present
from glocon.errors import ConfigError

# Most tests use a handful of images on purpose; the 5-shot coverage warning is tested on its own.
few_images = pytest.mark.filterwarnings("ignore:embedded layout.*fewer than:UserWarning")


def layout(cache: Path, min_class_pixels: int = 256, **embedded) -> LayoutConfig:
    """A small embedded layout (96 px unless told); min_class_pixels scaled to the small images."""
    embedded = {"size": 96, "n_images": 8, "cache_dir": str(cache), **embedded}
    return LayoutConfig(layout="embedded", min_class_pixels=min_class_pixels, embedded=embedded)


def files_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    a, _ = E.generate(layout(tmp_path / "a", seed=3))
    b, _ = E.generate(layout(tmp_path / "b", seed=3))
    c, _ = E.generate(layout(tmp_path / "c", seed=4))
    fa, fb, fc = files_bytes(a), files_bytes(b), files_bytes(c)
    assert len(fa) == 16 and fa == fb
    assert fa.keys() == fc.keys()
    assert all(fa[k] != fc[k] for k in fa if k.startswith("images/"))


@few_images
def test_any_image_rerenders_alone_identically(tmp_path):
    cfg = layout(tmp_path)
    spec = E.spec_from(cfg)
    recs = open_layout(cfg)
    for i in (0, 5):
        out = D.render(i, spec)
        assert np.array_equal(np.asarray(recs[i].load_image()), out.image)
        assert np.array_equal(recs[i].load_mask(), out.mask)


def test_classes_are_distinct_shape_texture_pairs_and_each_fold_has_every_shape():
    pairs = [D.class_shape_texture(c) for c in range(1, 21)]
    assert len(set(pairs)) == 20
    for fold in range(4):
        classes = embedded_fold_classes(fold)
        assert classes == list(range(5 * fold + 1, 5 * fold + 6))
        assert sorted(D.class_shape_texture(c)[0] for c in classes) == [0, 1, 2, 3, 4]
        # a novel class shares its texture with a base class, so shape is needed to tell them apart
        base = [c for c in range(1, 21) if c not in classes]
        for c in classes:
            assert any(D.class_shape_texture(b)[1] == D.class_shape_texture(c)[1] for b in base)
    assert len(set(E.CLASS_NAMES.values())) == 20


def test_every_class_of_every_fold_has_enough_images_for_5_shot(tmp_path):
    cfg = layout(tmp_path, n_images=120)
    _, index = E.generate(cfg)
    cover = E.coverage(index, cfg.min_class_pixels)
    for fold in range(4):
        for c in embedded_fold_classes(fold):
            assert cover[c] >= E.SHOTS_NEEDED, (fold, c, cover)
    per_image = [classes_present({int(k): v for k, v in it["classes"].items()}, cfg.min_class_pixels) for it in index["images"]]
    assert sum(len(p) >= 2 for p in per_image) >= 20  # multi-class images exist


@pytest.mark.slow
def test_default_config_has_every_class_in_enough_images_at_default_min_pixels(tmp_path):
    cfg = LayoutConfig(layout="embedded", embedded={"cache_dir": str(tmp_path)})
    assert (cfg.embedded.n_images, cfg.embedded.size, cfg.min_class_pixels) == (400, 256, 2048)
    _, index = E.generate(cfg)
    cover = E.coverage(index, cfg.min_class_pixels)
    assert min(cover.values()) >= E.SHOTS_NEEDED, cover
    multi = [it for it in index["images"] if len(classes_present({int(k): v for k, v in it["classes"].items()}, 2048)) >= 2]
    assert len(multi) >= 100


def test_mask_is_exact_where_each_object_was_drawn(tmp_path):
    spec = E.spec_from(layout(tmp_path, n_images=30, objects_per_image=(2, 3)))
    plan = D.plan_classes(spec)
    for i in range(0, 30, 3):
        out = D.render(i, spec, plan[i])
        assert set(np.unique(out.mask)) <= {0, *plan[i]}
        # background pixels are untouched photo pixels
        bg = out.mask == 0
        assert np.array_equal(out.image[bg], out.background[bg])
        covered = np.zeros(out.mask.shape, dtype=bool)
        for obj in reversed(out.objects):  # last drawn is on top
            drawn = D.draw_object(obj, spec.size)
            if drawn is None:
                continue
            box, inside, rgb = drawn
            full = np.zeros_like(covered)
            full[box] = inside
            visible = full & ~covered
            assert np.all(out.mask[visible] == obj.class_id)
            assert np.array_equal(out.image[box][visible[box]], rgb[visible[box]])
            covered |= full
        # no label outside the drawn objects
        assert np.all(out.mask[~covered] == 0)


@few_images
def test_class_ids_in_range_and_records_report_their_pixels(tmp_path):
    cfg = layout(tmp_path, n_images=10)
    recs = open_layout(cfg)
    assert [r.key for r in recs] == [f"embedded/{i:06d}" for i in range(10)]
    for r in recs:
        assert r.layout == "embedded" and r.has_mask and Path(r.source).is_file()
        mask = r.load_mask()
        assert mask.dtype == np.uint8 and mask.shape == (96, 96)
        assert mask.max() <= 20
        assert r.extra["classes"] == class_pixels(mask)
        assert len(r.extra["classes"]) >= 1


@few_images
def test_size_and_count_are_configurable(tmp_path):
    recs = open_layout(layout(tmp_path, n_images=5, size=72))
    assert len(recs) == 5
    img = recs[4].load_image()
    assert img.mode == "RGB" and img.size == (72, 72)
    assert recs[4].load_mask().shape == (72, 72)


def test_unoccluded_objects_cover_at_least_min_class_pixels(tmp_path):
    spec = E.spec_from(layout(tmp_path, min_class_pixels=2048, size=256, n_images=12))
    assert spec.area_px[0] >= 1.2 * 2048
    checked = 0
    for i in range(12):
        out = D.render(i, spec)
        top = out.objects[-1]  # drawn last, never occluded
        if min(top.cy, top.cx) >= top.radius and max(top.cy, top.cx) + top.radius <= spec.size:  # not cut by the frame
            assert (out.mask == top.class_id).sum() >= 2048
            checked += 1
    assert checked >= 3


@few_images
def test_cache_is_reused_without_rendering_and_keyed_by_config(tmp_path, monkeypatch):
    cfg = layout(tmp_path, n_images=6)
    folder, _ = E.generate(cfg)
    assert folder.parent == tmp_path and folder.name.startswith("embedded-")
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise AssertionError("re-rendered a complete cache")

    monkeypatch.setattr(E, "render", boom)
    recs = open_layout(cfg)
    assert len(recs) == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert E.cache_dir_for(layout(tmp_path, n_images=7)) != folder
    assert E.cache_dir_for(layout(tmp_path, n_images=6, seed=1)) != folder
    # cache_dir itself is not part of the key
    assert E.cache_dir_for(layout(tmp_path / "elsewhere", n_images=6)).name == folder.name


def test_interrupted_cache_rebuilds_only_missing_files_identically(tmp_path):
    cfg = layout(tmp_path, n_images=6)
    folder, _ = E.generate(cfg)
    before = files_bytes(folder)
    (folder / "index.json").unlink()
    (folder / "images" / "000002.png").unlink()
    keep = folder / "images" / "000003.png"
    stamp = keep.stat().st_mtime_ns
    E.generate(cfg)
    assert files_bytes(folder) == before
    assert keep.stat().st_mtime_ns == stamp
    assert (folder / "index.json").is_file()


def test_cache_root_defaults_to_env_then_runs_cache(tmp_path, monkeypatch):
    cfg = LayoutConfig(layout="embedded")
    monkeypatch.setenv("GLOCON_CACHE", str(tmp_path / "env"))
    assert E.cache_dir_for(cfg).parent == tmp_path / "env"
    monkeypatch.delenv("GLOCON_CACHE")
    assert E.cache_dir_for(cfg).parent == Path("runs/cache")


def test_ignore_border_marks_only_pixels_near_label_changes(tmp_path):
    spec0 = E.spec_from(layout(tmp_path))
    spec2 = E.spec_from(layout(tmp_path, ignore_border=2))
    plain, bordered = D.render(1, spec0).mask, D.render(1, spec2).mask
    ignored = bordered == 255
    assert ignored.any()
    assert np.array_equal(bordered[~ignored], plain[~ignored])
    near_change = ndimage.maximum_filter(plain, size=5) != ndimage.minimum_filter(plain, size=5)
    assert np.array_equal(ignored, near_change)


def test_too_few_images_warns_that_5_shot_is_impossible(tmp_path):
    with pytest.warns(UserWarning, match="fewer than 6 images"):
        open_layout(layout(tmp_path, n_images=3))


@pytest.mark.parametrize(
    "field, value",
    [("objects_per_image", (3, 1)), ("object_area", (0.2, 0.9)), ("n_images", 0), ("size", 8), ("ignore_border", -1)],
)
def test_bad_embedded_config_names_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=f"embedded.{field}"):
        E.spec_from(layout(tmp_path, **{field: value}))


def test_backgrounds_are_photos_shipped_inside_the_scikit_image_wheel():
    folder = D.skimage_data_dir()
    photos = D._backgrounds()
    assert len(photos) >= D.MIN_BACKGROUNDS
    for name, arr in photos:
        assert (folder / name).is_file() and arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
    # a background is a crop of one of them, not a flat fill
    bg = D.background(np.random.default_rng(0), 64)
    assert bg.shape == (64, 64, 3) and bg.std() > 5


@few_images
def test_val_split_is_a_disjoint_image_set_with_its_own_keys(tmp_path):
    train = open_layout(layout(tmp_path, n_images=6))
    val = open_layout(layout(tmp_path, n_images=6).model_copy(update={"split": "val"}))
    again = open_layout(layout(tmp_path, n_images=6).model_copy(update={"split": "val"}))
    assert [r.key for r in val] == [f"embedded-val/{i:06d}" for i in range(6)]
    assert not {r.key for r in train} & {r.key for r in val}
    train_pixels = {np.asarray(r.load_image()).tobytes() for r in train}
    assert not any(np.asarray(r.load_image()).tobytes() in train_pixels for r in val)  # other images, not other names
    assert [np.asarray(r.load_image()).tobytes() for r in val] == [np.asarray(r.load_image()).tobytes() for r in again]
    with pytest.raises(ConfigError, match="data.split"):
        open_layout(layout(tmp_path, n_images=6).model_copy(update={"split": "test"}))
