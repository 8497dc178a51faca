"""Image and mask decoding: every stored mode comes out right, every bad file is a DataError naming it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glocon.data import imageio
from glocon.data.imageio import ALPHA_BACKGROUND, check_mask, check_min_side, load_mask, load_rgb
from glocon.errors import DataError
from layout_fixtures import H, W, make_folder, make_hostile_images, make_voc, voc_mask, write_bomb_png


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_images(tmp_path_factory.mktemp("hostile"))


def rgb(path, **kw) -> np.ndarray:
    im = load_rgb(path, **kw)
    assert im.mode == "RGB"
    return np.asarray(im)


# ---------------------------------------------------------------- conversions
def test_cmyk_jpeg_becomes_the_same_colour_in_rgb(hostile):
    a = rgb(hostile["cmyk_jpeg"])  # stored as C=0 M=255 Y=255 K=0: pure red
    assert a.shape == (H, W, 3)
    assert np.abs(a.astype(int) - [255, 0, 0]).max() <= 3


def test_16bit_png_is_scaled_to_8_bits_not_clipped(hostile):
    assert Image.open(hostile["png16"]).mode.startswith("I")
    a = rgb(hostile["png16"])  # a 0..65535 ramp along x
    row = a[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)
    assert abs(row[W // 2] - 255 * (W // 2) / (W - 1)) <= 1  # PIL's convert would give 255 from x=1 on
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])


def test_grayscale_becomes_three_equal_channels(hostile):
    assert np.all(rgb(hostile["gray"]) == 77)


def test_palette_png_decodes_to_its_colours(hostile):
    a = rgb(hostile["palette"])
    assert a[0, 0].tolist() == [255, 0, 0] and a[0, 1].tolist() == [0, 255, 0] and a[1, 0].tolist() == [0, 0, 255]


def test_palette_transparency_is_composited_over_the_background(hostile):
    a = rgb(hostile["palette_transparent"])
    assert a[0, 0].tolist() == [255, 0, 0]
    assert a[0, 1].tolist() == list(ALPHA_BACKGROUND)  # index 1 is transparent


def test_rgba_and_la_are_composited_not_stripped(hostile):
    a = rgb(hostile["rgba"])
    assert a[0, 0].tolist() == [0, 0, 200]  # opaque half keeps its colour
    assert a[0, -1].tolist() == list(ALPHA_BACKGROUND)  # transparent half: background, not the stored blue
    b = rgb(hostile["la"])
    assert b[-1, 0].tolist() == [100, 100, 100] and b[0, 0].tolist() == list(ALPHA_BACKGROUND)


def test_one_by_one_image_decodes_but_check_min_side_rejects_it(hostile):
    a = rgb(hostile["one_by_one"])
    assert a.shape == (1, 1, 3) and a[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(DataError, match=r"one\.png: image is 1x1, expected at least 8 px"):
        check_min_side((1, 1), str(hostile["one_by_one"]), 8)
    check_min_side((W, H), "fine.jpg", 8)


# ---------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    "case, message",
    [
        ("zero_byte", r"zero\.jpg: empty file \(0 bytes"),
        ("text_as_png", r"text\.png: not a decodable image \(expected a JPEG, PNG or WebP image\); it starts with b'<html>"),
        ("truncated_jpeg", r"truncated\.jpg: truncated or corrupt image data"),
        ("truncated_jpeg_header", r"truncated_header\.jpg: truncated or corrupt image header"),
        ("bomb", r"bomb\.png: decompression bomb refused: 10000x10000 = 100000000 pixels, expected at most 89478485"),
    ],
)
def test_bad_image_is_a_data_error_naming_the_file(hostile, case, message):
    with pytest.raises(DataError, match=message):
        load_rgb(hostile[case])


def test_missing_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jpg: file not found"):
        load_rgb(tmp_path / "nope.jpg")


def test_bomb_beyond_pils_own_error_threshold_is_still_a_data_error(tmp_path):
    path = write_bomb_png(tmp_path / "huge.png", 50_000, 50_000)  # 2.5e9 px: PIL raises at open
    with pytest.raises(DataError, match=r"huge\.png: decompression bomb refused"):
        load_rgb(path)


def test_pixel_limit_is_configurable_both_ways(hostile, monkeypatch):
    with pytest.raises(DataError, match=r"good\.jpg: decompression bomb refused: 64x48 = 3072 pixels, expected at most 1000"):
        load_rgb(hostile["truncated_jpeg"].with_name("good.jpg"), max_pixels=1000)
    # A limit above PIL's own global must win over it, and the global must be restored after.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert load_rgb(hostile["gray"], max_pixels=10_000).size == (W, H)
    assert load_rgb(hostile["gray"], max_pixels=None).size == (W, H)  # None: no limit
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(DataError, match="decompression bomb"):
        load_rgb(hostile["gray"], max_pixels=1000)


# ---------------------------------------------------------------- orientation
def test_exif_orientation_is_applied_only_when_asked(tmp_path):
    path = make_folder(tmp_path) / "a.jpg"  # stored 64x48 with orientation 6
    assert load_rgb(path, apply_exif=False).size == (W, H)
    upright = load_rgb(path, apply_exif=True)
    assert upright.size == (H, W)
    stored = np.asarray(load_rgb(path, apply_exif=False)).astype(int)
    # orientation 6 = rotate 90 degrees clockwise to display
    assert np.abs(np.asarray(upright).astype(int) - np.rot90(stored, k=-1)).mean() < 1.0


# ---------------------------------------------------------------- masks
def test_palette_mask_reads_indices_not_colours(tmp_path):
    voc = make_voc(tmp_path, n=1) / "VOCdevkit" / "VOC2012"
    png = voc / "SegmentationClass" / "2007_000001.png"
    assert Image.open(png).mode == "P"
    m = load_mask(png)
    assert m.dtype == np.uint8 and m.shape == (H, W)
    assert np.array_equal(m, voc_mask(1))  # class 1 and the 255 border, exactly


def test_mask_of_16bit_gray_with_small_ids_is_read_and_large_ids_refused(tmp_path):
    small = np.full((H, W), 7, np.uint16)
    Image.fromarray(small).save(tmp_path / "small.png")
    assert np.all(load_mask(tmp_path / "small.png") == 7)
    Image.fromarray(np.full((H, W), 300, np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png: mask values span 300\.\.300, expected class ids in 0\.\.255"):
        load_mask(tmp_path / "big.png")


def test_colour_mask_is_refused_but_gray_saved_as_rgb_is_read(tmp_path):
    gray = np.full((H, W), 5, np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "g.png")
    assert np.all(load_mask(tmp_path / "g.png") == 5)
    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 0] = 128
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png: mask has mode RGB, expected a single-channel"):
        load_mask(tmp_path / "c.png")


def test_check_mask_detects_wrong_size_dtype_and_ids_out_of_range():
    good = voc_mask(3)
    assert check_mask((W, H), good, "voc/x", max_class=20) is good
    with pytest.raises(DataError, match=r"voc/x: mask is 64x48 \(WxH\) but its image is 48x64"):
        check_mask((H, W), good, "voc/x")
    with pytest.raises(DataError, match=r"voc/x: mask has dtype int32"):
        check_mask((W, H), good.astype(np.int32), "voc/x")
    with pytest.raises(DataError, match=r"voc/x: mask has shape \(48, 64, 3\)"):
        check_mask((W, H), np.stack([good] * 3, -1), "voc/x")
    bad = good.copy()
    bad[0, 0] = 21
    with pytest.raises(DataError, match=r"voc/x: mask holds class ids \[21\] out of range \(expected 0\.\.20 or 255"):
        check_mask((W, H), bad, "voc/x", max_class=20)


def test_image_size_reads_the_header_only(hostile):
    assert imageio.image_size(hostile["cmyk_jpeg"]) == (W, H)
    with pytest.raises(DataError, match="zero.jpg"):
        imageio.image_size(hostile["zero_byte"])
