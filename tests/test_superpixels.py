"""Superpixel label maps (SLIC, Felzenszwalb) and the Fig. 4 picture."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage
from skimage.segmentation import find_boundaries, slic

from glocon.config import load_config
from glocon.data.layouts import LayoutConfig
from glocon.data.layouts import _embedded_draw as D
from glocon.data.layouts import embedded as E
from glocon.data.schema import Sample, encode_sample
from glocon.data.superpixels import FHConfig, SlicConfig, SuperpixelConfig, fh_labels, relabel_contiguous, slic_labels, superpixels
from glocon.errors import DataError
from glocon.viz.superpixels import GAP, LABEL_H, TITLE_H, panel_scale, show_superpixels, superpixel_figure


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural photo bundled in the scikit-image wheel, at 128 px."""
    with Image.open(D.skimage_data_dir() / "astronaut.png") as img:
        return np.asarray(img.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def embedded_image(tmp_path_factory) -> np.ndarray:
    cfg = LayoutConfig(layout="embedded", min_class_pixels=256, embedded={"size": 96, "n_images": 4, "cache_dir": str(tmp_path_factory.mktemp("emb"))})
    return D.render(0, E.spec_from(cfg)).image


@pytest.fixture(params=["photo", "embedded_image"])
def image(request) -> np.ndarray:
    return request.getfixturevalue(request.param)


def assert_contiguous(labels: np.ndarray, shape: tuple[int, int]) -> int:
    assert labels.shape == shape and labels.dtype == np.int32
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))  # every pixel has one of 0..n-1, none skipped
    return len(ids)


def test_slic_and_fh_maps_are_contiguous_from_zero_and_label_every_pixel(image):
    s, f = superpixels(image)
    assert assert_contiguous(s, image.shape[:2]) > 4
    assert assert_contiguous(f, image.shape[:2]) > 4


def test_each_slic_segment_is_one_connected_region(image):
    s = slic_labels(image)
    for k in range(s.max() + 1):
        assert ndimage.label(s == k)[1] == 1, k


def test_fh_segments_respect_min_size(image):
    f = fh_labels(image, FHConfig(min_size=40))
    assert np.bincount(f.ravel()).min() >= 40


def test_slic_segment_count_follows_n_segments(photo):
    few = slic_labels(photo, SlicConfig(n_segments=16)).max() + 1
    many = slic_labels(photo, SlicConfig(n_segments=150)).max() + 1
    assert many > 3 * few
    assert 0.4 * 150 <= many <= 1.5 * 150


def test_fh_segment_count_falls_as_scale_grows(photo):
    counts = [fh_labels(photo, FHConfig(scale=s, min_size=20)).max() + 1 for s in (30, 300, 3000)]
    assert counts[0] > counts[1] > counts[2]


def test_relabel_contiguous_keeps_the_partition():
    labels = np.array([[7, 7, 3], [9, 3, 3]])
    out = relabel_contiguous(labels)
    assert out.tolist() == [[1, 1, 0], [2, 0, 0]]


def test_parameters_come_from_the_yaml_config_and_overrides(tmp_path, photo):
    path = tmp_path / "sp.yaml"
    path.write_text(yaml.safe_dump({"slic": {"n_segments": 30, "compactness": 5.0}, "fh": {"scale": 120.0}}))
    cfg = load_config(SuperpixelConfig, path, ["fh.min_size=33", "slic.sigma=0.5"])
    assert (cfg.slic.n_segments, cfg.slic.compactness, cfg.slic.sigma, cfg.fh.scale, cfg.fh.min_size) == (30, 5.0, 0.5, 120.0, 33)
    s, f = superpixels(photo, cfg)
    direct = slic(photo, n_segments=30, compactness=5.0, sigma=0.5, max_num_iter=10, start_label=0, channel_axis=-1)
    assert np.array_equal(s, relabel_contiguous(direct))
    assert not np.array_equal(s, slic_labels(photo))  # the defaults give another map
    assert np.bincount(f.ravel()).min() >= 33


def test_figure_is_three_panels_wide_with_image_and_marked_boundaries(tmp_path, embedded_image):
    img = embedded_image
    s, f = superpixels(img)
    out = superpixel_figure(img, s, f, tmp_path / "fig4.png", title="embedded/000000")
    assert out.is_file()
    fig = np.asarray(Image.open(out).convert("RGB"))
    k = panel_scale(*img.shape[:2])
    assert k == 3  # 96 px is enlarged to reach 256
    ph, pw = 96 * k, 96 * k
    top = LABEL_H + TITLE_H
    assert fig.shape == (ph + top, 3 * pw + 2 * GAP, 3)
    big = np.repeat(np.repeat(img, k, 0), k, 1)
    assert np.array_equal(fig[top:, :pw], big)  # left panel: the image itself
    for i, labels in ((1, s), (2, f)):
        panel = fig[top:, i * (pw + GAP) : i * (pw + GAP) + pw]
        edges = find_boundaries(np.repeat(np.repeat(labels, k, 0), k, 1), mode="inner")
        assert np.array_equal(panel[~edges], big[~edges])  # untouched off the boundaries
        assert np.all(panel[edges] == (255, 255, 0))  # boundaries in yellow
    no_title = np.asarray(Image.open(superpixel_figure(img, s, f, tmp_path / "plain.png")))
    assert no_title.shape[0] == ph + LABEL_H


def test_figure_rejects_label_maps_of_another_size(tmp_path, photo):
    s, f = superpixels(photo)
    with pytest.raises(DataError, match="fh label map"):
        superpixel_figure(photo, s, f[:-1], tmp_path / "x.png")


@pytest.mark.filterwarnings("ignore:embedded layout.*fewer than:UserWarning")
def test_show_superpixels_from_a_layout_computes_maps_with_the_config(tmp_path):
    cfg = LayoutConfig(layout="embedded", min_class_pixels=256, embedded={"size": 96, "n_images": 4, "cache_dir": str(tmp_path / "c")})
    sp = SuperpixelConfig(slic=SlicConfig(n_segments=20))
    out = show_superpixels(cfg, "embedded/000002", tmp_path / "a.png", sp)
    assert Image.open(out).size == (3 * 288 + 2 * GAP, 288 + LABEL_H + TITLE_H)
    with pytest.raises(DataError, match="embedded/000009"):
        show_superpixels(cfg, "embedded/000009", tmp_path / "b.png", sp)


def test_show_superpixels_from_shards_uses_the_stored_maps(tmp_path, photo):
    import webdataset as wds

    # stored maps that no superpixel algorithm would produce: show must draw these, not recompute
    slic_map = (np.arange(128)[None, :] // 32 + 4 * (np.arange(128)[:, None] // 64)).astype(np.int32)
    fh_map = (np.arange(128)[:, None] // 16 * np.ones((1, 128))).astype(np.int32)
    meta = {"key": "demo/7", "source": "x.png", "orig_size": [128, 128], "classes": {}}
    shard = tmp_path / "shards-000000.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write(encode_sample(Sample(key="demo/7", image=photo, slic=slic_map, fh=fh_map, meta=meta)))
    out = show_superpixels([shard], "demo/7", tmp_path / "s.png")
    fig = np.asarray(Image.open(out).convert("RGB"))
    ref = np.asarray(Image.open(superpixel_figure(photo, slic_map, fh_map, tmp_path / "ref.png", title="demo/7")).convert("RGB"))
    # the image goes through JPEG in the shard, so compare where boundaries are drawn (exact yellow)
    assert fig.shape == ref.shape
    yellow = np.all(ref == (255, 255, 0), axis=-1)
    assert yellow.sum() > 100 and np.array_equal(np.all(fig == (255, 255, 0), axis=-1), yellow)
    with pytest.raises(DataError, match="not found"):
        show_superpixels([shard], "demo/8", tmp_path / "t.png")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:embedded layout.*fewer than:UserWarning")
def test_show_superpixels_from_a_built_shard_folder_draws_the_manifest_sample(tmp_path, ray_session):
    from glocon.data.shardindex import ShardIndex
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards

    data = {"layout": "embedded", "min_class_pixels": 256, "embedded": {"size": 64, "n_images": 3, "cache_dir": str(tmp_path / "c")}}
    cfg = ShardsConfig(data=data, out_dir=str(tmp_path / "shards"), longest_side=64, samples_per_shard=2)
    make_shards(cfg, dashboard=False)
    out = show_superpixels(tmp_path / "shards", "embedded/000001", tmp_path / "fig.png")
    sample = ShardIndex(tmp_path / "shards").get("embedded/000001")
    ref = superpixel_figure(sample.image, sample.slic, sample.fh, tmp_path / "ref.png", title="embedded/000001")
    assert out.read_bytes() == ref.read_bytes()
    assert Image.open(out).size == (3 * 256 + 2 * GAP, 256 + LABEL_H + TITLE_H)
