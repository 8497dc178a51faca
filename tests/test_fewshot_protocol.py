"""Few-shot training and scoring as the reference code does it: PFENet's effective learning rate,
one model per shot, the frozen-feature cache (same logits as without it), the held-out eval
split, episode files bound to their class split, and the statistics (bootstrap CI, paired
comparison) against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fewshot_helpers
from fewshot_helpers import MemorySource, TinyPlugin, toy_items
from glocon.errors import ConfigError, DataError
from glocon.fewshot import stats
from glocon.fewshot.batches import TrainEpisodes
from glocon.fewshot.cache import CachedTrainEpisodes, FeatureCache, ViewSpec, build_cache, can_cache, split_batch
from glocon.fewshot.config import FewShotConfig
from glocon.fewshot.episodes import TrainEpisodeSampler, episodes_for
from glocon.fewshot.fit import make_optimizer
from glocon.fewshot.sources import check_split_separation


def test_new_layers_train_at_pfenets_effective_rate_with_poly_decay():
    """PFENet's train.py: poly_learning_rate(..., index_split=-1) puts every group at 10 x base_lr."""
    cfg = FewShotConfig.model_validate({"fit": {"lr": 0.0025, "power": 0.9}})
    model = TinyPlugin().build_model(TinyPlugin().make_config({}))
    opt, sched = make_optimizer(model, cfg, steps=10)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.025)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.trainable_parameters()}
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025 * (1 - 5 / 10) ** 0.9)
    assert FewShotConfig.model_validate({"fit": {"lr_scale": 1.0}}).fit.effective_lr == pytest.approx(0.0025)


def test_fit_shots_accepts_one_count_or_a_list():
    assert FewShotConfig.model_validate({"fit": {"shots": 5}}).fit.shots == [5]
    assert FewShotConfig().fit.shots == [1, 5]  # one model per shot, as PFENet and QGNet train
    with pytest.raises(Exception, match="shots"):
        FewShotConfig.model_validate({"fit": {"shots": [0]}})


@pytest.mark.slow
def test_fit_trains_one_model_per_shot_and_eval_scores_each_shot_with_its_own(ray_session, tmp_path):
    from glocon.fewshot.runner import evaluate, fit, load_model_file

    ray_session.cloudpickle.register_pickle_by_value(fewshot_helpers)  # workers cannot import tests/
    source = MemorySource(toy_items(n_per_class=7), min_pixels=64)
    cfg = FewShotConfig.model_validate({
        "data": {"folds": [0], "novel_classes": [4]}, "image_size": 64, "episodes_dir": str(tmp_path / "episodes"),
        "fit": {"steps": 3, "checkpoint_every": 3, "storage_path": str(tmp_path / "runs"), "name": "pershot", "shots": [1, 5]},
        "eval": {"episodes": 4, "seeds": 2, "out_dir": str(tmp_path / "eval"), "n_figure_episodes": 0, "bootstrap": 50},
    })  # fmt: skip
    summary = fit(TinyPlugin(), cfg, source=source)
    runs = summary["folds"][0]
    assert set(runs) == {1, 5} and all(r["complete"] for r in runs.values())
    assert Path(runs[1]["model"]).parent.name == "pershot-fold0-1shot" and Path(runs[5]["model"]).parent.name == "pershot-fold0-5shot"
    a = load_model_file(Path(runs[1]["model"]), TinyPlugin(), 0)["state"]
    b = load_model_file(Path(runs[5]["model"]), TinyPlugin(), 0)["state"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # trained on other episodes: other weights
    results = evaluate(TinyPlugin(), cfg, source=source)
    assert results["weights"]["0"] == {"1": runs[1]["model"], "5": runs[5]["model"]}
    r = results["folds"]["0"]["1"]
    assert r["seeds"] == [321, 322] and r["episodes"] == 8 and len(r["seed_miou"]) == 2
    assert r["miou"] == pytest.approx(np.mean(list(r["seed_miou"].values())))
    assert r["miou_ci"][0] <= r["miou"] <= r["miou_ci"][1] or r["miou_ci"][0] == r["miou_ci"][1]
    assert sorted(p.name for p in (tmp_path / "episodes").glob("*test-1shot*")) == ["embedded-fold0-test-1shot-seed321-n4.json", "embedded-fold0-test-1shot-seed322-n4.json"]


# -- the frozen-feature cache ------------------------------------------------------------------
@pytest.fixture(scope="module")
def qgnet_and_data(tmp_path_factory):
    plugins = pytest.importorskip("glocon.plugins")
    try:
        qgnet = plugins.load_plugin("qgnet")
    except plugins.PluginError as exc:
        pytest.skip(f"qgnet plugin not installed: {exc}")
    from glocon.models.prior import PriorArch, save_untrained_export

    root = tmp_path_factory.mktemp("cache")
    save_untrained_export(PriorArch(backbone="resnet18", output_stride=16), root / "prior.pt", seed=0)
    cfg = FewShotConfig.model_validate({
        "plugin": "qgnet", "prior": str(root / "prior.pt"), "image_size": 64, "data": {"folds": [0], "novel_classes": [4]},
        "model": {"backbone": "resnet18", "dilated": False, "reduce_dim": 16, "prior_conv_dim": 16},
        "fit": {"storage_path": str(root / "runs")},
    })  # fmt: skip
    source = MemorySource(toy_items(n_per_class=4), min_pixels=64)
    return qgnet, cfg, source, root


def test_cached_features_give_the_logits_of_the_uncached_model(qgnet_and_data):
    from glocon.fewshot.sources import build

    qgnet, cfg, source, root = qgnet_and_data
    torch.manual_seed(cfg.seed)
    model = build(qgnet, cfg).eval()
    assert can_cache(model) == (True, "")
    sampler = TrainEpisodeSampler(source.class_index, benchmark="embedded", fold=0, shots=1, seed=cfg.seed, base=[1, 2, 3], novel=[4])
    spec = ViewSpec(64, (0.9, 1.1), 2, cfg.seed)
    cache = build_cache(root / "c", model, source, sampler.pool, spec, log=lambda _: None)
    indices = [0, 1, 2, 3]
    cached = CachedTrainEpisodes(cache, sampler, cfg.seed, indices)
    plain = TrainEpisodes(source, sampler, 64, cfg.seed, indices, (0.9, 1.1), views=2)
    with torch.no_grad():
        for i in range(len(indices)):
            c, p = cached[i], plain[i]
            assert torch.equal(c["target"], p["target"])
            q, s = split_batch({k: v[None] for k, v in c.items()}, torch.device("cpu"))
            a = model(encoded=(q, s, tuple(c["target"].shape)))
            b = model(p["query"][None], p["support_images"][None], p["support_masks"][None])
            # equal to float rounding: the cache encodes an image's views in one batch
            torch.testing.assert_close(a["logits"], b["logits"], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(a["prior_region_map"], b["prior_region_map"], atol=1e-4, rtol=1e-4)
    assert FeatureCache.is_complete(root / "c") and FeatureCache(root / "c").views == 2


def test_the_cache_is_keyed_by_the_shards_the_prior_and_the_size(qgnet_and_data, tmp_path):
    from glocon.fewshot.fit import prepare_cache
    from glocon.models.prior import PriorArch, save_untrained_export

    qgnet, cfg, source, _ = qgnet_and_data
    cfg = cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"shots": [1], "cache": cfg.fit.cache.model_copy(update={"dir": str(tmp_path), "views": 1})})})
    first = prepare_cache(qgnet, cfg, 0, source, lambda _: None)
    assert prepare_cache(qgnet, cfg, 0, source, lambda _: None) == first  # reused
    save_untrained_export(PriorArch(backbone="resnet18", output_stride=16), tmp_path / "other.pt", seed=1)
    other_prior = prepare_cache(qgnet, cfg.model_copy(update={"prior": str(tmp_path / "other.pt")}), 0, source, lambda _: None)
    other_size = prepare_cache(qgnet, cfg.model_copy(update={"image_size": 48}), 0, source, lambda _: None)
    other_data = prepare_cache(qgnet, cfg, 0, MemorySource(toy_items(n_per_class=4, seed=1), min_pixels=64), lambda _: None)
    assert len({first, other_prior, other_size}) == 3
    assert other_data is not None  # a source without a digest still gets a cache: keyed by its pool of keys


def test_train_mode_batchnorm_in_the_frozen_backbone_cannot_be_cached(qgnet_and_data):
    from glocon.fewshot.sources import build

    qgnet, cfg, _, _ = qgnet_and_data
    model = build(qgnet, cfg.model_copy(update={"model": {**cfg.model, "backbone_bn": "train"}})).train()
    ok, why = can_cache(model)
    assert not ok and "train mode" in why
    assert model.backbone.training and all(n.startswith(("backbone.", "prior.")) for n in model.fit_buffers())


# -- splits and episode provenance --------------------------------------------------------------
def test_eval_images_must_not_be_fit_images():
    fit_src = MemorySource(toy_items(n_per_class=3), min_pixels=64)
    other = MemorySource({f"val-{k}": v for k, v in toy_items(n_per_class=3, seed=2).items()}, min_pixels=64)
    check_split_separation(fit_src, other)  # held out: fine
    with pytest.raises(ConfigError, match="share"):
        check_split_separation(fit_src, fit_src)


def test_a_reused_episode_file_of_another_class_split_is_refused_naming_the_file_and_field(tmp_path):
    source = MemorySource(toy_items(n_per_class=4), min_pixels=64)
    kw = dict(benchmark="embedded", fold=0, mode="test", shots=1, n_episodes=4, seed=321)
    es, path, reused = episodes_for(source, tmp_path, base=[1, 2], novel=[3, 4], **kw)
    assert not reused and es.novel == [3, 4]
    with pytest.raises(DataError, match=r"novel=\[3, 4\].*asks for \[2, 3\]") as err:
        episodes_for(source, tmp_path, base=[1, 4], novel=[2, 3], **kw)
    assert str(path) in str(err.value)
    assert episodes_for(source, tmp_path, base=[1, 2], novel=[3, 4], **kw)[2]  # the same split reuses it


# -- statistics ---------------------------------------------------------------------------------
def _table(rng: np.random.Generator, n: int, classes=(1, 2, 3)) -> stats.EpisodeTable:
    cls = rng.choice(classes, n)
    u = rng.uniform(50, 100, (n, 2))
    i = u * rng.uniform(0.2, 0.9, (n, 2))
    rows = np.column_stack([cls, i[:, 0], u[:, 0], i[:, 1], u[:, 1]])
    return stats.EpisodeTable.from_rows(classes, rows)


def test_episode_table_miou_is_the_summed_class_iou_mean():
    t = stats.EpisodeTable.from_rows([1, 2, 9], [[1, 5, 10, 2, 4], [1, 5, 10, 1, 6], [2, 0, 1, 3, 3]])
    assert t.miou() == pytest.approx(((2 + 1) / (4 + 6) + 3 / 3 + 0.0) / 3)  # class 9 never drawn: 0, as PFENet
    assert t.fb_iou() == pytest.approx(((5 + 5 + 0) / 21 + (2 + 1 + 3) / 13) / 2)


def test_bootstrap_interval_agrees_with_scipys_independent_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(0)
    t = _table(rng, 300)
    point, boot = stats.mean_over_groups([[t]], 4000, seed=1)
    lo, hi = stats.interval(boot)
    rows = np.column_stack([t.cls, t.inter[:, 0], t.union[:, 0], t.inter[:, 1], t.union[:, 1]])
    ref = bootstrap((np.arange(len(rows)),), lambda idx: stats.EpisodeTable.from_rows(t.classes, rows[idx.astype(int)]).miou(),
                    n_resamples=4000, method="percentile", vectorized=False, random_state=2).confidence_interval  # fmt: skip
    assert point == pytest.approx(t.miou())
    assert lo < point < hi
    assert lo == pytest.approx(ref.low, abs=0.006) and hi == pytest.approx(ref.high, abs=0.006)


def test_paired_bootstrap_sees_a_small_consistent_gain_that_unpaired_spread_hides():
    rng = np.random.default_rng(0)
    a = _table(rng, 200)
    b = stats.EpisodeTable(a.classes, a.cls, a.inter * 0.97, a.union)  # B is A, 3% worse on every episode
    r = stats.paired_difference([[a]], [[b]], 2000, seed=0)
    assert r["difference"] == pytest.approx(a.miou() - b.miou()) and r["difference"] > 0
    assert 0 < r["ci_low"] <= r["difference"] <= r["ci_high"] and r["p_not_better"] == 0.0
    _, boot_a = stats.mean_over_groups([[a]], 2000, 0)
    assert stats.interval(boot_a)[1] - stats.interval(boot_a)[0] > 5 * (r["ci_high"] - r["ci_low"])  # pairing removes the shared variance
    shuffled = stats.EpisodeTable(a.classes, rng.permutation(a.cls), a.inter, a.union)
    with pytest.raises(ValueError, match="same episodes"):
        stats.paired_difference([[a]], [[shuffled]], 10, 0)


def _scaled(t: stats.EpisodeTable, factor: float) -> stats.EpisodeTable:
    """t with every foreground intersection scaled (a model uniformly better or worse than t)."""
    return stats.EpisodeTable(t.classes, t.cls, t.inter * np.array([1.0, factor]), t.union)


def test_one_fit_over_fits_is_the_plain_paired_bootstrap():
    rng = np.random.default_rng(3)
    a, b = _table(rng, 120), _table(rng, 120)
    b = stats.EpisodeTable(a.classes, a.cls, b.inter, b.union)
    assert stats.paired_difference_over_fits([[[a]]], [[[b]]], 500, 4) == stats.paired_difference([[a]], [[b]], 500, 4)
    assert stats.mean_over_fits([[[a]]], 500, 4)[1].tolist() == stats.mean_over_groups([[a]], 500, 4)[1].tolist()


def test_the_interval_over_training_seeds_carries_the_fit_to_fit_spread():
    """Three fits of A: two beat B on every episode, one loses on every episode. Each pair alone
    has a tight interval on its own side of 0; over the fits the interval must straddle 0."""
    rng = np.random.default_rng(0)
    b = _table(rng, 200)
    fits = [[[_scaled(b, f)]] for f in (1.04, 0.98, 1.01)]
    r = stats.paired_difference_over_fits(fits, [[[b]]], 4000, seed=0)
    alone = [stats.paired_difference(f, [[b]], 4000, 0) for f in fits]
    assert [x["ci_low"] > 0 for x in alone] == [True, False, True] and alone[1]["ci_high"] < 0
    assert r["fits"] == 3 and r["per_fit"] == pytest.approx([x["difference"] for x in alone])
    assert r["difference"] == pytest.approx(np.mean(r["per_fit"]))
    assert r["ci_low"] < 0 < r["difference"] < r["ci_high"]
    point, boot = stats.mean_over_fits(fits, 2000, 0)
    assert point == pytest.approx(np.mean([f[0][0].miou() for f in fits]))
    assert stats.interval(boot)[0] < _scaled(b, 0.985).miou() and stats.interval(boot)[1] > _scaled(b, 1.025).miou()
    with pytest.raises(ValueError, match="3 fits of A against 2"):
        stats.paired_difference_over_fits(fits, [[[b]], [[b]]], 10, 0)


def _eval_dir(root: Path, table: stats.EpisodeTable, sha: str = "same") -> Path:
    """An evaluation folder as ``evaluate`` writes it (results.json + counts), one fold, seed and shot."""
    import json

    from glocon.fewshot.evaluate import COUNTS

    root.mkdir(parents=True)
    rows = np.column_stack([table.cls, table.inter[:, 0], table.union[:, 0], table.inter[:, 1], table.union[:, 1]]).tolist()
    (root / COUNTS).write_text(json.dumps({"fold0-1shot-seed321": {"classes": table.classes, "rows": rows, "sha256": sha}}))
    mean = {"1": {"miou": table.miou(), "fb_iou": table.fb_iou()}}
    (root / "results.json").write_text(json.dumps({"shots": [1], "folds": {"0": {}}, "seeds": [321], "mean": mean}))
    return root


def test_compare_over_fits_reads_one_evaluation_per_fit_and_pairs_them(tmp_path):
    from glocon.fewshot.evaluate import compare, over_fits

    rng = np.random.default_rng(5)
    b = _table(rng, 150)
    fits = [_scaled(b, f) for f in (1.05, 0.99)]
    a_dirs = [_eval_dir(tmp_path / f"a{i}", t) for i, t in enumerate(fits)]
    b_dir = _eval_dir(tmp_path / "b", b)
    r = compare(a_dirs, b_dir, reps=500, seed=2)["shots"]["1"]
    want = stats.paired_difference_over_fits([[[t]] for t in fits], [[[b]]], 500, 2)
    assert r["difference"] == pytest.approx(want["difference"]) and r["per_fit"] == pytest.approx(want["per_fit"])
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((want["ci_low"], want["ci_high"]))
    o = over_fits(a_dirs, reps=500)["1"]
    assert o["per_fit"] == pytest.approx([t.miou() for t in fits]) and o["miou"] == pytest.approx(np.mean(o["per_fit"])) and o["fit_std"] > 0
    other = _eval_dir(tmp_path / "c", fits[1], sha="another")
    with pytest.raises(ConfigError, match="not scored on the same episode files"):
        compare([a_dirs[0], other], b_dir)


def test_the_fit_seed_moves_the_episode_order_but_not_base_val_or_the_eval_episodes(qgnet_and_data):
    from glocon.fewshot.fit import score_sets, train_sampler

    _, cfg, _, _ = qgnet_and_data
    source = MemorySource(toy_items(n_per_class=12, size=32), min_pixels=64)
    other = cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"seed": cfg.seed + 1})})
    assert cfg.fit_seed == cfg.seed and other.fit_seed == cfg.seed + 1
    a, b = train_sampler(cfg, source, 0, 1), train_sampler(other, source, 0, 1)
    assert a.pool == b.pool and a.val_pool == b.val_pool  # the same held-out base-val images
    assert [a(i) for i in range(8)] != [b(i) for i in range(8)]  # another episode order
    va, vb = score_sets(cfg, a, 0, 1), score_sets(other, b, 0, 1)
    assert len(va["base_val"]) > 0
    assert [va["base_val"](i) for i in range(len(va["base_val"]))] == [vb["base_val"](i) for i in range(len(vb["base_val"]))]
    assert other.eval_seeds == cfg.eval_seeds


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs").glob("fewshot-*.yaml")))
def test_every_fewshot_config_evaluates_on_its_benchmarks_val_split_with_the_reference_rate(name):
    from glocon.config import load_config
    from glocon.plugins import load_plugin

    cfg = load_config(FewShotConfig, Path(__file__).resolve().parents[1] / "configs" / name)
    load_plugin("qgnet").make_config(cfg.model, name)  # the model section is a valid QGNet config
    assert cfg.eval.shards and cfg.eval.shards != cfg.data.shards, f"{name}: eval.shards must be the val split, apart from fit's"
    assert cfg.fit.lr_scale == 10.0 and cfg.fit.power == 0.9  # PFENet's new-layer x10, poly 0.9
