"""The dense probe: retrieval mIoU, the linear probe, AUROC, balanced purity and the prior-map
figure against hand computations on tiny tensors, then the job on tiny shards."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch

from glocon.bank.stats import balanced_purity
from glocon.probe import linear, priormap, retrieval
from glocon.probe.metrics import auroc, class_iou, confusion, mean_std, miou
from shard_writer import write_embedded_shards

C = 4  # classes in the toy problems
GRID = (4, 4)
SIDE = 16  # mask side: every feature cell covers exactly 4 x 4 pixels


def toy_masks(n: int, seed: int, stripes: bool = False) -> list[np.ndarray]:
    """Masks whose every 4x4 cell holds one class, uniform over C. With ``stripes`` a whole column
    of cells shares one class: bilinear upsampling then meets at most two classes at a boundary,
    so a perfect vote stays perfect at mask resolution (at a corner of three cells it need not)."""
    rng = np.random.default_rng(seed)
    cells = lambda: np.repeat(rng.integers(0, C, (1, GRID[1])), GRID[0], 0) if stripes else rng.integers(0, C, GRID)  # noqa: E731
    return [np.kron(cells(), np.ones((4, 4), dtype=np.int64)).astype(np.uint8) for _ in range(n)]


def one_hot_features(masks: list[np.ndarray]) -> np.ndarray:
    """(N, C, h, w): each cell's feature is the one-hot of its class."""
    cells = np.stack([m[::4, ::4] for m in masks])  # (N, h, w)
    return np.eye(C, dtype=np.float32)[cells].transpose(0, 3, 1, 2).copy()


def cells_of(x: np.ndarray) -> np.ndarray:
    n, d, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n * h * w, d)


def retrieval_score(train_x: np.ndarray, train_m: list[np.ndarray], val_x: np.ndarray, val_m: list[np.ndarray], k: int = 5) -> float:
    labs, share = zip(*[retrieval.cell_label_distribution(m, GRID, C) for m in train_m])
    feats, labels = retrieval.build_memory(cells_of(train_x), np.concatenate(labs), np.concatenate(share), None, 0)
    votes = retrieval.RetrievalMemory(feats, labels).vote(cells_of(val_x), k, 0.02)
    conf = np.zeros((C, C), np.int64)
    per = GRID[0] * GRID[1]
    for i, m in enumerate(val_m):
        conf += confusion(retrieval.segment(votes[i * per : (i + 1) * per], GRID, m.shape), m, C)
    return miou(conf)


def test_confusion_miou_matches_a_hand_count():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]])
    conf = confusion(pred, target, 3)
    # class 0: TP 1, FP 1 (the 2 read as 0), FN 1 -> 1/3; class 1: TP 2, FP 1, FN 1 -> 2/4; class 2: TP 1, FP 1 (the 1 read as 2), FN 1 -> 1/3
    assert conf.sum() == 7  # the 255 pixel counts for nothing
    assert class_iou(conf) == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert miou(conf) == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)


def test_cell_label_distribution_counts_class_shares_and_skips_ignore():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0], mask[0, 1], mask[1, 0], mask[1, 1] = 1, 1, 2, 255  # top-left 2x2 cell: 1, 1, 2, ignore
    dist, labelled = retrieval.cell_label_distribution(mask, (2, 2), 3)
    assert dist[0] == pytest.approx([0, 2 / 3, 1 / 3]) and labelled[0] == pytest.approx(0.75)
    assert dist[1] == pytest.approx([1, 0, 0]) and labelled[1] == 1.0


def test_retrieval_with_one_hot_label_features_scores_miou_one():
    train, val = toy_masks(12, 0, stripes=True), toy_masks(6, 1, stripes=True)
    assert retrieval_score(one_hot_features(train), train, one_hot_features(val), val) == pytest.approx(1.0)


def test_retrieval_with_random_features_scores_about_chance():
    train, val = toy_masks(60, 0), toy_masks(30, 1)
    rng = np.random.default_rng(0)
    rand = lambda n: rng.normal(size=(n, 32, *GRID)).astype(np.float32)  # noqa: E731
    score = retrieval_score(rand(60), train, rand(30), val)
    chance = 1 / (2 * C - 1)  # independent predictions with uniform marginals: (1/C^2) / (2/C - 1/C^2)
    assert 0.6 * chance < score < 1.5 * chance, (score, chance)


def test_retrieval_memory_size_draws_a_seeded_subset():
    feats = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[np.arange(100) % 4]
    share = np.ones(100)
    share[:10] = 0  # unlabelled cells never enter the memory
    a, _ = retrieval.build_memory(feats, labels, share, 30, seed=1)
    b, _ = retrieval.build_memory(feats, labels, share, 30, seed=1)
    c, _ = retrieval.build_memory(feats, labels, share, 30, seed=2)
    full, _ = retrieval.build_memory(feats, labels, share, None, seed=1)
    assert len(a) == 30 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(full) == 90


def test_linear_probe_with_one_hot_features_scores_near_one_and_random_features_near_chance():
    train, val = toy_masks(40, 0, stripes=True), toy_masks(10, 1, stripes=True)
    s = linear.LinearSettings(epochs=60, lr=5e-2, batch_size=8)
    good, _ = linear.linear_probe_miou(one_hot_features(train), train, one_hot_features(val), val, C, seed=0, s=s)
    rng = np.random.default_rng(0)
    bad, _ = linear.linear_probe_miou(rng.normal(size=(40, 32, *GRID)).astype(np.float32), train, rng.normal(size=(10, 32, *GRID)).astype(np.float32), val, C, seed=0, s=s)
    assert good >= 0.99, good
    assert bad < 0.3, bad


def test_linear_probe_takes_no_step_from_ignored_pixels():
    train = toy_masks(8, 0)
    x = one_hot_features(train)
    s = linear.LinearSettings(epochs=3, lr=5e-2, weight_decay=0.0, batch_size=4)
    head, _ = linear.train_linear(x, [np.full_like(m, 255) for m in train], C, seed=3, s=s)
    torch.manual_seed(3)
    fresh = torch.nn.Conv2d(C, C, kernel_size=1)
    assert torch.equal(head.weight, fresh.weight) and torch.equal(head.bias, fresh.bias)  # not a NaN, not a step
    partly = [m.copy() for m in train]
    for m in partly:
        m[:8] = 255
    head, _ = linear.train_linear(x, partly, C, seed=3, s=s)
    assert torch.isfinite(head.weight).all() and not torch.equal(head.weight, fresh.weight)


def test_auroc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 300).astype(float)  # many ties
    y = rng.random(300) < 0.3
    pos, neg = s[y], s[~y]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p, n in product(pos, neg)])
    assert auroc(s, y) == pytest.approx(pairwise)
    assert auroc(-s, y) == pytest.approx(1 - pairwise)
    assert np.isnan(auroc(s, np.zeros(300, bool)))


def test_mean_std_uses_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3, "values": [1.0, 2.0, 3.0]}
    assert mean_std([5.0])["std"] == 0.0


def test_balanced_purity_draws_per_class_and_reports_background_apart():
    rng = np.random.default_rng(0)
    protos = np.eye(8, dtype=np.float32)[:4]
    classes = np.repeat([0, 1, 2, 3], [400, 20, 20, 20])  # background dominates, as in real banks
    vecs = retrieval.normalize_rows(protos[classes] + 0.05 * rng.normal(size=(460, 8)).astype(np.float32))
    groups = np.arange(460) // 5
    r = balanced_purity(vecs, classes, groups, k=5, per_class=10, seed=0, background=0)
    assert {c: v["queries"] for c, v in r["per_class"].items()} == {"0": 10, "1": 10, "2": 10, "3": 10}
    assert r["macro"] == pytest.approx(1.0) and r["background"]["purity"] == pytest.approx(1.0)
    assert r["chance"] == pytest.approx(np.mean([20 / 460] * 3)) and r["object_classes"] == 3
    shuffled = balanced_purity(vecs, rng.permutation(classes), groups, k=5, per_class=10, seed=0, background=0)
    assert shuffled["macro"] < 0.3  # features that carry no class: purity falls to about chance


def test_balanced_purity_never_counts_a_neighbour_from_the_query_image():
    vecs = retrieval.normalize_rows(np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1]], np.float32))
    classes = np.array([1, 1, 2, 2])
    groups = np.array([0, 0, 1, 1])  # each class lives in one image only
    r = balanced_purity(vecs, classes, groups, k=1, per_class=2, seed=0, background=None)
    assert r["macro"] == 0.0  # the only same-class neighbour is in the query's own image


def test_prior_map_auroc_reads_low_on_objects_and_refuses_unequal_widths():
    masks = [np.pad(np.ones((4, 4), np.uint8), 2) for _ in range(3)]  # 8x8: object in the middle
    bridge = np.random.default_rng(0).normal(size=(3, 6, 8, 8)).astype(np.float32)
    prior = bridge.copy()
    prior[:, :, 2:6, 2:6] = -bridge[:, :, 2:6, 2:6]  # object positions find no similar prior feature
    prior[:, :, 2:6, 2:6] += 0.1 * np.random.default_rng(1).normal(size=(3, 6, 4, 4)).astype(np.float32)
    r = priormap.separability(bridge, prior, masks)
    assert r["auroc"] < 0.2 and r["direction"] == "low on objects" and r["separability"] > 0.8
    assert r["mean_object"] < r["mean_background"]
    assert priormap.separability(bridge, prior[:, :4], masks)["auroc"] is None


def test_encoders_for_the_controls_share_the_exports_architecture(tmp_path):
    from glocon.models.prior import PriorArch, PriorExtractor, save_export
    from glocon.probe.features import build_encoder

    arch = PriorArch(backbone="resnet18", output_stride=16, proj_dim=16)
    torch.manual_seed(0)
    trained = PriorExtractor(arch)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)
    save_export(trained, tmp_path / "prior.pt")
    x = torch.rand(2, 3, 64, 64)
    loaded = build_encoder(str(tmp_path / "prior.pt"))
    init0, init0_again, init1 = (build_encoder(f"init:{tmp_path / 'prior.pt'}", seed=s) for s in (0, 0, 1))
    maps = {n: m.dense_map(x, "prior") for n, m in [("loaded", loaded), ("init0", init0), ("again", init0_again), ("init1", init1)]}
    assert all(m.shape == (2, 512, 4, 4) for m in maps.values())  # same shape: stride 16 on 64 px
    assert torch.equal(maps["init0"], maps["again"]) and not torch.equal(maps["init0"], maps["init1"])
    assert not torch.allclose(maps["loaded"], maps["init0"])


def test_prior_map_alignment_recovers_a_linear_map_between_widths():
    rng = np.random.default_rng(0)
    prior = rng.normal(size=(5, 7, 4, 4)).astype(np.float32)
    true = rng.normal(size=(7, 3)).astype(np.float32)
    bridge = (prior.transpose(0, 2, 3, 1) @ true + 0.5).transpose(0, 3, 1, 2).copy()
    w = priormap.fit_alignment(prior, bridge, ridge=1e-9)
    assert np.allclose(priormap.apply_alignment(prior, w), bridge, atol=1e-3)


# -- the job on tiny shards -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from glocon.models.prior import PriorArch, PriorExtractor, save_export
    from glocon.io import atomic_write_json

    root = tmp_path_factory.mktemp("probe")
    train, val = write_embedded_shards(root, "train", 16), write_embedded_shards(root, "val", 8)
    run = root / "pretrain" / "run"
    torch.manual_seed(0)
    model = PriorExtractor(PriorArch(backbone="resnet18", output_stride=16, proj_dim=16))
    for epoch in range(2):  # a fake run's per-epoch exports, laid out as the pretraining loop writes them
        save_export(model, run / "epochs" / f"epoch-{epoch:04d}" / "prior.pt", extra={"epoch": epoch})
        atomic_write_json(run / "epochs" / f"epoch-{epoch:04d}" / "metrics.json", {"epoch": epoch, "epoch_end": True})
    return {"train": train, "val": val, "run": run, "export": run / "epochs" / "epoch-0001" / "prior.pt", "root": root}


@pytest.mark.slow
def test_probe_job_scores_every_prior_and_epoch_and_writes_its_table_and_plot(tiny, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_job", Path(__file__).resolve().parents[1] / "jobs" / "probe.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tiny["root"] / "out"
    code = job.main([
        f"train_shards={tiny['train']}", f"val_shards={tiny['val']}", f"out={out}", f"run={tiny['run']}", "input_size=64",
        f"priors.pretrained={tiny['export']}", f"priors.untrained=random:{tiny['export']}", "seeds=[0,1]", "linear.epochs=2",
        "purity.per_class=5",
    ])  # fmt: skip
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["priors"]) == {"pretrained", "untrained", "epoch 0", "epoch 1", "epoch 2"}
    assert res["train_images"] == 16 and res["val_images"] == 8 and res["n_classes"] <= 21
    untrained, pretrained = res["priors"]["untrained"], res["priors"]["pretrained"]
    assert untrained["seeded_weights"] and untrained["retrieval_miou"]["n"] == 2  # the untrained weights change with the seed
    assert not pretrained["seeded_weights"]
    assert res["priors"]["epoch 2"]["retrieval_miou"] == pretrained["retrieval_miou"]  # the same export, the same score
    assert 0 <= pretrained["prior_map_auroc"]["mean"] <= 1 and pretrained["prior_map"]["direction"] in ("low on objects", "high on objects")
    assert (out / "probe-vs-epoch.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "| untrained |" in table and "retrieval mIoU" in table and table in capsys.readouterr().out


def test_probe_job_refuses_shared_keys_between_train_and_val(tiny, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_job", Path(__file__).resolve().parents[1] / "jobs" / "probe.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    code = job.main([f"train_shards={tiny['train']}", f"val_shards={tiny['train']}", f"priors.a={tiny['export']}", f"out={tiny['root'] / 'x'}"])
    assert code == 2 and "in both train_shards and val_shards" in capsys.readouterr().err


def test_the_epoch_curve_can_be_read_from_what_pretraining_measured_not_recomputed(tiny, tmp_path):
    """epochs_from=pretraining: the run's epoch-end probe figures are read from its per-epoch
    metrics; no epoch export is probed again (issue 19), and a run without them is refused."""
    import shutil

    from glocon.errors import ConfigError
    from glocon.io import atomic_write_json
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import has_epoch_probe, run_probe

    run = tmp_path / "pretrain" / "run"
    shutil.copytree(tiny["run"], run)
    base = dict(train_shards=str(tiny["train"]), val_shards=str(tiny["val"]), run=str(run), input_size=48, seeds=[0],
                priors={"pretrained": str(tiny["export"])}, linear={"epochs": 1}, purity={"enabled": False},
                prior_map={"enabled": False}, epochs_from="pretraining")  # fmt: skip
    assert not has_epoch_probe(run)
    with pytest.raises(ConfigError, match="epochs_from=pretraining"):
        run_probe(ProbeConfig(**base, out=str(tmp_path / "none")), log=lambda _: None)
    for epoch, value in ((0, 0.031), (1, 0.047)):
        atomic_write_json(run / "epochs" / f"epoch-{epoch:04d}" / "metrics.json", {"epoch": epoch, "epoch_end": True, "probe_retrieval_miou": value})
    assert has_epoch_probe(run)
    res = run_probe(ProbeConfig(**base, out=str(tmp_path / "out")), log=lambda _: None)
    assert set(res["priors"]) == {"pretrained"}  # the epoch exports were not probed
    figs = res["epochs"]["figures"]
    assert figs["epoch 1"]["retrieval_miou"]["mean"] == 0.031 and figs["epoch 2"]["retrieval_miou"]["mean"] == 0.047
    assert (tmp_path / "out" / "probe-vs-epoch.png").stat().st_size > 1000
