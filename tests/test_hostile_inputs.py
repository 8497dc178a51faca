"""Hostile inputs, one test each: every one ends in a clear error that names the file, key or
field and what was expected, or in a documented, recorded skip (a logged warning, a ``rejected``
entry in the shard manifest, a clipped polygon).

Inputs reach glocon the way a user's data does: through a layout (``open_layout``), the shard
writer's per-sample step (``make_sample`` / ``build_shard``, run here in-process, no Ray), the
readers, the config loader, the checkpoint loaders, the bank and the plugin scan. Sizes stay at
64 x 48 px so the whole file runs in seconds.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import tarfile
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from glocon.config import load_config
from glocon.data.imageio import load_record, load_rgb
from glocon.data.layouts import LayoutConfig, open_layout
from glocon.data.readers import stream_samples
from glocon.data.shardset import ShardSet
from glocon.data.shardindex import ShardIndex, scan_tar
from glocon.data.schema import Sample, encode_sample
from glocon.data.manifest import Manifest
from glocon.data.shardplan import BuildSpec, ShardsConfig, plan_shards
from glocon.data.shardtask import Rejected, build_shard, make_sample, open_tar_writer
from glocon.errors import CheckpointError, ConfigError, DataError
from layout_fixtures import H, W, add_symlink_loop, make_coco_instances, make_folder, make_hostile_images, make_voc
from shard_writer import write_sample_shards

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# small superpixel settings: the fixtures are 64 x 48 px
SPEC = BuildSpec.from_config(ShardsConfig(longest_side=64, min_side=8, superpixels={"slic": {"n_segments": 16}}))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """The hostile images of ``layout_fixtures`` in one folder (a plain-folder data set)."""
    return make_hostile_images(tmp_path_factory.mktemp("hostile") / "images")


@pytest.fixture(scope="module")
def folder_records(hostile) -> dict[str, object]:
    """file name -> the folder layout's record for it (how a user's folder of photos is read)."""
    root = hostile["zero_byte"].parent
    return {Path(r.source).name: r for r in open_layout(LayoutConfig(layout="folder", root=str(root)))}


def rejected_reason(record) -> str:
    """What the shard writer records for a record it refuses (its ``rejected`` reason)."""
    with pytest.raises(Rejected) as info:
        make_sample(record, SPEC)
    return str(info.value)


def sample(i: int, h: int = 48, w: int = 64) -> Sample:
    """A shard sample with small, structured label maps (class 3 on the left half)."""
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    slic = ((yy // 12) * 4 + xx // 16).astype(np.int32)  # 16 blocks
    fh = (xx // 32).astype(np.int32)
    mask = np.where(xx < w // 2, 3, 0).astype(np.uint8)
    meta = {"key": f"img/{i:03d}", "source": f"/data/{i:03d}.jpg", "orig_size": [h, w], "classes": {"3": int((mask == 3).sum())}}
    return Sample(key=f"img/{i:03d}", image=image, slic=slic, fh=fh, meta=meta, mask=mask)


def write_shards(folder: Path, n: int = 4, per_shard: int = 2) -> Manifest:
    """Shards + manifest laid out as make_shards writes them (its tar writer, the one schema)."""
    samples = [sample(i) for i in range(n)]
    return write_sample_shards(folder, samples, per_shard, "shard", {3: [x.key for x in samples]})


def voc_record(root: Path, ident: str = "2007_000001"):
    return {r.key: r for r in open_layout(LayoutConfig(layout="voc", root=str(root), split="train"))}[f"voc/{ident}"]


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def test_truncated_jpeg_is_refused_naming_the_file(folder_records, hostile):
    record = folder_records["truncated.jpg"]
    with pytest.raises(DataError, match=rf"{re.escape(str(hostile['truncated_jpeg']))}: truncated or corrupt image data .*expected a JPEG, PNG or WebP"):
        record.load_image()
    assert str(hostile["truncated_jpeg"]) in rejected_reason(record)


def test_zero_byte_file_is_refused_naming_the_file(folder_records, hostile):
    with pytest.raises(DataError, match=rf"{re.escape(str(hostile['zero_byte']))}: empty file \(0 bytes; expected a JPEG"):
        folder_records["zero.jpg"].load_image()
    assert "empty file" in rejected_reason(folder_records["zero.jpg"])


def test_png_that_is_really_text_is_refused_showing_what_it_holds(folder_records, hostile):
    with pytest.raises(DataError, match=rf"{re.escape(str(hostile['text_as_png']))}: not a decodable image \(expected .*\); it starts with b'<html>404"):
        folder_records["text.png"].load_image()


def test_cmyk_jpeg_is_converted_to_the_right_rgb_colours(tmp_path):
    # Five 16 px patches, stored as CMYK: red, green, blue, black, mid grey (K only).
    patches = [((0, 255, 255, 0), (255, 0, 0)), ((255, 0, 255, 0), (0, 255, 0)), ((255, 255, 0, 0), (0, 0, 255)),
               ((0, 0, 0, 255), (0, 0, 0)), ((0, 0, 0, 128), (127, 127, 127))]
    im = Image.new("CMYK", (16 * len(patches), 16))
    for i, (cmyk, _) in enumerate(patches):
        im.paste(cmyk, (16 * i, 0, 16 * (i + 1), 16))
    path = tmp_path / "cmyk.jpg"
    im.save(path, "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (16 * len(patches), 16)
    a = np.asarray(rgb).astype(int)
    for i, (_, want) in enumerate(patches):
        got = a[8, 16 * i + 8]
        assert np.abs(got - want).max() <= 6, f"patch {i}: CMYK -> {got.tolist()}, expected {want}"


def test_16bit_png_is_scaled_to_8_bits_not_clipped(folder_records, hostile):
    raw = np.asarray(Image.open(hostile["png16"])).astype(np.float64)  # (H, W) 0..65535 ramp along x
    assert raw.max() > 255, "the fixture must really hold 16-bit values"
    a = np.asarray(folder_records["gray16.png"].load_image())
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[..., 0], np.round(raw / 257).astype(np.uint8))  # 65535 -> 255, linear
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
    assert len(np.unique(a[0, :, 0])) == W  # a clipping conversion would flatten most of the ramp to 255


def test_huge_image_beyond_the_pixel_limit_is_refused_naming_the_limit(folder_records, hostile, tmp_path):
    with pytest.raises(DataError, match=rf"{re.escape(str(hostile['bomb']))}: decompression bomb refused: 10000x10000 = 100000000 pixels, expected at most 89478485"):
        folder_records["bomb.png"].load_image()
    # The limit is a config value: an ordinary 64x48 photo is refused under a tighter one, and the message names the key.
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(hostile["zero_byte"].parent / "good.jpg", small / "good.jpg")
    (record,) = open_layout(LayoutConfig(layout="folder", root=str(small), max_image_pixels=1000))
    with pytest.raises(DataError, match=r"good\.jpg: decompression bomb refused: 64x48 = 3072 pixels, expected at most 1000 \(raise data\.max_image_pixels"):
        record.load_image()


def test_one_by_one_image_decodes_exactly_but_the_shard_writer_rejects_it_with_the_reason(folder_records, hostile):
    record = folder_records["one.png"]
    assert np.asarray(record.load_image()).tolist() == [[[10, 20, 30]]]  # decoded exactly
    # Too small for superpixels: a documented rejection naming the size and the limit, never a crash in SLIC.
    assert rejected_reason(record) == f"image {hostile['one_by_one']} is 1x1, smaller than min_side={SPEC.min_side}"
    with pytest.raises(DataError, match=rf"folder/one\.png \({re.escape(str(hostile['one_by_one']))}\): image is 1x1, expected at least 8 px"):
        load_record(record, min_side=8)


def test_shard_writer_turns_every_bad_image_into_a_rejected_entry_and_keeps_the_good_ones(folder_records, tmp_path):
    cfg = ShardsConfig(out_dir=str(tmp_path / "shards"), samples_per_shard=64, longest_side=64, superpixels={"slic": {"n_segments": 16}})
    (plan,), refused = plan_shards(list(folder_records.values()), cfg)
    done = build_shard(plan, str(tmp_path / "shards"), BuildSpec.from_config(cfg))
    reasons = {Path(r["path"]).name: r["reason"] for r in done["rejected"]}
    assert not refused
    assert set(reasons) == {"truncated.jpg", "truncated_header.jpg", "zero.jpg", "text.png", "bomb.png", "one.png"}
    for name, reason in reasons.items():
        assert name in reason or "1x1" in reason, f"{name}: the reason should name the file: {reason}"
    written = {k.split("/")[-1] for k in done["keys"]}
    assert {"good.jpg", "cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "la.png"} <= written
    assert written.isdisjoint(reasons)
    assert len(list(stream_samples([str(tmp_path / "shards" / plan.name)]))) == done["count"]


# ---------------------------------------------------------------------------------------------
# masks and annotation files
# ---------------------------------------------------------------------------------------------
def test_mask_of_the_wrong_size_is_refused_naming_the_mask_file_and_both_sizes(tmp_path):
    root = make_voc(tmp_path, n=1)
    png = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000001.png"
    small = Image.open(png).resize((W // 2, H // 2), Image.NEAREST)
    small.save(png)
    record = voc_record(root)
    with pytest.raises(DataError, match=rf"voc/2007_000001 \(mask {re.escape(str(png))}\): mask is 32x24 \(WxH\) but its image is 64x48; expected the same size"):
        load_record(record)
    # the shard writer's rejection names both files, the mask first: it is the one at fault
    assert rejected_reason(record) == f"mask size 32x24 differs from image size 64x48 (mask {png}, image {record.source})"


def test_mask_with_class_ids_out_of_range_is_refused_naming_the_ids_and_the_range(tmp_path):
    root = make_voc(tmp_path, n=1)
    png = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000001.png"
    im = Image.open(png)
    a = np.array(im)
    a[0, 0], a[0, 1] = 37, 200  # VOC has classes 0..20 and 255
    bad = Image.fromarray(a, "P")
    bad.putpalette(im.getpalette())
    bad.save(png)
    record = voc_record(root)
    with pytest.raises(DataError, match=rf"{re.escape(str(png))}\): mask holds class ids \[37, 200\] out of range \(expected 0\.\.20 or 255"):
        load_record(record)
    # the shard writer refuses it too, instead of indexing a class 37 that VOC does not have
    assert re.search(r"class ids \[37, 200\] out of range \(expected 0\.\.20", rejected_reason(record))


def test_voc_list_naming_a_missing_image_is_refused_naming_the_list_and_the_id(tmp_path):
    root = make_voc(tmp_path, n=2)
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    with open(lists / "train.txt", "a") as fh:
        fh.write("2007_009999\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(lists / 'train.txt'))}: id 2007_009999 names a missing image .*JPEGImages/2007_009999\.jpg"):
        open_layout(LayoutConfig(layout="voc", root=str(root), split="train"))


def test_coco_json_with_a_category_missing_from_categories_is_refused_naming_json_annotation_and_id(tmp_path):
    root = make_coco_instances(tmp_path, missing_category=True)
    json_path = root / "annotations" / "instances_val2017.json"
    with pytest.raises(DataError, match=rf"{re.escape(str(json_path))}: annotation 7 has category_id 999, which is missing from 'categories' \(expected one of"):
        open_layout(LayoutConfig(layout="coco", root=str(root), split="val2017"))


def test_coco_polygons_out_of_bounds_are_clipped_to_the_image_not_fatal(tmp_path):
    root = make_coco_instances(tmp_path)
    recs = {r.key: r for r in open_layout(LayoutConfig(layout="coco", root=str(root), split="val2017"))}
    image, mask = load_record(recs["coco/val2017/000000000002"])  # polygons from (-30, -20) and out to 1e7
    assert mask.shape == (H, W) and image.size == (W, H)
    ys, xs = np.nonzero(mask[:24, :40] == 80)  # [-30, 30] x [-20, 20] clipped to [0, 30] x [0, 20]
    assert ys.min() == 0 and xs.min() == 0 and 18 <= ys.max() <= 20 and 28 <= xs.max() <= 30
    assert mask[H - 1, W - 1] == 80 and mask[29, 55] == 0  # [50, 1e7] x [30, 1e7] clipped to the corner
    assert abs(int((mask == 80).sum()) - (30 * 20 + 14 * 18)) <= 40


def test_coco_json_listing_only_some_categories_keeps_coco_ids_not_compressed_ones(tmp_path):
    from layout_fixtures import make_coco_subset

    root = make_coco_subset(tmp_path)  # person (1), car (3), bottle (44) only
    (record,) = open_layout(LayoutConfig(layout="coco", root=str(root), split="val2017"))
    _, mask = load_record(record)
    assert set(np.unique(mask).tolist()) == {0, 1, 3, 40}  # COCO-20i's ids; renumbering would give 1, 2, 3


def test_coco_json_with_voc_ids_and_labelme_background_keeps_voc_ids_and_background_zero(tmp_path):
    from layout_fixtures import make_voc_ids_coco

    root = make_voc_ids_coco(tmp_path)  # category 0 is _background_, 1..20 are VOC's by VOC id
    (record,) = open_layout(LayoutConfig(layout="coco", root=str(root), split="val2017"))
    _, mask = load_record(record)
    assert set(np.unique(mask).tolist()) == {0, 7, 15}  # car 7 and person 15, as in voc shards; not moved up by one


def test_semantic_mask_with_an_undeclared_id_is_rejected_naming_the_mask_and_the_values(tmp_path):
    from layout_fixtures import make_semantic

    root = make_semantic(tmp_path)
    records = {r.key: r for r in open_layout(LayoutConfig(layout="semantic", root=str(root), class_names="classes.yaml"))}
    reason = rejected_reason(records["semantic/frame001"])  # void id 30 is not in data.void_ids here
    mask = root / "masks" / "frame001.png"
    assert reason.startswith(f"unreadable mask (mask {mask}: values [30] are neither named in {root / 'classes.yaml'} nor in data.void_ids")


# ---------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------
def test_empty_folder_is_refused_naming_the_folder_and_the_extensions_looked_for(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here\n")
    with pytest.raises(DataError, match=rf"folder {re.escape(str(empty))} holds no images \(expected files ending in \.jpg, \.jpeg, \.png, \.webp"):
        open_layout(LayoutConfig(layout="folder", root=str(empty)))


def test_symlink_loop_is_skipped_and_logged_naming_the_link_without_duplicates(tmp_path, caplog):
    top = make_folder(tmp_path)
    link = add_symlink_loop(top)
    with caplog.at_level(logging.WARNING, logger="glocon.data.layouts.folder"):
        records = open_layout(LayoutConfig(layout="folder", root=str(top)))
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)) == 4  # a, b, c, d: the loop neither hangs the scan nor repeats images
    assert not any("/loop/" in k for k in keys)
    assert any(str(link) in m and "symlink loop" in m for m in caplog.messages), caplog.messages


def test_folder_whose_every_image_is_unreadable_fails_the_job_with_a_summary_naming_each_file(hostile, tmp_path, capsys):
    import importlib.util

    from glocon.data.shards import resolve_paths

    folder = tmp_path / "all-bad"
    folder.mkdir()
    for name in ("truncated_jpeg", "zero_byte", "text_as_png", "bomb"):
        shutil.copy(hostile[name], folder / hostile[name].name)
    overrides = ["data.layout=folder", f"data.root={folder}", f"out_dir={tmp_path / 'out'}", "longest_side=64",
                 "samples_per_shard=64", "superpixels.slic.n_segments=16"]
    cfg = resolve_paths(load_config(ShardsConfig, None, overrides))
    # The shard task, run here in-process as a Ray task would: the job then reuses its done-record and starts no Ray.
    for plan in plan_shards(open_layout(cfg.data), cfg)[0]:
        build_shard(plan, cfg.out_dir, BuildSpec.from_config(cfg))
    spec = importlib.util.spec_from_file_location("make_shards_job", REPO / "jobs" / "make_shards.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(overrides) == 1  # not 0: no shard holds a sample
    err = capsys.readouterr().err
    assert err.startswith("error: all 4 inputs were rejected, no shard holds a sample")
    for name in ("truncated.jpg", "zero.jpg", "text.png", "bomb.png"):
        assert str(folder / name) in err, err
    with pytest.raises(DataError, match=rf"shard manifest {re.escape(str(tmp_path / 'out' / 'manifest.json'))} lists no samples"):
        ShardSet.open(tmp_path / "out").stream()


# ---------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------
def test_tar_member_named_dotdot_is_refused_naming_the_shard_and_the_member(tmp_path):
    manifest = write_shards(tmp_path / "shards")
    path = manifest.shard_path(manifest.shards[0].name)
    with tarfile.open(path, "w") as tf:  # replace the shard by one with a member that escapes its folder
        info = tarfile.TarInfo("../x")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
    pattern = rf"shard {re.escape(str(path))}: tar member '\.\./x' has an absolute path or '\.\.' \(refused\)"
    # the default stream refuses it before opening the tar (its bytes are not the manifest's) ...
    with pytest.raises(DataError, match=rf"shard {re.escape(str(path))}: sha256 differs from the manifest's"):
        list(stream_samples([str(path)]))
    # ... and, unverified, the member check still names the member
    with pytest.raises(DataError, match=pattern):
        list(stream_samples([str(path)], verify=False))
    with pytest.raises(DataError, match=pattern):
        ShardIndex(manifest.root)
    assert not (tmp_path / "x").exists() and not (tmp_path / "shards" / "x").exists()


def test_truncated_tar_is_refused_naming_the_shard(tmp_path):
    manifest = write_shards(tmp_path / "shards")
    path = manifest.shard_path(manifest.shards[1].name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"shard {re.escape(str(path))}: truncated"):
        list(ShardSet.open(manifest.root).stream())
    with pytest.raises(DataError, match=rf"shard {re.escape(str(path))}: truncated tar"):
        scan_tar(path)


def test_shard_sample_missing_its_slic_member_names_shard_key_and_field(tmp_path):
    raw = encode_sample(sample(0))
    del raw["slic.png"]
    path = tmp_path / "partial.tar"
    with open(path, "wb") as fh, open_tar_writer(fh) as writer:
        writer.write(raw)
    with pytest.raises(DataError, match=rf"shard {re.escape(str(path))}, sample 'img_000', field 'slic\.png': missing \(a sample needs jpg, slic\.png, fh\.png, json\)"):
        list(stream_samples([str(path)]))


def test_manifest_edited_by_hand_with_a_wrong_sha_is_caught_naming_the_shard(tmp_path):
    manifest = write_shards(tmp_path / "shards")
    path = tmp_path / "shards" / "manifest.json"
    data = json.loads(path.read_text())
    data["shards"][1]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    index = ShardIndex(path)
    assert len(index) == 4  # the header scan (sizes, members) passes: the tars are intact
    shard = manifest.shard_path(manifest.shards[1].name)
    assert index.get(manifest.shards[0].keys[0]).key == manifest.shards[0].keys[0]  # the other shard reads
    with pytest.raises(DataError, match=rf"shard {re.escape(str(shard))}: sha256 differs from the manifest's .*Rerun make_shards"):
        index.get(manifest.shards[1].keys[0])


def test_shard_with_bytes_flipped_inside_a_member_at_the_same_size_is_refused_by_the_default_readers(tmp_path):
    manifest = write_shards(tmp_path / "shards")
    path = manifest.shard_path(manifest.shards[0].name)
    key = manifest.shards[0].keys[1]
    offset, size = scan_tar(path)[key.replace("/", "_")]["jpg"]
    before = path.stat().st_size
    with open(path, "r+b") as fh:  # 16 bytes inside the image member: the tar's size and headers do not change
        fh.seek(offset + size // 2)
        data = fh.read(16)
        fh.seek(offset + size // 2)
        fh.write(bytes(b ^ 0x5A for b in data))
    assert path.stat().st_size == before
    message = rf"shard {re.escape(str(path))}: sha256 differs from the manifest's \({re.escape(str(manifest.root / 'manifest.json'))} says .*Rerun make_shards"
    with pytest.raises(DataError, match=message):
        ShardIndex(manifest.root).get(key)  # what few-shot reads through
    with pytest.raises(DataError, match=message):
        next(iter(ShardSet.open(manifest.root).stream()))  # what pretraining streams: refused before the tar is opened


def test_episode_file_naming_a_key_not_in_the_shards_is_refused_naming_file_episode_and_key(tmp_path):
    from glocon.fewshot.batches import ShardEpisodeSource
    from glocon.fewshot.episodes import episodes_for

    manifest = write_shards(tmp_path / "shards")
    index = ShardIndex(manifest.root)
    source = ShardEpisodeSource(index)
    kw = dict(benchmark="embedded", fold=0, mode="test", shots=1, n_episodes=3, seed=321, base=[1], novel=[3])
    es, path, reused = episodes_for(source, tmp_path / "episodes", **kw)
    assert not reused and {e.query for e in es.episodes} <= set(index.keys())
    text = path.read_text()
    first = es.episodes[0].query
    path.write_text(text.replace(json.dumps(first), json.dumps("img/999"), 1))
    with pytest.raises(DataError, match=rf"episode file {re.escape(str(path))}: episode 0 \(class 3\) names images the data does not list for that class: \['img/999'\]"):
        episodes_for(source, tmp_path / "episodes", **kw)
    with pytest.raises(KeyError, match=r"sample 'img/999' is not in the shards of"):
        index.get("img/999")


def test_episode_file_whose_header_classes_were_edited_is_refused_naming_file_episode_and_class(tmp_path):
    from glocon.fewshot.batches import ShardEpisodeSource
    from glocon.fewshot.episodes import episodes_for

    manifest = write_shards(tmp_path / "shards")
    source = ShardEpisodeSource(ShardIndex(manifest.root))
    kw = dict(benchmark="embedded", fold=0, mode="test", shots=1, n_episodes=3, seed=321, base=[1], novel=[3])
    es, path, _ = episodes_for(source, tmp_path / "episodes", **kw)
    doc = json.loads(path.read_text())
    assert doc["header"]["classes"] == [3]
    doc["header"]["classes"] = [2]  # the header now lists a class no episode draws, and not the one they do
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"episode file {re.escape(str(path))}: episode 0 draws class 3, which its header's classes \[2\] do not list"):
        episodes_for(source, tmp_path / "episodes", **kw)


def test_probe_val_shards_that_do_not_exist_are_one_error_naming_the_key(tmp_path):
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import load_splits

    manifest = write_shards(tmp_path / "shards")
    cfg = ProbeConfig(train_shards=str(manifest.root), val_shards=str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=rf"^probe: val_shards={re.escape(str(tmp_path / 'gone'))}: no shard manifest"):
        load_splits(cfg)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
def test_unknown_config_key_names_the_key_and_the_nearest_valid_one():
    from glocon.train.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"(?s)pretrain-demo\.yaml.*unknown key 'loss\.taux'; did you mean 'loss\.tau'"):
        load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", ["loss.taux=0.1"])


def test_config_value_of_the_wrong_type_names_the_field_the_type_and_the_value():
    with pytest.raises(ConfigError, match=r"field 'samples_per_shard': .*expected int_parsing, got 'many'"):
        load_config(ShardsConfig, CONFIGS / "shards-embedded.yaml", ["samples_per_shard=many"])


@pytest.mark.parametrize("override", ["batch_size=-8", "batch_size=0"])
def test_negative_or_zero_batch_size_is_refused_by_the_pretraining_config(override):
    from glocon.train.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"field 'batch_size': Input should be greater than 0"):
        load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", [override])


@pytest.mark.parametrize("override, field", [("fit.batch_size=-4", "fit.batch_size"), ("eval.batch_size=-1", "eval.batch_size"),
                                             ("fit.batch_size=0", "fit.batch_size")])
def test_negative_or_zero_batch_size_is_refused_by_the_fewshot_config(override, field):
    from glocon.fewshot.runner import FewShotConfig

    with pytest.raises(ConfigError, match=rf"field '{re.escape(field)}': Input should be greater than 0"):
        load_config(FewShotConfig, None, [override])


@pytest.mark.parametrize("tau", ["0", "-0.07"])
def test_tau_not_positive_is_refused_by_the_pretraining_and_sweep_configs(tau):
    from glocon.train.config import PretrainConfig
    from glocon.tune.space import base_pretrain_dict, load_sweep_config

    with pytest.raises(ConfigError, match=r"field 'loss\.tau': Input should be greater than 0"):
        load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", [f"loss.tau={tau}"])
    # a sweep: in its search space (grid or log-uniform range) and in its base pretraining overrides
    with pytest.raises(ConfigError, match=r"field 'space\.tau'.*space\.tau\.grid: expected a non-empty list of positive temperatures"):
        load_sweep_config(None, [f"space.tau=[0.2, {tau}]"])
    with pytest.raises(ConfigError, match=r"field 'space\.tau\.loguniform\.low': Input should be greater than 0"):
        load_sweep_config(None, [f"space.tau.loguniform.low={tau}", "space.tau.loguniform.high=0.5"])
    sweep = load_sweep_config(None, [f"pretrain={CONFIGS / 'pretrain-demo.yaml'}", f"pretrain_overrides=['loss.tau={tau}']"])
    with pytest.raises(ConfigError, match=r"field 'loss\.tau': Input should be greater than 0"):
        base_pretrain_dict(sweep)


def test_one_shard_for_two_ranks_is_refused_before_ray_starts_naming_samples_per_shard_and_num_workers(tmp_path, no_ray_in_process):
    # no_ray_in_process: the session's shared Ray is down, so the check below sees whether this call started one
    import ray

    from glocon.preflight import PreflightError
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining

    write_shards(tmp_path / "one", n=4, per_shard=4)
    cfg = load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", [f"data.shards={tmp_path / 'one'}", "num_workers=2",
                                                                      "batch_size=2", f"storage_path={tmp_path / 'runs'}"])
    with pytest.raises(PreflightError, match=r"data\.shards: 1 shard\(s\) cannot feed num_workers=2 ranks .*samples_per_shard=2 \(now 4\).*data\.resampled=true"):
        run_pretraining(cfg)
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()  # failed before Ray and before any output


def test_relative_path_inside_a_ray_job_copy_is_refused_naming_the_key_and_the_absolute_form(tmp_path, monkeypatch):
    from glocon.paths import RAY_JOB_CONFIG_ENV, SUBMIT_DIR_ENV
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import resolved

    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv(SUBMIT_DIR_ENV, raising=False)
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}))
    cfg = load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", [])
    with pytest.raises(ConfigError, match=r"storage_path=runs/pretrain is relative, and this Ray job runs in Ray's temporary copy .*storage_path=/path/to/your/checkout/runs/pretrain.*GLOCON_SUBMIT_DIR"):
        resolved(cfg)
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=r"GLOCON_SUBMIT_DIR=.*gone: no such folder on this node"):
        resolved(cfg)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this runs code: ``exec`` creates the marker file (what an attacker's pickle would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _poisoned(path: Path, payload: dict, marker: Path) -> Path:
    """A real torch checkpoint (zip + data.pkl) whose pickle calls ``exec`` when loaded unsafely."""
    torch.save({**payload, "note": _RunsCode(marker)}, path)
    assert b"exec" in path.read_bytes()
    return path


def _unpickle_unsafely(path: Path) -> None:
    """Run the checkpoint's pickle (data.pkl in torch's zip) with plain pickle, the way an unsafe
    load would, storages stubbed: the test's own file, never an unsafe torch.load."""
    import pickle
    import zipfile

    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        with z.open(name) as fh:
            unpickler = pickle.Unpickler(fh)
            unpickler.persistent_load = lambda pid: None
            unpickler.load()


def _refused_and_never_run(load, what: str, path: Path, marker: Path) -> None:
    """``load()`` refuses the poisoned ``path`` as ``what`` without running its code; loaded the
    unsafe way, the same file does create the marker, so the refusal was real."""
    with pytest.raises(CheckpointError, match=rf"(?s){what} {re.escape(str(path))}: refused or unreadable with torch\.load\(weights_only=True\).*Unsupported global: GLOBAL exec") as err:
        load()
    assert "weights_only=False" not in str(err.value)  # never advise loading an untrusted file unsafely
    assert not marker.exists(), f"loading a {what} ran code from its pickle"
    _unpickle_unsafely(path)  # deliberate, on the file this test just wrote: proves the payload is live
    assert marker.exists()
    marker.unlink()


def test_prior_export_that_is_a_pickle_with_code_is_refused_and_the_code_never_runs(tmp_path):
    from glocon.models.prior import EXPORT_FORMAT, load_prior_extractor

    marker = tmp_path / "pwned"
    path = _poisoned(tmp_path / "prior.pt", {"format": EXPORT_FORMAT, "arch": {"backbone": "resnet18"}, "state_dict": {}}, marker)
    _refused_and_never_run(lambda: load_prior_extractor(path), "prior export", path, marker)


def test_pretraining_checkpoint_that_is_a_pickle_with_code_is_refused_and_the_code_never_runs(tmp_path):
    from glocon.train.checkpoint import STATE, STATE_FORMAT, load_state

    marker = tmp_path / "pwned"
    folder = tmp_path / "checkpoint_000003"
    folder.mkdir()
    path = _poisoned(folder / STATE, {"format": STATE_FORMAT, "step": 3, "epoch": 0}, marker)
    _refused_and_never_run(lambda: load_state(folder), "checkpoint", path, marker)


# ---------------------------------------------------------------------------------------------
# bank
# ---------------------------------------------------------------------------------------------
def test_prior_with_another_dimension_than_the_bank_is_refused_naming_both_files_and_sizes(tmp_path):
    from glocon.bank.build import build_bank
    from glocon.bank.config import BankConfig, QueryConfig
    from glocon.bank.query import query_bank
    from glocon.bank.store import INDEX
    from glocon.models.prior import PriorArch, PriorExtractor, save_export

    torch.manual_seed(0)
    prior = tmp_path / "prior-512.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), prior)  # prior_features: 512-d backbone map
    other = tmp_path / "prior-128.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18", prior_source="local_head")), other)  # 128-d
    write_shards(tmp_path / "shards", n=2, per_shard=2)
    bank = tmp_path / "bank"
    manifest = build_bank(BankConfig(prior=str(prior), shards=str(tmp_path / "shards"), out=str(bank), workers=0, device="cpu"))
    assert manifest["dim"] == 512
    with pytest.raises(DataError, match=rf"prior {re.escape(str(other))}: gives 128-d 'prior' vectors, but bank index {re.escape(str(bank / INDEX))} holds 512-d vectors \(expected a prior with the bank's embedding size"):
        query_bank(QueryConfig(bank=str(bank), prior=str(other), key="img/000", superpixel=0, device="cpu"))


# ---------------------------------------------------------------------------------------------
# plugins
# ---------------------------------------------------------------------------------------------
def test_plugin_entry_point_that_fails_to_import_is_reported_and_the_others_still_list(monkeypatch):
    from glocon import plugins

    real = list(plugins._entry_points())
    assert real, "glocon's own plugins (proto, qgnet) should be installed"
    broken = EntryPoint(name="broken", value="glocon_no_such_module.plugin:plugin", group=plugins.GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, broken])

    rows = {r["name"]: r for r in plugins.list_plugins()}
    assert rows["broken"]["status"].startswith("error: ModuleNotFoundError") and "glocon_no_such_module" in rows["broken"]["status"]
    assert rows["broken"]["source"] == "glocon_no_such_module.plugin:plugin"
    ok = {name for name, r in rows.items() if r["status"] == "ok"}
    assert ok == {ep.name for ep in real}, rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = plugins.discover_plugins()
    assert set(found) == ok
    assert any(issubclass(w.category, plugins.PluginLoadWarning) and "'broken'" in str(w.message) for w in caught)
    with pytest.raises(plugins.PluginError, match=r"plugin 'broken' is installed but failed to load: ModuleNotFoundError"):
        plugins.load_plugin("broken")


# ---------------------------------------------------------------------------------------------
# ports and authentication
# ---------------------------------------------------------------------------------------------
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".md", ".sh", ".cfg", ".ini", ".txt", ".json", ""}
SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", "node_modules", "build", "dist"}


def repo_text_files() -> list[Path]:
    out = []
    for p in REPO.rglob("*"):
        rel = p.relative_to(REPO).parts
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel):
            continue
        if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name in ("Makefile", "run")) and p.stat().st_size < 2_000_000:
            out.append(p)
    return out


def _yaml_values(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _yaml_values(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _yaml_values(v, f"{path}[{i}]")
    else:
        yield path, node


def test_every_service_binds_to_loopback_unless_a_config_says_otherwise(monkeypatch):
    import ray

    from glocon.raycluster import RayConfig, init_ray

    # Defaults, and what init_ray really hands to ray.init for a local Ray.
    cfg = RayConfig()
    assert cfg.node_ip_address == "127.0.0.1" and cfg.dashboard_host == "127.0.0.1"
    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray(RayConfig(include_dashboard=True))
    assert seen["dashboard_host"] == "127.0.0.1" and seen["_node_ip_address"] == "127.0.0.1"
    # ... and a config that says otherwise is obeyed (the only way to bind elsewhere).
    seen.clear()
    init_ray(RayConfig(dashboard_host="10.0.0.5"))
    assert seen["dashboard_host"] == "10.0.0.5"

    # No shipped config, cluster file, job, library or bench binds all interfaces (docs and tests
    # may name the address to warn against it).
    shipped = [p for p in repo_text_files() if p.suffix != ".md" and "tests" not in p.relative_to(REPO).parts]
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in shipped
                 for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
                 if re.search(r"0\.0\.0\.0|['\"]::['\"]", line) and not line.lstrip().startswith("#")]
    assert not offenders, f"binds all interfaces: {offenders}"
    # Every host-like value in configs/*.yaml is loopback.
    for path in sorted(CONFIGS.glob("*.yaml")):
        for key, value in _yaml_values(yaml.safe_load(path.read_text()) or {}):
            if key.split(".")[-1] in ("dashboard_host", "node_ip_address", "host"):
                assert value in ("127.0.0.1", "localhost"), f"{path.name}: {key} = {value!r}, expected 127.0.0.1"
    # The cluster launcher file starts the head's dashboard on loopback (reached by `ray dashboard cluster.yaml`).
    commands = " ".join(str(v) for k, v in _yaml_values(yaml.safe_load(CLUSTER.read_text())) if "start_ray_commands" in k)
    hosts = re.findall(r"--dashboard-host[= ](\S+)", commands)
    assert hosts == ["127.0.0.1"], f"cluster.yaml: the head's --dashboard-host is {hosts}, expected 127.0.0.1"


CLUSTER = REPO / "cluster.yaml"


def test_ray_token_authentication_is_never_switched_off_in_the_tree():
    # Ray 2.60 reads RAY_AUTH_MODE from the environment only (ray/_private/authentication/
    # authentication_token_setup.py): "token" or unset (token by default for a new local Ray) is
    # on; anything else is off. AUTH_MODE in _system_config is refused by Ray itself.
    # An assignment in any spelling: shell/env files (X=v, X: v), os.environ["X"] = v, setenv("X", v).
    setting = re.compile(r"RAY_AUTH_MODE['\"]?\s*(?:=|:|\]\s*=|,)\s*['\"]?(\w*)")
    offenders = []
    for p in repo_text_files():
        if p.name == Path(__file__).name:
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for m in setting.finditer(line):
                if m.group(1).lower() != "token":
                    offenders.append(f"{p.relative_to(REPO)}:{n}: {line.strip()}")
            if re.search(r"AUTH_MODE['\"]?\s*:\s*['\"]?disabled|--disable-auth|auth_mode\s*=\s*['\"]disabled", line, re.I):
                offenders.append(f"{p.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, f"token authentication switched off or weakened: {offenders}"
    # `ray start` in ray 2.60 (ray/scripts/scripts.py) turns auth on only when RAY_AUTH_MODE=token
    # is set or a token already exists; `ray up cluster.yaml` must do both on every node.
    cluster = yaml.safe_load(CLUSTER.read_text())
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[kind] if "ray start" in c]
        assert starts and all(re.search(r"RAY_AUTH_MODE=token\b.*ray start", c) for c in starts), f"cluster.yaml {kind}: {starts}"
    assert any("auth_token" in remote for remote in cluster.get("file_mounts", {})), "cluster.yaml: no node receives the token"


@pytest.mark.slow
def test_a_local_ray_started_by_glocon_runs_with_token_authentication(ray_session):
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN


# ---------------------------------------------------------------------------------------------
# round 2 (issue 22): bounded YAML, sizes after the resize, no folder replaced without a word,
# a checked class index, errors that name the culprit
# ---------------------------------------------------------------------------------------------
def _billion_laughs() -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def test_billion_laughs_in_the_semantic_class_names_is_a_one_line_error_naming_the_file_before_it_is_built(tmp_path, monkeypatch):
    import yaml

    root = tmp_path / "camvid"
    root.mkdir()
    (root / "classes.yaml").write_text(_billion_laughs())
    # refused from the event stream: nothing is built, so it costs no memory or time to expand
    monkeypatch.setattr(yaml, "safe_load", lambda *a, **k: pytest.fail("the bomb reached yaml.safe_load"))
    with pytest.raises(DataError) as err:
        open_layout(LayoutConfig(layout="semantic", root=str(root), class_names="classes.yaml"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"data.class_names {root / 'classes.yaml'}: refused to load this YAML: its aliases expand")


def test_billion_laughs_as_a_bank_class_names_file_is_refused_naming_the_file(tmp_path):
    from glocon.bank.store import load_class_names

    path = tmp_path / "names.yaml"
    path.write_text(_billion_laughs())
    with pytest.raises(DataError, match=rf"^class_names {re.escape(str(path))}: refused to load this YAML: its aliases expand"):
        load_class_names(str(path))


def test_a_strip_that_becomes_thinner_than_min_side_after_the_resize_is_rejected_naming_the_file(tmp_path):
    import functools

    from glocon.data.record import Record

    path = tmp_path / "strip.png"
    Image.new("RGB", (10, 20000), (90, 120, 30)).save(path)
    record = Record(key="folder/strip", source=str(path), layout="folder", load_image=functools.partial(load_rgb, path))
    spec = BuildSpec.from_config(ShardsConfig(longest_side=256, min_side=8))
    assert rejected_reason_for(record, spec) == (
        f"image {path} is 10x20000, 1x256 after resizing to longest_side=256, smaller than min_side=8"
    )


def rejected_reason_for(record, spec) -> str:
    with pytest.raises(Rejected) as info:
        make_sample(record, spec)
    return str(info.value)


def _tiny_photos(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def _shards_cfg(root: Path, out: Path, **kw) -> ShardsConfig:
    kw = {"samples_per_shard": 2, "longest_side": 32, **kw}
    return ShardsConfig(data=LayoutConfig(layout="folder", root=str(root)), out_dir=str(out), superpixels={"slic": {"n_segments": 8}}, **kw)


def _tree(folder: Path) -> dict[str, str]:
    from glocon.io import sha256_file

    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_make_shards_into_a_folder_of_another_configuration_is_refused_naming_the_folder_and_what_differs(tmp_path, capsys):
    from glocon.jobs.make_shards import main
    from glocon.preflight import PreflightError
    from inprocess_shards import make_shards_in_process

    photos, out = _tiny_photos(tmp_path / "photos"), tmp_path / "shards"
    first = make_shards_in_process(_shards_cfg(photos, out))
    tars = {k: v for k, v in _tree(out).items() if k.endswith(".tar")}
    # the same configuration again (how a run goes may change): reused as before
    again = make_shards_in_process(_shards_cfg(photos, out, strict=True, parallelism=1))
    assert again.shards == first.shards and {k: v for k, v in _tree(out).items() if k.endswith(".tar")} == tars
    before = _tree(out)
    with pytest.raises(PreflightError, match=rf"^out_dir={re.escape(str(out))} already holds shards of another configuration "
                       rf"\({re.escape(str(out / 'manifest.json'))}\): longest_side: 32 -> 16; samples_per_shard: 2 -> 1\. "
                       r"Choose another out_dir, or set overwrite=true to replace them$"):
        make_shards_in_process(_shards_cfg(photos, out, longest_side=16, samples_per_shard=1))
    assert _tree(out) == before
    # the job: one line, exit 2, nothing written
    other = _tiny_photos(tmp_path / "other", 1)  # another data set into the same folder
    argv = [f"out_dir={out}", "data.layout=folder", f"data.root={other}", "longest_side=32", "samples_per_shard=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: out_dir={out} already holds shards of another configuration") and "data.root" in err
    assert _tree(out) == before


def test_overwrite_replaces_another_configuration_only_once_the_new_set_is_complete(tmp_path):
    import functools

    from glocon.data.layouts import open_layout_classes
    from glocon.data.record import Record
    from glocon.data.shards import resolve_paths
    from inprocess_shards import make_records_in_process, make_shards_in_process

    photos, out = _tiny_photos(tmp_path / "photos"), tmp_path / "shards"
    make_shards_in_process(_shards_cfg(photos, out))
    before = _tree(out)
    new = _shards_cfg(photos, out, longest_side=16, overwrite=True)
    records, _ = open_layout_classes(resolve_paths(new).data)
    broken = Record(key="folder/zz", source=str(tmp_path / "gone.png"), layout="folder",
                    load_image=functools.partial(load_rgb, tmp_path / "gone.png"))
    # a new set that fails (strict: a bad input) leaves the old one whole
    with pytest.raises(DataError, match="strict=true: bad input"):
        make_records_in_process([*records, broken], new.model_copy(update={"strict": True}))
    assert _tree(out) == before
    # and one that completes replaces it, leaving no staging folder behind
    manifest = make_records_in_process(records, new)
    assert manifest.root == out.resolve() and Manifest.load(out).config["longest_side"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "shards"]
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert ShardIndex(out).get(manifest.keys()[0]).image.shape[:2] == (12, 16)


def test_overwrite_refuses_a_folder_holding_files_make_shards_did_not_write(tmp_path):
    from glocon.preflight import PreflightError
    from inprocess_shards import make_shards_in_process

    photos, out = _tiny_photos(tmp_path / "photos"), tmp_path / "shards"
    make_shards_in_process(_shards_cfg(photos, out))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PreflightError, match=rf"^out_dir={re.escape(str(out))}: overwrite=true would replace this folder, but it holds files make_shards did not write \(notes\.txt\)"):
        make_shards_in_process(_shards_cfg(photos, out, longest_side=16, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"


def test_out_dir_that_is_an_existing_file_is_one_error_naming_it(tmp_path, capsys):
    from glocon.jobs.make_shards import main
    from glocon.preflight import PreflightError, check_out_dir

    taken = tmp_path / "taken"
    taken.write_text("x")
    assert main([f"out_dir={taken}", "data.layout=folder", f"data.root={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: out_dir={taken} is a file, expected a folder (or a path that does not exist yet)"
    with pytest.raises(PreflightError, match=rf"^out={re.escape(str(taken / 'bank'))}: {re.escape(str(taken))} on its path is a file"):
        check_out_dir(taken / "bank", "out")


def test_manifest_whose_class_index_was_edited_is_refused_naming_the_manifest_and_the_class(tmp_path):
    samples = [sample(i) for i in range(4)]
    keys = [s.key for s in samples]
    manifest = write_sample_shards(tmp_path / "shards", samples, 2, "shard", {1: keys[:2], 2: keys[2:]})
    assert ShardIndex(manifest.root).class_index == {1: keys[:2], 2: keys[2:]}
    path = manifest.root / "manifest.json"
    data = json.loads(path.read_text())
    data["classes"]["1"] = data["classes"]["2"]  # class 1's key list replaced by class 2's
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^shard manifest {re.escape(str(path))}: field 'classes\.1' lists other keys than make_shards wrote"):
        ShardIndex(tmp_path / "shards")  # how few-shot episodes read the index


@pytest.mark.parametrize("model, override, field", [
    ("train", "data.image_size=-1", "data.image_size"), ("train", "probe.input_size=0", "probe.input_size"),
    ("bank", "input_size=-1", "input_size"), ("bank", "query.image_size=0", "query.image_size"), ("bank", "batch_size=0", "batch_size"),
    ("probe", "batch_size=-2", "batch_size"), ("shards", "data.embedded.size=0", "data.embedded.size"),
    ("fewshot", "image_size=-1", "image_size"),
])
def test_a_non_positive_size_is_refused_when_the_config_is_read_naming_the_key(model, override, field):
    from glocon.bank.config import BankConfig
    from glocon.probe.config import ProbeConfig
    from glocon.train.config import PretrainConfig

    from glocon.fewshot.config import FewShotConfig

    cls = {"train": PretrainConfig, "bank": BankConfig, "probe": ProbeConfig, "shards": ShardsConfig, "fewshot": FewShotConfig}[model]
    with pytest.raises(ConfigError, match=rf"field '{re.escape(field)}': Input should be greater than 0"):
        load_config(cls, None, [override])


def test_bank_vectors_of_object_dtype_are_refused_naming_the_file(tmp_path):
    import pyarrow as pa

    from glocon.bank.store import VECTORS, Bank

    np.save(tmp_path / VECTORS, np.full((2, 4), None, dtype=object), allow_pickle=True)
    bank = Bank(root=tmp_path, manifest={"dim": 4, "count": 2}, table=pa.table({"key": ["a", "b"]}))
    with pytest.raises(DataError, match=rf"^bank vectors {re.escape(str(tmp_path / VECTORS))}: not a \(2, 4\) float32 \.npy array"):
        bank.vectors


def test_a_pickle_calling_os_system_is_refused_without_advice_to_load_it_unsafely(tmp_path):
    import os

    from glocon.safeload import load_weights_only

    marker = tmp_path / "pwned"

    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 1, "note": System()}, path)
    with pytest.raises(CheckpointError) as err:
        load_weights_only(path)
    msg = str(err.value)
    assert str(path) in msg and "GLOBAL posix.system" in msg and "\n" not in msg
    assert not re.search(r"weights_only\W+(set to\W+)?False", msg) and "trusted source" not in msg
    assert not marker.exists()


def test_a_model_fitted_on_another_class_split_is_refused_naming_both_splits(tmp_path):
    from fewshot_helpers import MemorySource, TinyPlugin, toy_items

    from glocon.errors import CheckpointError
    from glocon.fewshot.runner import FewShotConfig, build, evaluate
    from glocon.fewshot.state import model_path, save_model_file, trainable_state

    source = MemorySource(toy_items(n_per_class=6), min_pixels=64)

    def cfg(novel: list[int], **eval_kw) -> FewShotConfig:
        return FewShotConfig.model_validate({
            "data": {"folds": [0], "novel_classes": novel}, "image_size": 32, "episodes_dir": str(tmp_path / f"episodes-{novel}"),
            "fit": {"storage_path": str(tmp_path / "fit"), "name": "toy", "shots": [1]},
            "eval": {"episodes": 2, "seeds": 1, "shots": [1], "out_dir": str(tmp_path / "eval"), "n_figure_episodes": 0, "bootstrap": 0, **eval_kw},
        })  # fmt: skip

    plugin = TinyPlugin()
    fitted = cfg([4])
    path = model_path(fitted, 0, 1)
    save_model_file(path, plugin, fitted, 0, 1, trainable_state(build(plugin, fitted)), {}, {"benchmark": "embedded", "base": [1, 2, 3], "novel": [4]})
    evaluate(plugin, cfg([4]), source=source)  # the fit's own split: scored
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: fitted with benchmark 'embedded' novel classes \[4\], evaluated with benchmark 'embedded' novel classes \[3\]"):
        evaluate(plugin, cfg([3]), source=source)
    allowed = evaluate(plugin, cfg([3], allow_split_mismatch=True), source=source)
    assert len(allowed["warnings"]) == 1 and "novel classes [3]" in allowed["warnings"][0]
    assert "**Warning:**" in (tmp_path / "eval" / "results.md").read_text()


# ---------------------------------------------------------------------------------------------
# found by bench/hostile.py (each case there runs the CLI in a subprocess; these run in-process)
# ---------------------------------------------------------------------------------------------
def test_a_config_with_one_problem_is_one_line_naming_the_key_and_several_are_listed():
    from glocon.train.config import PretrainConfig

    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", ["loss.taux=0.1"])
    assert "\n" not in str(err.value) and "unknown key 'loss.taux'; did you mean 'loss.tau'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", ["loss.taux=0.1", "batch_size=-8"])
    first, *rest = str(err.value).splitlines()
    assert first.endswith("2 problems:") and len(rest) == 2
    assert any("loss.taux" in r for r in rest) and any("'batch_size'" in r for r in rest)


def test_pretraining_into_a_storage_path_that_is_a_file_is_refused_before_ray_starts(tmp_path):
    import ray

    from glocon.preflight import PreflightError
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining

    ray_was_up = ray.is_initialized()  # another module's Ray may still be up; this call must start none
    write_shards(tmp_path / "shards", n=4, per_shard=2)
    (tmp_path / "runs").write_text("not a folder")
    cfg = load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", [f"data.shards={tmp_path / 'shards'}", "num_workers=1",
                                                                      "batch_size=2", f"storage_path={tmp_path / 'runs'}"])
    with pytest.raises(PreflightError, match=rf"^storage_path={re.escape(str(tmp_path / 'runs'))} is a file, expected a folder"):
        run_pretraining(cfg)
    (tmp_path / "runs").unlink()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "pretrain-demo").write_text("not a folder")  # the run's own folder
    with pytest.raises(PreflightError, match=r"^name=.*pretrain-demo is a file"):
        run_pretraining(cfg)
    assert ray.is_initialized() == ray_was_up


def test_show_superpixels_of_a_missing_key_or_a_damaged_shard_is_one_error_line(tmp_path, capsys):
    from glocon.cli import main

    manifest = write_shards(tmp_path / "shards")
    out = tmp_path / "fig.png"
    assert main(["show", "superpixels", "--shards", str(manifest.root), "--key", "img/999", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: sample 'img/999' is not in the shards of")
    path = manifest.shard_path(manifest.shards[0].name)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x5A
    path.write_bytes(bytes(data))
    assert main(["show", "superpixels", "--shards", str(manifest.root), "--key", manifest.shards[0].keys[0], "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: shard {path}") and not out.exists()


def test_a_negative_bank_worker_count_is_a_config_error_naming_the_key():
    from glocon.bank.config import BankConfig

    with pytest.raises(ConfigError, match=r"field 'workers': Input should be greater than or equal to 0"):
        load_config(BankConfig, None, ["workers=-2"])


@pytest.mark.parametrize("name, argv, key", [("sweep", ["space.tau=[0.2, -0.07]"], "space.tau"), ("demo", ["foldz=[0]"], "foldz")])
def test_the_sweep_and_the_demo_print_their_one_line_as_error_like_every_job(name, argv, key, capsys):
    from glocon.cli import load_job

    assert load_job(name).main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: invalid config") and key in err


def test_store_prune_with_a_negative_size_and_ls_of_a_damaged_namespace_are_errors_that_keep_the_store(tmp_path, capsys):
    from glocon.cli import main
    from glocon.featstore import FeatureStore, memo, weights_digest

    store = FeatureStore(tmp_path / "s")
    enc = torch.nn.Conv2d(3, 4, 3, padding=1).requires_grad_(False)
    memo(store, store.namespace(weights_digest(enc), "out"), lambda x: {"a": enc(x)}, torch.rand(3, 3, 8, 8))
    before = _tree(tmp_path / "s")
    assert main(["store", "prune", "--root", str(tmp_path / "s"), "--max-gb", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: --max-gb -1: expected a size in GiB >= 0")
    assert _tree(tmp_path / "s") == before  # not emptied, as --max-gb 0 would
    meta = next((tmp_path / "s").rglob("meta.json"))
    meta.write_text("{oops")
    assert main(["store", "ls", "--root", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: feature store {meta}: unreadable")


def test_bank_class_names_are_read_before_anything_is_embedded(tmp_path):
    from glocon.bank.build import build_bank
    from glocon.bank.config import BankConfig
    from glocon.preflight import PreflightError

    (tmp_path / "prior.pt").write_bytes(b"not read: the class names fail first")
    names = tmp_path / "names.yaml"
    names.write_text(_billion_laughs())
    cfg = BankConfig(prior=str(tmp_path / "prior.pt"), shards=str(tmp_path / "shards"), out=str(tmp_path / "bank"),
                     class_names=str(names), workers=0, device="cpu")
    with pytest.raises(PreflightError, match=rf"^class_names {re.escape(str(names))}: refused to load this YAML"):
        build_bank(cfg)
    assert not (tmp_path / "bank").exists()
