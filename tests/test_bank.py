"""The prior-feature bank: build on real COCO128 photos, exact and approximate search, provenance,
errors that name files, the contact sheet, class purity, the jobs, and the Ray build."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glocon.bank.build import build_bank
from glocon.bank.config import BankConfig, IndexConfig, QueryConfig, StatsConfig
from glocon.bank.index import build_index, choose_factory, read_index, recall_at_k, search
from glocon.bank.query import Patch, embed_region, load_bank_prior, query_bank
from glocon.bank.render import BACKGROUND, CAPTION, HIT_OUTLINE, QUERY_OUTLINE, sheet_size
from glocon.bank.stats import bank_stats
from glocon.bank.store import INDEX, open_bank
from glocon.bank.synthetic import clustered_vectors
from glocon.data.shardset import ShardSet
from glocon.errors import DataError
from glocon.io import sha256_file
from glocon.models.prior import PriorArch, PriorExtractor, save_export

from bank_shards import write_shards

REPO = Path(__file__).resolve().parents[1]


def _export(path: Path, **arch) -> Path:
    torch.manual_seed(0)
    save_export(PriorExtractor(PriorArch(backbone="resnet18", **arch)), path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bank")


@pytest.fixture(scope="module")
def shards(coco128, work) -> Path:
    write_shards(coco128, work / "shards", n_images=8, per_shard=4, size=96)
    return work / "shards"


@pytest.fixture(scope="module")
def prior(work) -> Path:
    return _export(work / "prior.pt")


def _bank_cfg(coco128, shards, prior, out, **kw) -> BankConfig:
    names = coco128 / "semantic_segmentation" / "config.yaml"
    base = dict(prior=str(prior), shards=str(shards), out=str(out), workers=0, input_size=128,
                global_embedding=True, class_names=str(names))
    return BankConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def bank_dir(coco128, shards, prior, work) -> Path:
    build_bank(_bank_cfg(coco128, shards, prior, work / "bank"))
    return work / "bank"


def test_build_pools_one_unit_vector_per_superpixel_and_records_the_manifest(bank_dir, shards, prior):
    samples = list(ShardSet.open(str(shards)).stream(split_by_node=False, split_by_worker=False))
    expected = sum(int(s.slic.max()) + 1 for s in samples)
    bank = open_bank(bank_dir)
    assert bank.count == expected == bank.index.ntotal == len(bank.vectors)
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-5)
    m = bank.manifest
    assert m["prior"]["sha256"] == sha256_file(prior)
    assert m["factory"] == "IDMap,Flat" and m["nprobe"] == IndexConfig().nprobe and m["dim"] == 512
    assert m["counts"]["images"] == len(samples) == 8 and m["counts"]["shards"] == 2
    assert m["config"]["patch_method"] == "slic" and (bank_dir / "config.resolved.yaml").is_file()
    g = np.load(bank_dir / "global.npy")
    assert g.shape == (8, 128)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)


def test_exact_search_equals_brute_force_numpy(bank_dir):
    bank = open_bank(bank_dir)
    vecs = np.asarray(bank.vectors)
    rng = np.random.default_rng(0)
    queries = vecs[rng.choice(len(vecs), 12, replace=False)] + 0.05 * rng.standard_normal((12, vecs.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, ids = search(bank.index, queries, 10)
    sims = queries @ vecs.T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, want, 1), rtol=1e-5, atol=1e-5)


def test_provenance_round_trips_to_exactly_the_pooled_pixels(bank_dir):
    bank = open_bank(bank_dir)
    model = load_bank_prior(bank)
    for vid in (0, 17, bank.count // 2, bank.count - 1):
        row = bank.table.slice(vid, 1).to_pylist()[0]
        assert row["id"] == vid
        sample = ShardSet.open(row["shard"]).get(row["key"])
        region = sample.slic == row["superpixel"]
        ys, xs = np.nonzero(region)
        assert (row["x0"], row["y0"], row["x1"], row["y1"]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert row["area"] == region.sum() and (row["height"], row["width"]) == region.shape
        cls = np.bincount(sample.mask[region], minlength=256)
        assert row["dominant_class"] == cls.argmax()
        # Pooling only these pixels, from the shard image, gives back the stored vector.
        again = embed_region(model, Patch(sample.image, region, "superpixel"), bank.manifest)
        np.testing.assert_allclose(again, bank.vectors[vid], atol=1e-5)


def test_query_by_key_finds_its_own_patch_first_unless_its_image_is_excluded(bank_dir, work):
    row = open_bank(bank_dir).table.slice(30, 1).to_pylist()[0]
    base = dict(bank=str(bank_dir), key=row["key"], superpixel=row["superpixel"], k=5)
    own = query_bank(QueryConfig(**base, exclude_same_image=False, out=str(work / "q-own")))
    assert own["hits"][0]["id"] == 30 and own["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    other = query_bank(QueryConfig(**base, out=str(work / "q-other")))
    assert len(other["hits"]) == 5 and all(h["key"] != row["key"] for h in other["hits"])
    scores = [h["score"] for h in other["hits"]]
    assert scores == sorted(scores, reverse=True)
    saved = json.loads((work / "q-other" / "hits.json").read_text())
    assert [h["id"] for h in saved["hits"]] == [h["id"] for h in other["hits"]]
    assert saved["query"]["class_name"] and all("class_name" in h for h in saved["hits"])


def test_query_by_image_file_point_and_box(bank_dir, coco128, work):
    image = sorted((coco128 / "images" / "val2017").glob("*.jpg"))[0]  # not in the bank
    by_point = query_bank(QueryConfig(bank=str(bank_dir), image=str(image), point=(20, 30), k=4, out=str(work / "q-pt")))
    assert by_point["query"]["kind"] == "superpixel" and len(by_point["hits"]) == 4
    by_box = query_bank(QueryConfig(bank=str(bank_dir), image=str(image), box=(10, 10, 50, 40), k=4, out=str(work / "q-box")))
    assert by_box["query"]["bbox"] == [10, 10, 50, 40] and by_box["query"]["area"] == 40 * 30
    assert (work / "q-box" / "sheet.png").is_file()


def test_contact_sheet_has_the_predicted_size_and_one_tile_per_hit(bank_dir, work):
    row = open_bank(bank_dir).table.slice(5, 1).to_pylist()[0]
    out = work / "q-sheet"
    tile, cols, k = 64, 3, 7
    res = query_bank(QueryConfig(bank=str(bank_dir), key=row["key"], superpixel=row["superpixel"], k=k, tile=tile, columns=cols, out=str(out)))
    sheet = np.asarray(Image.open(out / "sheet.png").convert("RGB"))
    assert (sheet.shape[1], sheet.shape[0]) == sheet_size(k + 1, tile, cols) == (3 * tile, 3 * (tile + CAPTION))
    assert res["sheet"]["tiles"] == k + 1
    slots = [sheet[r * (tile + CAPTION) : r * (tile + CAPTION) + tile, c * tile : (c + 1) * tile] for r in range(3) for c in range(3)]
    for i, slot in enumerate(slots[: k + 1]):
        colour = QUERY_OUTLINE if i == 0 else HIT_OUTLINE
        assert (slot == colour).all(-1).sum() > 10, f"tile {i} has no outline"
    assert (slots[k + 1] == BACKGROUND).all(), "the slot after the last hit should be empty"


def test_missing_or_corrupt_index_names_the_file_and_what_was_expected(bank_dir, work):
    copy = work / "bank-broken"
    shutil.copytree(bank_dir, copy)
    (copy / INDEX).unlink()
    with pytest.raises(DataError, match=rf"{copy / INDEX}.*expected a FAISS index of \d+ vectors of dim 512"):
        open_bank(copy).index
    (copy / INDEX).write_bytes(b"not an index at all" * 10)
    with pytest.raises(DataError, match=rf"{copy / INDEX}: corrupt or not a FAISS index.*expected"):
        open_bank(copy).index
    good = (bank_dir / INDEX).read_bytes()
    (copy / INDEX).write_bytes(good[: len(good) // 2])  # truncated mid-write by something else
    with pytest.raises(DataError, match=str(copy / INDEX)):
        read_index(copy / INDEX, dim=512)


def test_prior_with_another_embedding_size_is_refused_naming_both_files(bank_dir, work):
    other = _export(work / "prior-local-head.pt", prior_source="local_head")  # prior_features: 128-d, the bank: 512-d
    with pytest.raises(DataError, match=rf"prior {other}: gives 128-d .* bank index {bank_dir / INDEX} holds 512-d"):
        load_bank_prior(open_bank(bank_dir), str(other))


def test_ivf_and_pq_recall_at_10_against_exact_is_above_threshold():
    data = clustered_vectors(10_200, dim=64, seed=1)
    base, queries = data[:10_000], data[10_000:]
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    cfg = IndexConfig(exact_max=1_000, ivf_flat_max=5_000, nprobe=64, train_size=10_000)
    assert choose_factory(5_000, 64, cfg).startswith("IVF") and choose_factory(500, 64, cfg) == "IDMap,Flat"
    factory = choose_factory(len(base), 64, cfg)
    assert factory == "IVF256,PQ64"  # 4 sqrt(n) = 400, capped at n / 39 = 256; one PQ byte per dimension
    found, few_lists = {}, {}
    for name, fs in (("ivf_flat", "IVF256,Flat"), ("ivf_pq", factory)):
        index = build_index(base, fs, cfg)
        _, ids = search(index, queries, 10)
        found[name] = recall_at_k(ids, exact)
        few_lists[name] = recall_at_k(search(index, queries, 10, nprobe=16)[1], exact)
    print(f"recall@10 vs exact: {found}; at nprobe 16: {few_lists}")
    # the thresholds below can fail on this data: visiting 16 of the 256 lists instead of the
    # configured 64 measured 0.74-0.75 (IVF-Flat on seeds 1-3, IVF-PQ64 on seed 1)
    assert few_lists["ivf_flat"] < 0.9 and few_lists["ivf_pq"] < 0.85, few_lists
    # IVF-Flat only loses neighbours that sit in unvisited lists: 64 of 256 lists measured 0.965 on two
    # seeds of this data, so 0.9 leaves margin. IVF-PQ64 on 64-d (the default: one byte per dimension)
    # adds quantisation error and measured 0.939-0.940 at nprobe 64 on seeds 1 and 2 (PQ16, 4 dims per
    # byte, measured 0.71-0.73): 0.85 leaves margin for seeds, yet a broken index (wrong metric,
    # untrained or mis-ordered codes, lost ids) lands far below it (random ids: ~0.001).
    assert found["ivf_flat"] >= 0.9, found
    assert found["ivf_pq"] >= 0.85, found


def test_purity_stats_match_a_numpy_recount(bank_dir, work):
    cfg = StatsConfig(bank=str(bank_dir), k=5, queries=40, ignore_classes=[0], out=str(work / "stats.json"))
    res = bank_stats(cfg)
    bank = open_bank(bank_dir)
    cls = bank.table.column("dominant_class").to_numpy().astype(int).copy()
    cls[(bank.table.column("dominant_frac").to_numpy() < 0.5) | (cls == 0)] = -1
    keys = bank.table.column("key").to_numpy(zero_copy_only=False)
    vecs = np.asarray(bank.vectors)
    rng = np.random.default_rng(0)
    queries = np.sort(rng.choice(np.flatnonzero(cls >= 0), 40, replace=False))
    purities = []
    for q in queries:
        order = np.argsort(-(vecs @ vecs[q]), kind="stable")
        keep = [i for i in order if i != q and cls[i] >= 0 and keys[i] != keys[q]][:5]
        purities.append(np.mean(cls[keep] == cls[q]))
    assert res["queries"] == 40 and res["overall"] == pytest.approx(np.mean(purities))
    assert 0 < res["chance"] < 1 and json.loads((work / "stats.json").read_text())["overall"] == res["overall"]
    assert sum(r["queries"] for r in res["per_class"].values()) == 40


def _job(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_jobs_build_query_and_stats_run_from_the_command_line(coco128, shards, prior, work, capsys):
    out = work / "bank-job"
    argv = ["--config", str(REPO / "configs" / "bank-coco128.yaml"), f"prior={prior}", f"shards={shards}", f"out={out}",
            "workers=0", "input_size=96", f"class_names={coco128 / 'semantic_segmentation' / 'config.yaml'}"]
    assert _job("build_bank").main(argv) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["images"] == 8
    key = open_bank(out).table.slice(0, 1).to_pylist()[0]["key"]
    q = _job("query_bank")
    assert q.main(["--config", str(REPO / "configs" / "bank-coco128.yaml"), f"bank={out}", f"key={key}", "point=[10,10]", "k=3"]) == 0
    assert q.main(["stats", f"bank={out}", "k=3", "queries=20"]) == 0
    text = capsys.readouterr().out
    assert "sheet:" in text and "overall = " in text
    assert q.main([f"bank={work / 'nowhere'}", f"key={key}"]) == 2  # a missing bank is an error message, not a traceback


@pytest.mark.slow
def test_ray_build_over_two_workers_equals_the_in_process_build(coco128, shards, prior, work, bank_dir, ray_session):
    cfg = _bank_cfg(coco128, shards, prior, work / "bank-ray", workers=2)
    manifest = build_bank(cfg)
    assert manifest["built_on"]["workers"] == 2
    local, remote = open_bank(bank_dir), open_bank(work / "bank-ray")
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-5)
    np.testing.assert_allclose(np.load(work / "bank-ray" / "global.npy"), np.load(bank_dir / "global.npy"), atol=1e-5)
    cols = ["id", "shard", "key", "superpixel", "x0", "y0", "x1", "y1", "area", "dominant_class"]
    assert remote.table.select(cols).equals(local.table.select(cols))


def test_ivf_pq_is_built_without_polysemous_training():
    """The bank never ranks codes by Hamming distance, so the index is trained without polysemous
    training (it cost most of a build: 102 s vs 23-39 s on IVF256,PQ64, same recall)."""
    import faiss

    vectors = clustered_vectors(4096, 32, seed=0)
    index = build_index(vectors, "IVF16,PQ8", IndexConfig(train_size=4096, nprobe=4))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.do_polysemous_training is False
