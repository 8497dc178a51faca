"""The shard job: deterministic plan, Ray tasks, manifest, resume after interruption, bad input.

Inputs are a handful of real photos (the ones scikit-image ships in its wheel) written at about
120 px with hand-made masks; shards are built at longest_side 96 on the shared 2-CPU Ray.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glocon.data.imageio import load_mask, load_rgb
from glocon.data.layouts import LayoutConfig
from glocon.data.layouts.coco import semantic_mask
from glocon.data.readers import stream_samples
from glocon.data.shardset import ShardSet
from glocon.data.shardindex import ShardIndex
from glocon.data.record import Record, class_pixels
from glocon.data.manifest import MANIFEST_NAME, Manifest
from glocon.data.shardplan import BuildSpec, ShardsConfig, plan_shards
from glocon.data.shards import make_shards, make_shards_from_records
from glocon.data.shardtask import DONE_DIR, make_sample, resized_size
from glocon.errors import DataError
from glocon.io import sha256_file
from glocon.raycluster import RayConfig

from ray_procs import stop_processes_naming

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
MIN_PIXELS = 1000  # at 120x90: the big class (2700 px) counts, the small one (100 px) does not


def write_photo_set(folder: Path, n: int = len(PHOTOS)) -> list[Record]:
    """n real photos at 120x90 with masks: border 255, a big class (i % 3) + 1, a small class 7."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        photo = Image.open(data / PHOTOS[i % len(PHOTOS)]).convert("RGB").resize((120, 90), Image.Resampling.BICUBIC)
        image_path = folder / f"img{i}.jpg"
        photo.save(image_path, quality=90)
        mask = np.zeros((90, 120), np.uint8)
        mask[20:65, 30:90] = i % 3 + 1
        mask[5:15, 5:15] = 7
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 255, 255, 255, 255
        mask_path = folder / f"img{i}.png"
        Image.fromarray(mask, "L").save(mask_path)
        records.append(photo_record(f"photos/{i:03d}", image_path, mask_path))
    return records


def photo_record(key: str, image: Path, mask: Path | None = None, mask_loader=load_mask) -> Record:
    return Record(key=key, source=str(image), layout="test", load_image=functools.partial(load_rgb, image),
                  load_mask=functools.partial(mask_loader, mask) if mask else None)


def shards_config(out: Path, **kw) -> ShardsConfig:
    kw = {"samples_per_shard": 2, "longest_side": 96, **kw}
    # The tests share ray_session; were Ray down, the job would start its own with this short temp dir.
    ray = RayConfig(num_cpus=2, temp_dir=f"/tmp/glocon-ray-shards-{os.getpid()}")
    if "data" not in kw:
        kw["data"] = LayoutConfig(min_class_pixels=MIN_PIXELS)
    cfg = ShardsConfig(out_dir=str(out), ray=ray, **kw)
    cfg.superpixels.slic.n_segments = 32
    return cfg


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Record]:
    return write_photo_set(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def built(photos, ray_session, tmp_path_factory) -> tuple[Manifest, ShardsConfig]:
    cfg = shards_config(tmp_path_factory.mktemp("built") / "shards")
    return make_shards_from_records(photos, cfg, dashboard=False), cfg


def tree_bytes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.glob("*.tar"))}


# ---------------------------------------------------------------------------------------------
# Pure parts (no Ray)
# ---------------------------------------------------------------------------------------------


def test_plan_takes_sorted_records_in_fixed_chunks_and_refuses_colliding_keys(tmp_path):
    load = functools.partial(Image.new, "RGB", (8, 8))
    keys = ["b/2", "a/1", "c", "a_1", "d", "b/1"]
    records = [Record(key=k, source=f"/x/{k}", load_image=load) for k in keys]
    plans, refused = plan_shards(records, shards_config(tmp_path))
    assert [[r.key for r in p.records] for p in plans] == [["a/1", "b/1"], ["b/2", "c"], ["d"]]
    assert [p.name for p in plans] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [(r.key, "a/1" in r.reason) for r in refused] == [("a_1", True)]
    again, _ = plan_shards(list(reversed(records)), shards_config(tmp_path))
    assert [p.fingerprint for p in again] == [p.fingerprint for p in plans]
    changed, _ = plan_shards(records, shards_config(tmp_path, longest_side=64))
    assert changed[0].fingerprint != plans[0].fingerprint


def test_sample_is_resized_to_the_longest_side_with_a_nearest_mask_and_original_size(photos, tmp_path):
    spec = BuildSpec.from_config(shards_config(tmp_path))
    sample = make_sample(photos[1], spec)
    assert sample.image.shape == (72, 96, 3) and resized_size(120, 90, 96) == (96, 72)
    assert sample.meta["orig_size"] == [90, 120]
    assert set(np.unique(sample.mask)) <= {0, 2, 7, 255}  # nearest: no blended ids
    orig = class_pixels(np.asarray(photos[1].load_mask()))
    assert sample.meta["classes"] == {str(c): n for c, n in orig.items()} == {"2": 2700, "7": 100}
    for labels in (sample.slic, sample.fh):
        ids = np.unique(labels)
        assert labels.shape == (72, 96) and ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))


def test_fss_binary_masks_count_for_their_binary_class(tmp_path):
    image, mask = tmp_path / "1.jpg", tmp_path / "1.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    m = np.zeros((64, 64), np.uint8)
    m[8:56, 8:56] = 1
    Image.fromarray(m).save(mask)
    rec = Record(key="fss/cat/1", source=str(image), layout="fss", load_image=functools.partial(load_rgb, image),
                 load_mask=functools.partial(load_mask, mask), extra={"binary_class": 412})
    sample = make_sample(rec, BuildSpec.from_config(shards_config(tmp_path)))
    assert sample.meta["classes"] == {"412": 48 * 48} and set(np.unique(sample.mask)) == {0, 1}


def test_longest_side_only_shrinks_unless_upscale_is_set(tmp_path):
    image, mask = tmp_path / "small.png", tmp_path / "small_mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    m = np.zeros((30, 40), np.uint8)
    m[5:20, 10:30] = 4
    Image.fromarray(m).save(mask)
    record = photo_record("small/1", image, mask)
    kept = make_sample(record, BuildSpec.from_config(shards_config(tmp_path, longest_side=96)))
    assert kept.image.shape == (30, 40, 3) and np.array_equal(kept.mask, m)  # not enlarged, mask untouched
    assert resized_size(40, 30, 96) == (40, 30) and resized_size(120, 90, 96) == (96, 72)
    grown = make_sample(record, BuildSpec.from_config(shards_config(tmp_path, longest_side=96, upscale=True)))
    assert grown.image.shape == (72, 96, 3) and grown.mask.shape == (72, 96)
    assert set(np.unique(grown.mask).tolist()) == {0, 4}  # nearest neighbour: no blended ids
    # upscale changes the bytes a shard holds, so it is part of every shard's fingerprint
    plain, _ = plan_shards([record], shards_config(tmp_path))
    up, _ = plan_shards([record], shards_config(tmp_path, upscale=True))
    assert plain[0].fingerprint != up[0].fingerprint


def test_semantic_layout_round_trips_through_a_shard_bit_exact(tmp_path):
    from glocon.data.layouts import open_layout
    from glocon.data.shardtask import build_shard
    from layout_fixtures import SEMANTIC_MAP, SEMANTIC_VOID, make_semantic, semantic_source_mask

    data = LayoutConfig(layout="semantic", root=str(make_semantic(tmp_path / "camvid")), class_names="classes.yaml",
                        void_ids=[SEMANTIC_VOID], min_class_pixels=10)
    cfg = shards_config(tmp_path / "out", data=data, longest_side=64, samples_per_shard=8)
    (plan,), _ = plan_shards(open_layout(data), cfg)
    done = build_shard(plan, str(tmp_path / "out"), BuildSpec.from_config(cfg))  # the task's own code, in-process
    assert done["rejected"] == [] and done["count"] == 3
    got = {s.key: s for s in stream_samples([str(tmp_path / "out" / plan.name)])}
    for i in range(3):
        want = np.vectorize(SEMANTIC_MAP.__getitem__)(semantic_source_mask(i)).astype(np.uint8)
        sample = got[f"semantic/frame{i:03d}"]
        assert sample.mask.dtype == np.uint8 and np.array_equal(sample.mask, want)  # void 30 -> 255, 3/7/12 -> 1/2/3
        assert sample.classes == {c: int((want == c).sum()) for c in (1, 2, 3)}


# ---------------------------------------------------------------------------------------------
# The job on Ray
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shards_round_trip_masks_and_label_maps_bit_exact(built, photos):
    manifest, cfg = built
    spec = BuildSpec.from_config(cfg)
    index = ShardIndex(manifest.root, verify=True)
    streamed = {s.key: s for s in ShardSet.open(manifest.root).stream()}
    assert sorted(streamed) == sorted(index.keys()) == sorted(r.key for r in photos)
    for record in photos:
        want = make_sample(record, spec)  # what the task encoded, recomputed here
        for got in (index.get(record.key), streamed[record.key]):
            assert np.array_equal(got.mask, want.mask) and got.mask.dtype == np.uint8
            assert np.array_equal(got.slic, want.slic) and np.array_equal(got.fh, want.fh)
            assert got.image.shape == want.image.shape
            assert np.abs(got.image.astype(int) - want.image).mean() < 4  # JPEG q95
            assert got.meta["source"] == record.source and got.meta["orig_size"] == [90, 120]


@pytest.mark.slow
def test_manifest_lists_counts_hashes_class_index_and_resolved_config(built, photos):
    manifest, cfg = built
    out = Path(cfg.out_dir)
    on_disk = Manifest.load(out)
    assert on_disk.model_dump() == manifest.model_dump()
    assert [s.name for s in manifest.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s.count for s in manifest.shards] == [2, 2, 1] and manifest.totals["samples"] == len(photos)
    for s in manifest.shards:
        assert sha256_file(out / s.name) == s.sha256 and (out / s.name).stat().st_size == s.bytes
    # class -> keys: the big class (2700 px) of each image, never the small one (100 px < 1000)
    want: dict[int, list[str]] = {}
    for i, r in enumerate(photos):
        want.setdefault(i % 3 + 1, []).append(r.key)
    assert manifest.classes == want and 7 not in manifest.classes
    assert manifest.rejected == [] and manifest.config["out_dir"] == str(out) and os.path.isabs(manifest.config["out_dir"])
    assert (out / "config.resolved.yaml").is_file()
    assert sorted(p.name for p in (out / DONE_DIR).iterdir()) == [f"{s.name}.json" for s in manifest.shards]


@pytest.mark.slow
def test_rerun_after_damage_rebuilds_only_broken_shards_byte_identical(built, photos, tmp_path):
    manifest, cfg = built
    reference = tree_bytes(Path(cfg.out_dir))
    out = tmp_path / "resumed"
    shutil.copytree(cfg.out_dir, out)  # a finished run, then the damage an interruption leaves:
    (out / "shard-000000.tar").unlink()  # a shard never renamed into place
    with open(out / "shard-000001.tar", "r+b") as fh:  # a shard cut short on disk
        fh.truncate(4000)
    (out / DONE_DIR / "shard-000002.tar.json").unlink()  # renamed, killed before its done-record
    (out / ".shard-000000.tar.k1ll3d.tmp").write_bytes(b"half a tar")  # a stale temp file
    (out / MANIFEST_NAME).unlink()
    kept = (out / "shard-000002.tar").stat()
    intact = shards_config(out)
    resumed = make_shards_from_records(photos, intact, dashboard=False)
    assert tree_bytes(out) == reference
    assert [s.model_dump() for s in resumed.shards] == [s.model_dump() for s in manifest.shards]
    assert not list(out.glob(".*.tmp")) and (out / MANIFEST_NAME).is_file()
    assert (out / "shard-000002.tar").stat().st_ino != kept.st_ino
    # and a rerun over a complete folder rebuilds nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = make_shards_from_records(photos, intact, dashboard=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before
    assert again.model_dump() == resumed.model_dump()


KILL_SCRIPT = textwrap.dedent(
    """
    import functools, sys, time
    from pathlib import Path
    from glocon.data.imageio import load_mask, load_rgb
    from glocon.data.record import Record
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards_from_records
    from glocon.raycluster import RayConfig

    def slow_rgb(path):  # slow enough that the test can kill the job between two shards
        time.sleep(1.5)
        return load_rgb(path)

    photos, out, ray_tmp = map(Path, sys.argv[1:4])
    records = [Record(key=f"photos/{i:03d}", source=str(photos / f"img{i}.jpg"), layout="test",
                      load_image=functools.partial(slow_rgb, photos / f"img{i}.jpg"),
                      load_mask=functools.partial(load_mask, photos / f"img{i}.png")) for i in range(5)]
    cfg = ShardsConfig(out_dir=str(out), samples_per_shard=1, longest_side=96, ray=RayConfig(num_cpus=1, temp_dir=str(ray_tmp)))
    cfg.data.min_class_pixels = 1000
    cfg.superpixels.slic.n_segments = 32
    make_shards_from_records(records, cfg)
    """
)


@pytest.mark.slow
def test_job_killed_mid_way_then_rerun_is_byte_identical_to_an_uninterrupted_run(photos, no_ray_in_process, tmp_path):
    photo_dir = Path(photos[0].source).parent
    out = tmp_path / "killed"
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT)
    ray_tmp = Path("/tmp") / f"glocon-kill-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, str(script), str(photo_dir), str(out), str(ray_tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / DONE_DIR).glob("*.json"))) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, mid-way
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_processes_naming(ray_tmp)  # whatever of the killed job's Ray outlived its session
        shutil.rmtree(ray_tmp, ignore_errors=True)
    done_before = len(list((out / DONE_DIR).glob("*.json")))
    assert 2 <= done_before < 5 and not (out / MANIFEST_NAME).exists()

    cfg = shards_config(out, samples_per_shard=1)
    resumed = make_shards_from_records(photos, cfg, dashboard=False)
    reference = make_shards_from_records(photos, shards_config(tmp_path / "clean", samples_per_shard=1), dashboard=False)
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean") and len(tree_bytes(out)) == 5
    assert [s.sha256 for s in resumed.shards] == [s.sha256 for s in reference.shards]
    assert not list(out.glob(".*.tmp"))


def bad_inputs(folder: Path) -> tuple[list[Record], dict[str, str]]:
    """Records for each kind of bad input, and the reason each must be rejected with."""
    folder.mkdir(parents=True, exist_ok=True)
    good = Image.new("RGB", (64, 48), (10, 120, 200))
    good.save(folder / "good.jpg", quality=95)
    whole = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not a png\n")
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(folder / "small_mask.png")
    Image.fromarray(np.full((48, 64), 91, np.uint8)).save(folder / "bad_ids.png")  # 91: no COCO category
    recs = [
        photo_record("bad/truncated", folder / "truncated.jpg"),
        photo_record("bad/empty", folder / "empty.jpg"),
        photo_record("bad/text", folder / "text.png"),
        photo_record("bad/tiny", folder / "tiny.png"),
        photo_record("bad/mask_size", folder / "good.jpg", folder / "small_mask.png"),
        photo_record("bad/mask_ids", folder / "good.jpg", folder / "bad_ids.png", mask_loader=semantic_mask),
        Record(key="bad/raw_pil", source=str(folder / "truncated.jpg"), layout="test",
               load_image=functools.partial(Image.open, folder / "truncated.jpg")),
        photo_record("ok/good", folder / "good.jpg"),
    ]
    reasons = {
        "bad/truncated": "truncated",
        "bad/empty": "empty file",
        "bad/text": "not a decodable image",
        "bad/tiny": "1x1, smaller than min_side",
        "bad/mask_size": "mask size 40x30 differs from image size 64x48",
        "bad/mask_ids": "not COCO panoptic category ids",
        "bad/raw_pil": "truncated",
    }
    return recs, reasons


def converted_inputs(folder: Path) -> list[Record]:
    """CMYK, grayscale, 16-bit, palette and RGBA images: accepted and converted to RGB."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # pure red
    Image.new("L", (64, 48), 77).save(folder / "gray.png")
    Image.fromarray(np.full((48, 64), 32768, np.uint16)).save(folder / "gray16.png")  # mid grey
    pal = Image.new("P", (64, 48), 1)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pal.save(folder / "palette.png")
    Image.new("RGBA", (64, 48), (0, 0, 255, 0)).save(folder / "rgba.png")  # fully transparent
    names = ["cmyk.jpg", "gray.png", "gray16.png", "palette.png", "rgba.png"]
    return [photo_record(f"conv/{Path(n).stem}", folder / n) for n in names]


@pytest.mark.slow
def test_each_bad_input_goes_to_rejected_with_path_and_reason(ray_session, tmp_path, capsys):
    records, reasons = bad_inputs(tmp_path / "in")
    records += converted_inputs(tmp_path / "conv")
    manifest = make_shards_from_records(records, shards_config(tmp_path / "out"), dashboard=True)
    rejected = {r.key: r for r in manifest.rejected}
    assert sorted(rejected) == sorted(reasons)
    for key, reason in reasons.items():
        source = next(r.source for r in records if r.key == key)
        assert rejected[key].path == source and reason.lower() in rejected[key].reason.lower(), (key, rejected[key].reason)
    assert manifest.totals == {"records": 13, "samples": 6, "shards": 7, "rejected": 7}
    index = ShardIndex(manifest.root)
    colour = {k: index.get(k).image[20:28, 28:36].reshape(-1, 3).mean(0) for k in index.keys() if k.startswith("conv/")}
    np.testing.assert_allclose(colour["conv/cmyk"], [255, 0, 0], atol=6)
    np.testing.assert_allclose(colour["conv/gray"], [77, 77, 77], atol=3)
    np.testing.assert_allclose(colour["conv/gray16"], [128, 128, 128], atol=3)  # scaled, not clipped to 255
    np.testing.assert_allclose(colour["conv/palette"], [0, 200, 0], atol=4)
    np.testing.assert_allclose(colour["conv/rgba"], [255, 255, 255], atol=3)  # transparent over white
    printed = capsys.readouterr().out
    assert "rejected=7" in printed and "shards=7/7" in printed  # plain progress lines (not a TTY)
    assert "7 rejected" in printed and str(tmp_path / "in" / "text.png") in printed  # the summary


@pytest.mark.slow
def test_strict_makes_bad_input_an_error_naming_the_file(ray_session, tmp_path):
    records, _ = bad_inputs(tmp_path / "in")
    bad = [r for r in records if r.key in ("bad/mask_size", "ok/good")]
    with pytest.raises(DataError, match=r"strict=true: bad input .*good\.jpg: mask size 40x30 differs"):
        make_shards_from_records(bad, shards_config(tmp_path / "out", strict=True), dashboard=False)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_coco128_photos_become_shards(coco128, ray_session, tmp_path):
    data = LayoutConfig(layout="coco", coco_format="semantic_png", root=str(coco128), split="val2017", limit=4)
    cfg = ShardsConfig(data=data, out_dir=str(tmp_path / "coco128"), samples_per_shard=2, longest_side=128)
    manifest = make_shards(cfg, dashboard=False)
    assert manifest.totals["samples"] == 4 and not manifest.rejected
    index = ShardIndex(manifest.root, verify=True)
    for key in index.keys():
        sample = index.get(key)
        src = Image.open(sample.meta["source"])
        assert sample.meta["orig_size"] == [src.height, src.width] and max(sample.image.shape[:2]) == 128
        assert sample.mask.shape == sample.image.shape[:2]
        ids = set(np.unique(sample.mask).tolist()) - {255}
        assert ids and max(ids) <= 80  # COCO's 80 classes as 1..80
    for cid, keys in manifest.classes.items():
        for key in keys:
            assert index.get(key).classes[cid] >= data.min_class_pixels


def load_job():
    spec = importlib.util.spec_from_file_location("make_shards_job", REPO / "jobs" / "make_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:embedded layout")  # 6 images are too few for 5-shot episodes, and that is fine here
def test_job_script_builds_embedded_shards_from_its_config(ray_session, tmp_path, capsys):
    job = load_job()
    out = tmp_path / "emb"
    argv = ["--config", str(REPO / "configs" / "shards-embedded.yaml"), f"out_dir={out}", "data.embedded.n_images=6",
            "data.embedded.size=96", f"data.embedded.cache_dir={tmp_path / 'cache'}", "longest_side=96", "samples_per_shard=4"]
    assert job.main(argv) == 0
    manifest = Manifest.load(out)
    assert manifest.totals["samples"] == 6 and [s.count for s in manifest.shards] == [4, 2]
    assert json.loads((out / MANIFEST_NAME).read_text())["config"]["data"]["layout"] == "embedded"
    assert "6 samples" in capsys.readouterr().out
    assert job.main(["--config", str(REPO / "configs" / "shards-embedded.yaml"), "sampels_per_shard=3"]) == 2
    assert "samples_per_shard" in capsys.readouterr().err


@pytest.mark.slow
def test_voc_and_fss_layouts_become_shards_with_exact_masks_and_a_class_index(ray_session, tmp_path):
    from layout_fixtures import make_fss, make_voc

    from glocon.data.layouts import open_layout

    voc = LayoutConfig(layout="voc", root=str(make_voc(tmp_path / "voc")), split="train", min_class_pixels=100)
    manifest = make_shards(shards_config(tmp_path / "voc-shards", data=voc, longest_side=64), dashboard=False)
    index = ShardIndex(manifest.root)
    records = open_layout(voc)
    assert index.keys() == [r.key for r in records] and not manifest.rejected
    for r in records:  # stored at 64 px already: the palette indices, the 255 border included, bit-exact
        got = index.get(r.key).mask
        assert np.array_equal(got, r.load_mask()) and {0, 255} < set(np.unique(got).tolist())
    assert {c: sorted(k) for c, k in manifest.classes.items()} == {
        int(np.setdiff1d(np.unique(r.load_mask()), [0, 255])[0]): [r.key] for r in records}

    data_root, split_dir = make_fss(tmp_path / "fss")
    fss = LayoutConfig(layout="fss", root=str(data_root), split="trn", fss_split_dir=str(split_dir), min_class_pixels=100)
    manifest = make_shards(shards_config(tmp_path / "fss-shards", data=fss, longest_side=64), dashboard=False)
    want: dict[int, list[str]] = {}
    for r in open_layout(fss):
        want.setdefault(r.extra["binary_class"], []).append(r.key)
    assert manifest.classes == want and len(want) == 3  # bus, airliner, cat: ids, not the mask's 1
    sample = ShardIndex(manifest.root).get(want[min(want)][0])
    assert set(np.unique(sample.mask).tolist()) == {0, 1} and sample.meta["extra"]["binary_class"] == min(want)


@pytest.mark.slow
def test_semantic_shards_record_the_id_mapping_and_names_in_the_manifest_and_print_it(ray_session, tmp_path, capsys):
    from layout_fixtures import SEMANTIC_MAP, SEMANTIC_VOID, make_semantic

    data = LayoutConfig(layout="semantic", root=str(make_semantic(tmp_path / "camvid")), class_names="classes.yaml",
                        void_ids=[SEMANTIC_VOID], min_class_pixels=10)
    manifest = make_shards(shards_config(tmp_path / "out", data=data, longest_side=64), dashboard=True)
    on_disk = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["class_table"]
    assert {int(k): v for k, v in on_disk["source_ids"].items()} == SEMANTIC_MAP
    assert on_disk["names"] == {"0": "unlabelled", "1": "road", "2": "car", "3": "pedestrian"}
    assert Manifest.load(tmp_path / "out").class_table == manifest.class_table
    printed = capsys.readouterr().out
    assert "12 -> 3 pedestrian" in printed and "30 -> 255 ignore" in printed


@pytest.mark.slow
def test_a_job_whose_every_input_is_rejected_fails_with_a_summary_and_keeps_the_manifest(ray_session, tmp_path):
    records, _ = bad_inputs(tmp_path / "in")
    bad = [r for r in records if r.key.startswith("bad/")]
    with pytest.raises(DataError, match=r"(?s)all 7 inputs were rejected, no shard holds a sample .*manifest\.json.*rejected .*empty\.jpg"):
        make_shards_from_records(bad, shards_config(tmp_path / "out"), dashboard=False)
    manifest = Manifest.load(tmp_path / "out")
    assert manifest.totals["samples"] == 0 and len(manifest.rejected) == 7
    with pytest.raises(DataError, match=r"lists no samples \(7 inputs, 7 rejected"):
        ShardSet.open(tmp_path / "out").stream()  # a reader names the folder, not "no shard urls given"


@pytest.mark.slow
def test_rerun_rebuilds_a_shard_whose_bytes_changed_at_the_same_size(built, photos, tmp_path):
    manifest, cfg = built
    reference = tree_bytes(Path(cfg.out_dir))
    out = tmp_path / "flipped"
    shutil.copytree(cfg.out_dir, out)
    shard = out / "shard-000001.tar"
    size = shard.stat().st_size
    with open(shard, "r+b") as fh:  # 16 bytes inside a member: same size, same headers
        fh.seek(size // 2)
        data = fh.read(16)
        fh.seek(size // 2)
        fh.write(bytes(b ^ 0xFF for b in data))
    assert shard.stat().st_size == size and tree_bytes(out) != reference
    with pytest.raises(DataError, match=r"shard-000001\.tar: sha256 differs from the manifest's .*Rerun make_shards"):
        list(ShardSet.open(out).stream())
    make_shards_from_records(photos, shards_config(out), dashboard=False)  # the repair the error names
    assert tree_bytes(out) == reference
    assert len(list(ShardSet.open(out).stream())) == len(photos)


def readme_camvid_overrides() -> list[str]:
    """The overrides of README.md's CamVid ``make_shards`` command (continuation lines joined)."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if "jobs/make_shards.py" in ln and "data.layout=semantic" in ln]
    return line.split("jobs/make_shards.py", 1)[1].split()


@pytest.mark.slow
def test_readme_camvid_command_writes_semantic_shards_with_the_mapping(ray_session, tmp_path, capsys):
    from layout_fixtures import CAMVID_NAMES, make_camvid

    root = make_camvid(tmp_path / "CamVid")
    out = tmp_path / "camvid-shards"
    # the README's command, pointed at the fixture instead of /data/CamVid
    args = [f"data.root={root}" if a.startswith("data.root=") else f"out_dir={out}" if a.startswith("out_dir=") else a
            for a in readme_camvid_overrides()]
    assert "data.void_ids=[11]" in args and "data.background_id=null" in args
    assert load_job().main(args + ["samples_per_shard=2", "superpixels.slic.n_segments=16"]) == 0
    manifest = Manifest.load(out)
    table = manifest.class_table
    assert table.source_ids == {**{i: i + 1 for i in range(11)}, 11: 255} and 0 not in table.names
    assert [table.names[i + 1] for i in range(11)] == CAMVID_NAMES[:11]
    printed = capsys.readouterr().out
    assert "0 -> 1 Sky" in printed and "11 -> 255 ignore" in printed
    for key in manifest.keys():
        source = np.asarray(Image.open(root / "trainannot" / (key.split("/")[-1] + ".png")))
        mask = ShardIndex(manifest.root).get(key).mask  # 64x48 frames: below longest_side=480, kept as they are
        assert np.array_equal(mask, np.where(source == 11, 255, source + 1).astype(np.uint8))
