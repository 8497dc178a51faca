"""Base-val (glocon.fewshot.baseval): held-out images of the fit split, base classes only, that
decide when a fit stops and which weights it keeps; the curve it writes."""

from __future__ import annotations

import torch

from fewshot_helpers import MemorySource, toy_items
from glocon import tblog
from glocon.fewshot import baseval
from glocon.fewshot.config import FewShotConfig
from glocon.fewshot.episodes import TrainEpisodeSampler
from glocon.fewshot.fit import score_sets, train_sampler


def _cfg(**fit) -> FewShotConfig:
    return FewShotConfig.model_validate({"data": {"folds": [0], "novel_classes": [4]}, "image_size": 64, "fit": {"steps": 10, "val_fraction": 0.3, **fit}})


def test_held_out_is_a_fixed_fraction_by_image_and_does_not_move_when_data_is_added():
    keys = [f"img-{i:04d}" for i in range(2000)]
    held = baseval.held_out(keys, 0.2, seed=3)
    assert 0.17 < len(held) / len(keys) < 0.23
    assert baseval.held_out(keys[:1000], 0.2, seed=3) == {k for k in held if k in set(keys[:1000])}  # per image, not per list
    assert baseval.held_out(keys, 0.2, seed=4) != held  # the seed draws another split
    assert baseval.held_out(keys, 0.0, seed=3) == set()


def test_base_val_is_disjoint_from_training_images_novel_classes_and_eval_images():
    fit_source = MemorySource(toy_items(n_per_class=12, extra_novel_sliver=True), min_pixels=64)
    eval_source = MemorySource({f"val-{k}": v for k, v in toy_items(n_per_class=4, seed=9).items()}, min_pixels=64)
    cfg = _cfg()
    sampler = train_sampler(cfg, fit_source, 0, 1)
    sets = score_sets(cfg, sampler, 0, 1)
    val, train = sets["base_val"], sets["base_train"]
    held = sampler.held_out
    assert held and len(val) == cfg.fit.val_episodes

    val_images = {k for e in val.episodes for k in (e.query, *e.supports)}
    assert val_images <= held  # base-val reads held-out images only
    trained = {k for i in range(3000) for e in [sampler(i)] for k in (e.query, *e.supports)}
    assert not trained & held  # no training episode reads one, as query or support
    assert not {k for e in train.episodes for k in (e.query, *e.supports)} & held
    assert {e.cls for e in val.episodes} <= {1, 2, 3} and {e.cls for e in val.episodes}  # base classes only
    assert all(4 not in fit_source.image_classes(k) for k in val_images)  # not even a sliver of the novel class
    assert not val_images & set(eval_source.class_index.get(1, []) + eval_source.class_index.get(4, []))
    assert "c1-000" not in val_images | trained  # the image with a novel sliver is nowhere in fit


def test_without_val_fraction_nothing_is_held_out():
    source = MemorySource(toy_items(n_per_class=6), min_pixels=64)
    cfg = _cfg(val_fraction=0.0)
    sampler = train_sampler(cfg, source, 0, 1)
    assert sampler.held_out == set() and sampler.pool == sampler.full_pool
    assert "base_val" not in score_sets(cfg, sampler, 0, 1)


def test_the_monitor_keeps_the_best_step_and_stops_after_patience():
    weights = {"w": torch.zeros(1)}
    scores = [0.2, 0.5, 0.4, 0.45, 0.9]
    m2 = baseval.Monitor(patience=2)
    for i, s in enumerate(scores):
        weights["w"] = torch.full((1,), float(i))
        if m2.update(100 * (i + 1), {"base_val_miou": s}, lambda: weights):
            break
    assert i == 3 and len(m2.curve) == 4  # two evaluations without a gain: stopped before the 0.9 it never saw
    assert m2.stopped and m2.best_step == 200 and m2.best_state["w"].item() == 1.0
    weights["w"].fill_(-1)  # the kept state is a copy, not a view of the live weights
    assert m2.best_state["w"].item() == 1.0
    again = baseval.Monitor.from_state(m2.state_dict(), 2)
    assert (again.best_step, again.best_score, again.bad_evals, again.stopped, again.curve) == (m2.best_step, m2.best_score, m2.bad_evals, True, m2.curve)


def test_score_counts_class_iou_of_the_predictions():
    class Perfect(torch.nn.Module):
        def forward(self, batch):
            t = batch["target"]
            return {"logits": torch.stack([(t != 1).float(), (t == 1).float()], dim=1)}

    pool = {1: ["a", "b"], 2: ["c", "d"]}
    eps = baseval.FixedEpisodes(pool, 1, 6, "t")
    target = torch.zeros(6, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    data = [{"target": target[i], "index": torch.tensor(i)} for i in range(6)]
    assert baseval.score(Perfect(), data, eps, lambda m, b: m(b))["miou"] == 1.0

    class Empty(Perfect):
        def forward(self, batch):
            return {"logits": torch.stack([torch.ones_like(batch["target"]).float(), torch.zeros_like(batch["target"]).float()], dim=1)}

    assert baseval.score(Empty(), data, eps, lambda m, b: m(b))["miou"] == 0.0


def test_fit_eval_events_become_tensorboard_scalars():
    got = tblog.scalars({"event": "eval", "step": 100, "base_val_miou": 0.5, "base_train_miou": 0.7, "loss_mean": 0.3}, "fit")
    assert got == {"base_val/miou": 0.5, "base_train/miou": 0.7}


def test_the_sampler_refuses_a_holdout_that_leaves_nothing_to_train_on():
    import pytest

    from glocon.errors import DataError

    source = MemorySource(toy_items(n_per_class=3), min_pixels=64)
    everything = {k for ks in source.class_index.values() for k in ks}
    with pytest.raises(DataError, match="holding out"):
        TrainEpisodeSampler(source.class_index, benchmark="embedded", fold=0, shots=1, seed=0, base=[1, 2, 3], novel=[4], held_out=everything)


def test_pfenets_variant_trains_on_images_with_novel_pixels_but_base_val_never_reads_them():
    source = MemorySource(toy_items(n_per_class=12, extra_novel_sliver=True), min_pixels=64)
    drop = train_sampler(_cfg(), source, 0, 1)
    keep = train_sampler(_cfg(novel_images="background"), source, 0, 1)
    novel_holding = {k for k in source.items if 4 in source.image_classes(k) and any(c in (1, 2, 3) for c in source.image_classes(k))}
    assert novel_holding == {"c1-000"}
    in_pool = lambda pool: {k for ks in pool.values() for k in ks}  # noqa: E731
    assert not in_pool(drop.full_pool) & novel_holding
    assert novel_holding <= in_pool(keep.full_pool)  # eligible for training, as in PFENet's list
    assert in_pool(keep.pool) == in_pool(keep.full_pool) - keep.held_out
    assert not in_pool(keep.val_pool) & novel_holding and keep.val_pool == drop.val_pool  # base-val unchanged
