"""Shard readers: lossless decoding, node/worker splits, random access, hostile and truncated tars.

These tests write small shards directly with the writer's own tar settings and the one sample
schema (no Ray), so they are cheap; tests/test_shards.py covers the Ray job end to end.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from glocon.data.readers import check_tar_end, stream_samples, unsafe_member
from glocon.data.shardset import ShardSet
from glocon.data.shardindex import ShardIndex, scan_tar
from glocon.data.schema import Sample
from glocon.data.manifest import MANIFEST_NAME, Manifest, Rejection
from glocon.errors import DataError

from shard_writer import write_sample_shards


def make_sample(i: int, h: int = 24, w: int = 32) -> Sample:
    """A sample whose mask uses every id 0..255 and whose label maps go far beyond 8 bits."""
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = ((np.arange(h * w).reshape(h, w) + i) % 256).astype(np.uint8)
    slic = rng.integers(0, 65536, (h, w)).astype(np.int32)
    slic[0, 0], slic[0, 1] = 0, 65535  # the extremes of the 16-bit range
    fh = rng.integers(0, 300, (h, w)).astype(np.int32)
    meta = {"key": f"img/{i:03d}", "source": f"/data/{i:03d}.jpg", "orig_size": [h * 2, w * 2], "classes": {"3": 100 + i}}
    return Sample(key=f"img/{i:03d}", image=image, slic=slic, fh=fh, meta=meta, mask=mask)


def write_shards(folder: Path, n: int, per_shard: int) -> tuple[Manifest, list[Sample]]:
    """Shards + manifest as make_shards would lay them out (same tar writer, same schema)."""
    samples = [make_sample(i) for i in range(n)]
    return write_sample_shards(folder, samples, per_shard, "test", {3: [x.key for x in samples[::2]]}), samples


def hostile_tar(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"{}"))
    return path


@pytest.fixture
def shard_set(tmp_path):
    return write_shards(tmp_path / "shards", n=10, per_shard=3)


def test_stream_returns_masks_and_label_maps_bit_exact(shard_set):
    manifest, samples = shard_set
    by_key = {s.key: s for s in samples}
    seen = list(ShardSet.open(manifest.root).stream())
    assert [s.key for s in seen] == [s.key for s in samples]
    for got in seen:
        want = by_key[got.key]
        assert got.mask.dtype == np.uint8 and np.array_equal(got.mask, want.mask)
        assert got.slic.dtype == np.int32 and np.array_equal(got.slic, want.slic)
        assert np.array_equal(got.fh, want.fh)
        assert got.image.shape == want.image.shape and got.meta["orig_size"] == want.meta["orig_size"]
        assert got.shard.endswith(".tar") and Path(got.shard).is_file()


def test_webdataset_rgb_decode_would_lose_the_mask_ids(shard_set):
    """Why readers use decode_sample: .decode("rgb") gives float RGB in [0, 1], not class ids."""
    import webdataset as wds

    manifest, samples = shard_set
    raw = next(iter(wds.WebDataset(manifest.urls()[:1], shardshuffle=False).decode("rgb")))
    lossy = raw["mask.png"]
    assert lossy.dtype != np.uint8 and lossy.ndim == 3 and lossy.max() <= 1.0
    assert not np.array_equal(np.rint(lossy[..., 0]).astype(np.uint8), samples[0].mask)
    assert np.array_equal(next(iter(stream_samples(manifest.urls()[:1]))).mask, samples[0].mask)


def test_two_ranks_cover_every_sample_exactly_once(shard_set):
    manifest, samples = shard_set
    parts = [[s.key for s in stream_samples(manifest.urls(), rank=r, world_size=2, shuffle_buffer=4, seed=1)] for r in (0, 1)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(s.key for s in samples)


def test_split_by_node_follows_the_distributed_rank(shard_set, monkeypatch):
    """Without an explicit rank, webdataset's split_by_node reads the rank (as under Ray Train)."""
    manifest, samples = shard_set
    parts = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        parts.append([s.key for s in stream_samples(manifest.urls())])
    assert Counter(parts[0] + parts[1]) == Counter(s.key for s in samples)
    assert not set(parts[0]) & set(parts[1])


def test_dataloader_workers_split_the_shards(shard_set):
    import torch

    manifest, samples = shard_set
    loader = torch.utils.data.DataLoader(ShardSet.open(manifest.root).stream(), batch_size=None, num_workers=2,
                                         collate_fn=lambda s: s.key)
    keys = list(loader)
    assert Counter(keys) == Counter(s.key for s in samples)


def test_epochs_repeat_every_sample_and_reshuffle(shard_set):
    manifest, samples = shard_set
    keys = [s.key for s in ShardSet.open(manifest.root).stream(shuffle_buffer=8, seed=3, epochs=2)]
    n = len(samples)
    assert Counter(keys) == Counter({s.key: 2 for s in samples})
    assert keys[:n] != keys[n:]  # a new order in the second epoch
    again = [s.key for s in ShardSet.open(manifest.root).stream(shuffle_buffer=8, seed=3, epochs=2)]
    assert again == keys  # seeded
    assert [s.key for s in ShardSet.open(manifest.root).stream()] == [s.key for s in samples]


def test_resampled_stream_is_seeded_and_endless(shard_set):
    manifest, _ = shard_set
    take = lambda seed: [s.key for _, s in zip(range(25), ShardSet.open(manifest.root).stream(resampled=True, seed=seed))]
    first = take(7)
    assert len(first) == 25 and first == take(7)


def test_shard_index_gets_any_key_in_any_order(shard_set):
    manifest, samples = shard_set
    index = ShardIndex(manifest.root, verify=True)
    assert index.keys() == [s.key for s in samples] and len(index) == len(samples)
    assert index.class_index == {3: [s.key for s in samples[::2]]}
    for want in reversed(samples):
        got = index.get(want.key)
        assert got.key == want.key and got.meta == {**want.meta, "size": [24, 32]}
        assert np.array_equal(got.mask, want.mask) and np.array_equal(got.slic, want.slic) and np.array_equal(got.fh, want.fh)
    assert "img/004" in index and "img/999" not in index
    with pytest.raises(KeyError, match="img/999"):
        index.get("img/999")


def test_member_named_dotdot_is_refused_naming_shard_and_member(tmp_path):
    assert unsafe_member("../x") and unsafe_member("/etc/x.jpg") and unsafe_member("a/../../x.json")
    assert not unsafe_member("a/b.json") and not unsafe_member("x..y.json")
    bad = hostile_tar(tmp_path / "bad.tar", ["ok.json", "../x.json"])
    with pytest.raises(DataError, match=r"bad\.tar.*'\.\./x\.json'.*refused"):
        list(stream_samples([str(bad)]))
    with pytest.raises(DataError, match=r"bad\.tar.*'\.\./x\.json'.*refused"):
        scan_tar(bad)
    absolute = hostile_tar(tmp_path / "abs.tar", ["/x.json"])
    with pytest.raises(DataError, match=r"abs\.tar.*'/x\.json'"):
        list(stream_samples([str(absolute)]))


def test_shard_index_refuses_a_manifest_whose_shard_has_a_dotdot_member(shard_set):
    manifest, _ = shard_set
    path = manifest.shard_path(manifest.shards[0].name)
    hostile_tar(path, ["../x.json"])
    with pytest.raises(DataError, match=rf"{path.name}.*'\.\./x\.json'"):
        ShardIndex(manifest.root)


@pytest.mark.parametrize("where", ["mid_member", "header_boundary"])
def test_truncated_tar_is_an_error_naming_the_shard(shard_set, where):
    manifest, _ = shard_set
    path = manifest.shard_path(manifest.shards[1].name)
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    # header_boundary: cut right before the second sample's first header; tarfile alone would
    # read the remainder as a valid, shorter archive.
    cut = members[5].offset if where == "header_boundary" else members[2].offset_data + members[2].size // 2
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    with pytest.raises(DataError, match=rf"shard .*{path.name}.*truncated"):
        list(ShardSet.open(manifest.root).stream())
    with pytest.raises(DataError, match=rf"shard .*{path.name}.*truncated"):
        ShardIndex(manifest.root)
    with pytest.raises(DataError, match="truncated"):
        check_tar_end(path)


def test_tampered_manifest_is_an_error_naming_file_and_field(shard_set):
    manifest, _ = shard_set
    path = manifest.root / MANIFEST_NAME
    text = path.read_text()
    path.write_text(text.replace('"count": 3', '"count": 4', 1))
    with pytest.raises(DataError, match=r"manifest\.json.*shards\.0\.count"):
        Manifest.load(manifest.root)
    path.write_text(text.replace('"prefix"', '"prefixx"'))
    with pytest.raises(DataError, match=r"manifest\.json.*prefix"):
        ShardIndex(path)
    path.write_text(text)
    os.remove(manifest.shard_path(manifest.shards[2].name))
    with pytest.raises(DataError, match=r"test-000002\.tar: missing"):
        ShardIndex(manifest.root)


def test_shardset_urls_from_folder_manifest_or_plain_tars(shard_set, tmp_path):
    manifest, _ = shard_set
    urls = list(ShardSet.open(manifest.root).urls)
    assert urls == list(ShardSet.open(manifest.root / MANIFEST_NAME).urls) == [str(manifest.root / s.name) for s in manifest.shards]
    assert all(os.path.isabs(u) for u in urls)
    (manifest.root / MANIFEST_NAME).unlink()
    assert list(ShardSet.open(manifest.root).urls) == urls
    with pytest.raises(DataError, match=r"no manifest\.json and no \*\.tar shards"):
        ShardSet.open(tmp_path)
    with pytest.raises(DataError, match="no such shard folder or manifest"):
        ShardSet.open(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# content verification (on by default)
# ---------------------------------------------------------------------------------------------
def flip_member_bytes(path: Path, key: str, suffix: str = "jpg", n: int = 16) -> None:
    """Invert ``n`` bytes in the middle of one member's data, in place: same size, same headers."""
    offset, size = scan_tar(path)[key][suffix]
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        data = fh.read(n)
        fh.seek(offset + size // 2)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_default_readers_refuse_a_shard_whose_member_bytes_changed_at_the_same_size(shard_set):
    manifest, samples = shard_set
    path = manifest.shard_path(manifest.shards[1].name)
    victim = manifest.shards[1].keys[0]
    before, size = ShardIndex(manifest.root, verify=False).get(victim).image, path.stat().st_size
    flip_member_bytes(path, victim.replace("/", "_"))
    assert path.stat().st_size == size and check_tar_end(path) is None  # nothing a size or header check could see
    message = rf"shard {path}: sha256 differs from the manifest's .*Rerun make_shards"
    index = ShardIndex(manifest.root)  # headers still scan
    with pytest.raises(DataError, match=message):
        index.get(victim)
    with pytest.raises(DataError, match=message):
        list(ShardSet.open(manifest.root).stream())
    with pytest.raises(DataError, match=message):
        list(stream_samples([str(path)]))  # a url list is checked against its folder's manifest
    # verify=False is the explicit opt-out: it reads the changed image (here a visibly different one)
    changed = ShardIndex(manifest.root, verify=False).get(victim).image
    assert changed.shape == before.shape and (changed != before).any()
    assert len(list(ShardSet.open(manifest.root).stream(verify=False))) == len(samples)
    assert index.get(manifest.shards[0].keys[0]).key == manifest.shards[0].keys[0]  # other shards still read


def test_each_shard_is_hashed_once_per_process_until_the_file_changes(shard_set, monkeypatch):
    from glocon.data import verify

    manifest, samples = shard_set
    verify.clear_cache()
    hashed: list[str] = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    for _ in range(3):  # three passes, as a training worker makes
        assert len(list(ShardSet.open(manifest.root).stream())) == len(samples)
    index = ShardIndex(manifest.root)
    for s in samples:
        index.get(s.key)
    assert sorted(hashed) == sorted(s.name for s in manifest.shards)  # once each, shared by both readers
    shard = manifest.shard_path(manifest.shards[0].name)
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1_000_000_000))  # touched: hash again
    index.get(manifest.shards[0].keys[0])
    assert hashed.count(shard.name) == 2


def test_a_tar_beside_the_shards_that_the_manifest_does_not_list_is_refused(shard_set):
    manifest, _ = shard_set
    stray = manifest.root / "stray.tar"
    stray.write_bytes(manifest.shard_path(manifest.shards[0].name).read_bytes())
    with pytest.raises(DataError, match=rf"shard {stray}: not listed in .*manifest\.json"):
        list(stream_samples([str(stray)]))
    assert len(list(stream_samples([str(stray)], verify=False))) == manifest.shards[0].count


def test_manifest_without_samples_is_an_error_naming_it_not_an_empty_url_list(tmp_path):
    folder = tmp_path / "empty"
    manifest = write_sample_shards(folder, [], 4, "test", {})
    manifest.rejected = [Rejection(key="a", path="/data/a.jpg", reason="/data/a.jpg: unreadable image")]
    manifest.totals.update(records=1, rejected=1)
    manifest.save(folder)
    with pytest.raises(DataError, match=rf"shard manifest {folder / MANIFEST_NAME} lists no samples \(1 inputs, 1 rejected"):
        ShardSet.open(folder)


# ---------------------------------------------------------------------------------------------
# ranks and shards
# ---------------------------------------------------------------------------------------------
def test_too_few_shards_for_the_ranks_names_samples_per_shard_num_workers_and_resampled(tmp_path):
    manifest, _ = write_shards(tmp_path / "one", n=4, per_shard=4)
    with pytest.raises(DataError, match=r"1 shard\(s\) cannot be split over 2 ranks \(num_workers\).*samples_per_shard.*data\.resampled=true"):
        ShardSet.open(manifest.root).stream(rank=0, world_size=2)


def test_resampled_stream_feeds_two_ranks_from_one_shard_for_a_bounded_epoch(tmp_path):
    manifest, samples = write_shards(tmp_path / "one", n=4, per_shard=4)
    keys = {s.key for s in samples}
    parts = [[s.key for s in ShardSet.open(manifest.root).stream(resampled=True, seed=5, rank=r, world_size=2).with_epoch(6)]
             for r in (0, 1)]
    assert [len(p) for p in parts] == [6, 6] and set(parts[0]) <= keys and set(parts[1]) <= keys
    again = [s.key for s in ShardSet.open(manifest.root).stream(resampled=True, seed=5, rank=0, world_size=2).with_epoch(6)]
    assert again == parts[0]  # seeded per rank


def test_pretraining_worker_stream_in_resampled_mode_yields_exactly_the_epoch(tmp_path):
    from glocon.train.data import worker_samples

    manifest, samples = write_shards(tmp_path / "one", n=4, per_shard=4)
    got = list(worker_samples(manifest.urls(), 1, 2, seed=3, shuffle_buffer=2, resampled=True, epoch_samples=10))
    assert len(got) == 10 and {s.key for s in got} <= {s.key for s in samples}
