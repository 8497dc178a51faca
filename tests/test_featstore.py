"""The feature store (glocon.featstore): a hit only when every key part agrees; every reader gives
the same outputs with and without it; concurrent writers leave one correct entry; a writer killed
mid-entry leaves nothing that is read, and the next run recomputes that entry and nothing else;
the size bound evicts the least recently used; ``glocon store`` shows and trims it."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from glocon.featstore import FeatureStore, StoreConfig, memo, open_store, stats_since, tensor_digest, weights_digest
from glocon.models.prior import PriorArch, PriorExtractor

REPO = Path(__file__).resolve().parents[1]


class Counting(torch.nn.Module):
    """A tiny frozen encoder that counts the rows it encodes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        for p in self.parameters():
            p.requires_grad_(False)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.rows += len(x)
        y = self.conv(x)
        return {"a": y, "b": y.mean(dim=(2, 3))}


def _images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _ns(store: FeatureStore, model: torch.nn.Module, output: str = "out") -> str:
    return store.namespace(weights_digest(model), output)


# -- keys ---------------------------------------------------------------------------------------
def test_a_second_pass_hits_and_equals_the_first(tmp_path):
    store, enc = FeatureStore(tmp_path / "s"), Counting()
    x = _images(5)
    first = memo(store, _ns(store, enc), enc, x)
    assert enc.rows == 5 and store.stats.misses == 5
    again = memo(store, _ns(store, enc), enc, x)
    assert enc.rows == 5 and store.stats.hits == 5  # nothing encoded again
    for k in first:
        assert torch.equal(first[k], again[k])
    plain = enc(x)
    for k in plain:
        assert torch.allclose(first[k], plain[k], atol=1e-6)


@pytest.mark.parametrize("part", ["weights", "output", "input size", "view", "image content", "support mask"])
def test_every_key_part_misses_when_it_changes(tmp_path, part):
    store = FeatureStore(tmp_path / "s")
    enc = Counting()
    x, mask = _images(2, 16), torch.zeros(2, 1, 16, 16)

    def encode_with_mask(img, m):
        return enc(img * (1 + m))

    memo(store, _ns(store, enc), encode_with_mask, x, mask)
    rows = enc.rows
    other_enc, output, x2, mask2 = enc, "out", x, mask
    if part == "weights":
        other_enc = Counting(seed=1)
        other_enc.rows = enc.rows
    elif part == "output":
        output = "other layer"
    elif part == "input size":
        x2 = torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear")
        mask2 = torch.zeros(2, 1, 20, 20)
    elif part == "view":
        x2 = torch.flip(x, dims=[3])  # another augmentation view of the same images
    elif part == "image content":
        x2 = x.clone()
        x2[:, 0, 3, 3] += 1 / 255  # one pixel of one channel
    elif part == "support mask":
        mask2 = mask.clone()
        mask2[:, :, :4, :4] = 1

    def encode2(img, m):
        return other_enc(img * (1 + m))

    misses = store.stats.misses
    memo(store, _ns(store, other_enc, output), encode2, x2, mask2)
    assert store.stats.misses - misses == 2, f"changing the {part} must miss"
    assert other_enc.rows - (rows if other_enc is enc else enc.rows) == 2
    # and unchanged, it hits
    hits = store.stats.hits
    memo(store, _ns(store, enc), encode_with_mask, x, mask)
    assert store.stats.hits - hits == 2


def test_a_weight_trained_in_place_changes_the_digest_of_a_whole_model_read():
    model = PriorExtractor(PriorArch(backbone="resnet18", proj_dim=8))  # trainable: requires_grad on
    before = weights_digest(model, frozen_only=False)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert weights_digest(model, frozen_only=False) != before
    # the frozen-only digest (few-shot models: trained heads left out) does not see trainable weights
    assert weights_digest(model) == weights_digest(model)


def test_the_architecture_is_part_of_a_priors_key_not_the_path_of_its_weights():
    torch.manual_seed(0)
    a = PriorExtractor(PriorArch(backbone="resnet18", proj_dim=8, output_stride=32))
    b = PriorExtractor(PriorArch(backbone="resnet18", proj_dim=8, output_stride=16))
    b.load_state_dict(a.state_dict())  # same weights, another stride: other features
    assert weights_digest(a, frozen_only=False) != weights_digest(b, frozen_only=False)
    c = PriorExtractor(PriorArch(backbone="resnet18", proj_dim=8, output_stride=32, weights="elsewhere/prior.pt"), load_init_weights=False)
    c.load_state_dict(a.state_dict())
    assert weights_digest(a, frozen_only=False) == weights_digest(c, frozen_only=False)


def test_duplicate_rows_are_encoded_once_and_returned_in_order(tmp_path):
    store, enc = FeatureStore(tmp_path / "s"), Counting()
    x = _images(3)
    batch = torch.stack([x[0], x[1], x[0], x[2], x[1]])
    out = memo(store, _ns(store, enc), enc, batch)
    assert enc.rows == 3
    assert torch.allclose(out["a"], enc(batch)["a"], atol=1e-6)


def test_the_store_is_off_when_its_config_or_the_environment_says_so(tmp_path, monkeypatch):
    assert open_store(StoreConfig(enabled=False)) is None
    monkeypatch.setenv("GLOCON_STORE", "off")
    assert open_store() is None
    assert open_store(StoreConfig(root=str(tmp_path))).root == tmp_path  # an explicit root wins
    monkeypatch.setenv("GLOCON_STORE", str(tmp_path / "env"))
    assert open_store().root == tmp_path / "env"


# -- size ---------------------------------------------------------------------------------------
def test_the_size_bound_evicts_the_least_recently_used_entries(tmp_path):
    store, enc = FeatureStore(tmp_path / "s", max_gb=1.0), Counting()
    ns = _ns(store, enc)
    xs = [_images(1, seed=i) for i in range(6)]
    for i, x in enumerate(xs):
        memo(store, ns, enc, x)
        path = store._entry(ns, tensor_digest(x[0]))
        os.utime(path, (1000 + i, 1000 + i))  # entry i was last used at time 1000 + i
    memo(store, ns, enc, xs[0])  # a hit refreshes entry 0: now the most recently used
    one = max(e.bytes for e in store.entries())
    removed = store.evict(max_bytes=3 * one)
    assert removed == 3
    kept = {e.path.name for e in store.entries()}
    assert {tensor_digest(xs[i][0])[2:] for i in (0, 4, 5)} == kept


def test_cli_du_ls_and_prune(tmp_path, monkeypatch, capsys):
    from glocon.cli import main

    store, enc = FeatureStore(tmp_path / "s"), Counting()
    memo(store, _ns(store, enc, "dense_map:prior"), enc, _images(4))
    monkeypatch.setenv("GLOCON_STORE", str(tmp_path / "s"))

    def cli(*args):
        code = main(["store", *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    du = cli("du")
    assert du.returncode == 0 and "4 entries" in du.stdout and "1 namespaces" in du.stdout
    ls = cli("ls")
    assert ls.returncode == 0 and "dense_map:prior" in ls.stdout and "4 entries" in ls.stdout
    pr = cli("prune", "--max-gb", "0")
    assert pr.returncode == 0 and "pruned 4 entries" in pr.stdout
    assert list(store.entries()) == []
    missing = cli("du", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "nope" in missing.stderr and missing.stderr.startswith("error:")


# -- atomic writes ------------------------------------------------------------------------------
class _Meeting(Counting):
    """Encodes only after the other writer has also looked up every entry and missed: the barrier sits
    between the lookup and the write, so both processes race to write the same four entries every run
    (a barrier before the lookup let one writer finish before the other looked, and it then hit)."""

    def __init__(self, barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.barrier.wait(timeout=60)
        return super().forward(x)


def _writer(root: str, barrier, seed: int) -> None:
    store = FeatureStore(Path(root))
    x = _images(4, seed=7)
    enc = _Meeting(barrier)
    memo(store, store.namespace(weights_digest(Counting()), "out"), enc, x)  # Counting's weights, its namespace
    store.flush_stats(force=True)


def test_two_writers_of_the_same_entries_at_once_leave_one_correct_entry_each(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "s"), barrier, i)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    total = stats_since(tmp_path / "s", 0)  # both writers' counters, from their own processes
    assert total.misses == 8 and total.bytes_written > 0  # each writer computed all four; one rename per entry won
    store = FeatureStore(tmp_path / "s")
    entries = list(store.entries())
    assert len(entries) == 4
    assert not list((tmp_path / "s").glob(".tmp-*"))  # the loser's folders were dropped
    enc = Counting()
    got = memo(store, _ns(store, enc), enc, _images(4, seed=7))
    assert enc.rows == 0 and torch.allclose(got["a"], enc(_images(4, seed=7))["a"], atol=1e-6)


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import torch
    sys.path.insert(0, {tests!r})
    from test_featstore import Counting, _images
    from glocon.featstore import FeatureStore, memo, weights_digest
    store = FeatureStore({root!r})
    enc = Counting()
    ns = store.namespace(weights_digest(enc), "out")
    memo(store, ns, enc, _images(3))          # three entries written whole
    real_save, calls = np.save, []
    def dying_save(path, arr):
        calls.append(path)
        real_save(path, arr)
        if len(calls) == 1:                   # the fourth entry: first array on disk, then SIGKILL
            os.kill(os.getpid(), signal.SIGKILL)
    np.save = dying_save
    memo(store, ns, enc, _images(4)[3:])
""")


def test_a_writer_killed_mid_entry_leaves_nothing_read_and_the_next_run_recomputes_only_that_entry(tmp_path):
    root = tmp_path / "s"
    script = KILLED_WRITER.format(tests=str(REPO / "tests"), root=str(root))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list(root.glob(".tmp-*"))) == 1  # the half entry, where no reader looks
    store, enc = FeatureStore(root), Counting()
    out = memo(store, _ns(store, enc), enc, _images(4))
    assert enc.rows == 1 and store.stats.hits == 3 and store.stats.misses == 1
    assert torch.allclose(out["a"], enc(_images(4))["a"], atol=1e-6)
    stale = next(root.glob(".tmp-*"))
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.clean_temp() == 1 and not list(root.glob(".tmp-*"))


def test_a_damaged_entry_is_a_miss_not_an_error(tmp_path):
    store, enc = FeatureStore(tmp_path / "s"), Counting()
    ns, x = _ns(store, enc), _images(1)
    memo(store, ns, enc, x)
    path = store._entry(ns, tensor_digest(x[0]))
    (path / "a.npy").write_bytes(b"not an array")
    out = memo(store, ns, enc, x)
    assert enc.rows == 2 and torch.allclose(out["a"], enc(x)["a"], atol=1e-6)


# -- every reader: the same outputs with and without the store ----------------------------------
def test_probe_maps_are_the_same_with_and_without_the_store(tmp_path):
    from glocon.data.schema import Sample
    from glocon.probe import features as pf

    rng = np.random.default_rng(0)
    blank = np.zeros((40, 30), np.int32)
    samples = [Sample(key=f"k{i}", image=rng.integers(0, 255, (40, 30, 3), dtype=np.uint8), slic=blank, fh=blank, meta={},
                      mask=rng.integers(0, 3, (40, 30), dtype=np.uint8)) for i in range(5)]  # fmt: skip
    model = pf.build_encoder("imagenet:efficientnet_lite0@16")
    store = FeatureStore(tmp_path / "s")
    plain = pf.extract(model, samples, "backbone", 64, batch_size=2)
    first = pf.extract(model, samples, "backbone", 64, batch_size=2, store=store)
    again = pf.extract(model, samples, "backbone", 64, batch_size=3, store=store)
    assert store.stats.hits == 5 and store.stats.misses == 5
    assert np.allclose(plain.features, first.features, atol=1e-5) and np.array_equal(first.features, again.features)
    assert first.keys == plain.keys


def test_probe_figures_are_the_same_with_and_without_the_store(tmp_path):
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import run_probe
    from shard_writer import write_embedded_shards
    from glocon.models.prior import save_export

    train, val = write_embedded_shards(tmp_path, "train", 8), write_embedded_shards(tmp_path, "val", 6)
    torch.manual_seed(5)  # not a probe seed: random:<export> at seed 0 would be the export itself
    export = tmp_path / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18", output_stride=16, proj_dim=8)), export)
    base = dict(train_shards=str(train), val_shards=str(val), input_size=48, seeds=[0, 1], priors={"p": str(export), "u": f"random:{export}"},
                linear={"epochs": 2}, purity={"per_class": 4}, prior_map={"enabled": False})

    def run(name, **store):
        return run_probe(ProbeConfig(**base, out=str(tmp_path / name), store=StoreConfig(**store)), log=lambda _: None)

    off = run("off", enabled=False)
    cold = run("cold", root=str(tmp_path / "s"))
    warm = run("warm", root=str(tmp_path / "s"))
    # 14 images for the export and for the untrained weights of each of 2 seeds
    assert cold["store"]["misses"] == 42 and warm["store"]["misses"] == 0 and warm["store"]["hits"] == 42
    for name in ("p", "u"):
        for fig in ("retrieval_miou", "linear_miou", "purity"):
            assert off["priors"][name][fig]["mean"] == pytest.approx(cold["priors"][name][fig]["mean"], abs=1e-4)
            assert cold["priors"][name][fig] == warm["priors"][name][fig]


def test_fewshot_eval_scores_are_the_same_with_and_without_the_store(tmp_path):
    from fewshot_helpers import MemorySource, toy_items
    from glocon.fewshot.runner import FewShotConfig, evaluate
    from glocon.plugins import load_plugin

    proto = load_plugin("proto")
    source = MemorySource(toy_items(n_per_class=8, size=48), min_pixels=64)

    def cfg(out, **store):
        return FewShotConfig.model_validate({
            "plugin": "proto", "image_size": 48, "seed": 3, "model": {"source": "backbone", "backbone": "resnet18", "layer": "layer3"},
            "data": {"folds": [0], "novel_classes": [4]}, "episodes_dir": str(tmp_path / "episodes"),
            "eval": {"episodes": 6, "seeds": 2, "shots": [1, 5], "batch_size": 4, "out_dir": str(tmp_path / out), "n_figure_episodes": 0, "bootstrap": 0},
            "store": store,
        })  # fmt: skip

    torch.manual_seed(0)
    off = evaluate(proto, cfg("off", enabled=False), source=source)
    torch.manual_seed(0)
    cold = evaluate(proto, cfg("cold", root=str(tmp_path / "s")), source=source)
    torch.manual_seed(0)
    warm = evaluate(proto, cfg("warm", root=str(tmp_path / "s")), source=source)
    assert off["timing"]["store"] is None and cold["timing"]["store"]["misses"] > 0
    assert warm["timing"]["store"]["misses"] == 0 and warm["timing"]["store"]["hits"] > 0
    for k in ("1", "5"):
        assert off["folds"]["0"][k]["miou"] == pytest.approx(cold["folds"]["0"][k]["miou"], abs=1e-6)
        assert cold["folds"]["0"][k]["class_iou"] == warm["folds"]["0"][k]["class_iou"]


def test_fit_cache_arrays_are_the_same_with_and_without_the_store_and_another_fold_reads_shared_views(tmp_path):
    from fewshot_helpers import MemorySource, toy_items
    from glocon.fewshot.cache import ViewSpec, build_cache
    from glocon.fewshot.runner import FewShotConfig, build
    from glocon.plugins import load_plugin

    proto = load_plugin("proto")
    source = MemorySource(toy_items(n_per_class=3, size=48), min_pixels=64)
    cfg = FewShotConfig.model_validate({"plugin": "proto", "image_size": 48, "model": {"source": "backbone", "backbone": "resnet18", "layer": "layer3"}})
    torch.manual_seed(0)
    model = build(proto, cfg)
    pool = {c: [k for k in source.class_index[c]] for c in (1, 2)}
    spec = ViewSpec(48, (0.9, 1.1), 2, 5)
    store = FeatureStore(tmp_path / "s")
    plain = build_cache(tmp_path / "plain", model, source, pool, spec, log=lambda _: None)
    stored = build_cache(tmp_path / "stored", model, source, pool, spec, log=lambda _: None, store=store)
    for name in plain.q:
        assert np.allclose(plain.q[name], stored.q[name], atol=1e-5)
    for name in plain.s:
        assert np.allclose(plain.s[name], stored.s[name], atol=1e-5)
    misses = store.stats.misses
    # another pool sharing class 2's images (another fold): those views are read, not encoded
    other = build_cache(tmp_path / "other", model, source, {2: pool[2], 3: list(source.class_index[3])}, spec, log=lambda _: None, store=store)
    assert store.stats.hits >= 2 * len(pool[2])  # class 2's query views
    assert store.stats.misses - misses < 2 * (len(pool[2]) + len(source.class_index[3])) * 2
    assert np.array_equal(other.query(pool[2][0], 1)[1], stored.query(pool[2][0], 1)[1])


def test_bank_vectors_are_the_same_with_and_without_the_store(tmp_path, coco128):
    from bank_shards import write_shards
    from glocon.bank.build import ShardEmbedder
    from glocon.data.shardset import ShardSet
    from glocon.models.prior import save_export

    write_shards(coco128, tmp_path / "shards", n_images=3, per_shard=3, size=64)
    torch.manual_seed(0)
    prior = tmp_path / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18", proj_dim=8)), prior)
    url = ShardSet.open(tmp_path / "shards").urls[0]
    base = dict(prior=str(prior), shards=str(tmp_path / "shards"), workers=0, input_size=64, global_embedding=True)
    off = ShardEmbedder(str(prior), {**base, "store": {"enabled": False}}).embed_shard(url)
    on = ShardEmbedder(str(prior), {**base, "store": {"root": str(tmp_path / "s")}})
    cold, warm = on.embed_shard(url), on.embed_shard(url)
    assert on.cached.store.stats.hits == 6 and on.cached.store.stats.misses == 6  # 3 images x (dense map, global vector)
    assert np.allclose(off["vectors"], cold["vectors"], atol=1e-5) and np.array_equal(cold["vectors"], warm["vectors"])
    assert np.allclose(off["globals"], cold["globals"], atol=1e-5) and np.array_equal(cold["globals"], warm["globals"])
