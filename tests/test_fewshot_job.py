"""The few-shot runner and job: fit under Ray Train lowers the loss and resumes exactly, QGNet's
loss drops in a few steps on embedded-like data, and evaluation on real COCO128 shards runs and
is reproducible bit for bit from the same episode file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import fewshot_helpers
from fewshot_helpers import MemorySource, TinyPlugin, toy_items
from glocon.errors import ConfigError
from glocon.fewshot.batches import TrainEpisodes
from glocon.fewshot.episodes import TrainEpisodeSampler
from glocon.fewshot.runner import FewShotConfig, build, evaluate, fit, load_model_file, load_trainable_state, make_optimizer, objective, train_steps

REPO = Path(__file__).resolve().parents[1]


def _toy_cfg(tmp_path: Path, **fit_kw) -> dict:
    return {
        "data": {"folds": [0], "novel_classes": [4]},
        "image_size": 64,
        "episodes_dir": str(tmp_path / "episodes"),
        "fit": {"steps": 8, "checkpoint_every": 4, "storage_path": str(tmp_path / "runs"), "name": "toy", "lr": 0.005, "shots": [1], **fit_kw},
        "eval": {"episodes": 12, "out_dir": str(tmp_path / "eval"), "n_figure_episodes": 2},
    }


def _fixed_batch(source, cfg: FewShotConfig, n: int = 4) -> dict[str, torch.Tensor]:
    sampler = TrainEpisodeSampler(source.class_index, benchmark="embedded", fold=0, shots=1, seed=cfg.seed, base=[1, 2, 3], novel=[4])
    ds = TrainEpisodes(source, sampler, cfg.image_size, cfg.seed, list(range(1000, 1000 + n)))
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("query", "target", "support_images", "support_masks")}


def _loss_on(model, batch) -> float:
    torch.manual_seed(0)  # the same dropout masks for every call
    model.train()
    with torch.no_grad():
        out = model(batch["query"], batch["support_images"], batch["support_masks"])
        return float(model.loss(out, batch["target"])[0])


@pytest.mark.slow
def test_fit_under_ray_lowers_the_loss_and_a_resumed_run_equals_an_uninterrupted_one(ray_session, tmp_path):
    ray_session.cloudpickle.register_pickle_by_value(fewshot_helpers)  # workers cannot import tests/
    source = MemorySource(toy_items(n_per_class=7), min_pixels=64)
    plugin = TinyPlugin()
    whole = FewShotConfig.model_validate(_toy_cfg(tmp_path, name="whole"))
    summary = fit(plugin, whole, source=source)
    info = summary["folds"][0][1]
    assert info["complete"] and info["step"] == 8

    # the loss on held-out training episodes is lower after fitting than at the same initialisation
    batch = _fixed_batch(source, whole)
    torch.manual_seed(whole.seed)
    model = build(plugin, whole)
    before = _loss_on(model, batch)
    load_trainable_state(model, load_model_file(Path(info["model"]), plugin, 0)["state"], info["model"])
    after = _loss_on(model, batch)
    assert after < before - 0.05, (before, after)

    # stopped at step 4, then rerun with the same name: resumes from the checkpoint, same weights
    part = copy.deepcopy(_toy_cfg(tmp_path, name="resumed"))
    part["fit"]["stop_at_step"] = 4
    first = fit(plugin, FewShotConfig.model_validate(part), source=source)["folds"][0][1]
    assert not first["complete"] and first["model"] is None and first["step"] == 4
    second = fit(plugin, FewShotConfig.model_validate(_toy_cfg(tmp_path, name="resumed")), source=source)["folds"][0][1]
    assert second["complete"] and second["resumed_from_step"] == 4
    a = load_model_file(Path(info["model"]), plugin, 0)["state"]
    b = load_model_file(Path(second["model"]), plugin, 0)["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a worker SIGKILLed right after its step-4 checkpoint: Ray Train restarts it from that
    # checkpoint (max_failures) and the fit ends with the same weights as the uninterrupted run
    killed = copy.deepcopy(_toy_cfg(tmp_path, name="killed"))
    marker = tmp_path / "killed.marker"
    killed["fit"].update(max_failures=1, fault={"kill_at_step": 4, "kill_rank": 0, "marker": str(marker)})
    third = fit(plugin, FewShotConfig.model_validate(killed), source=source)["folds"][0][1]
    assert marker.is_file() and "at step 4" in marker.read_text()  # the worker really died
    assert third["complete"] and third["starts"] == [0, 4], third["starts"]  # restarted from the checkpoint, not from 0
    c = load_model_file(Path(third["model"]), plugin, 0)["state"]
    assert all(torch.equal(a[k], c[k]) for k in a)

    # the newest checkpoint truncated on disk (a crash mid-copy, a full disk): the rerun names the
    # damaged file, resumes from the newest good one (step 4) and still ends with the same weights
    part = copy.deepcopy(_toy_cfg(tmp_path, name="truncated"))
    part["fit"]["stop_at_step"] = 6
    stopped = fit(plugin, FewShotConfig.model_validate(part), source=source)["folds"][0][1]
    latest = Path(stopped["checkpoint"]) / "state.pt"
    assert stopped["step"] == 6 and latest.parent.name.endswith("06")
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    resumed = fit(plugin, FewShotConfig.model_validate(_toy_cfg(tmp_path, name="truncated")), source=source)["folds"][0][1]
    assert resumed["complete"] and resumed["resumed_from_step"] == 4, resumed["starts"]
    payload = load_model_file(Path(resumed["model"]), plugin, 0)
    assert json.loads(payload["split"]) == {"benchmark": "embedded", "base": [1, 2, 3], "novel": [4]}  # what eval checks its split against
    d = payload["state"]
    assert all(torch.equal(a[k], d[k]) for k in a)

    # and the trained weights are what evaluation loads by default
    results = evaluate(plugin, whole, source=source)
    assert results["weights"]["0"]["1"] == results["weights"]["0"]["5"] == info["model"]  # one 1-shot model scores both (HSNet's protocol)
    assert (tmp_path / "eval" / "results.md").is_file() and (tmp_path / "eval" / "fig5-fold0-1shot.png").is_file()


def test_eval_of_a_trainable_plugin_without_weights_is_refused_with_the_path(tmp_path):
    source = MemorySource(toy_items(n_per_class=7), min_pixels=64)
    cfg = FewShotConfig.model_validate(_toy_cfg(tmp_path))
    with pytest.raises(ConfigError, match="model.pt"):
        evaluate(TinyPlugin(), cfg, source=source)


def test_objective_scores_validation_episodes_of_base_classes_only(tmp_path):
    source = MemorySource(toy_items(n_per_class=7), min_pixels=64)
    cfg = FewShotConfig.model_validate({**_toy_cfg(tmp_path), "objective": {"episodes": 6, "fit_steps": 2}})
    score = objective(TinyPlugin(), None, cfg, source=source)
    assert 0.0 <= score <= 100.0
    (path,) = (tmp_path / "episodes").glob("*-val-*.json")
    eps = json.loads(path.read_text())["episodes"]
    assert eps and all(e["class"] in (1, 2, 3) for e in eps)


@pytest.mark.slow
def test_qgnet_few_fit_steps_lower_the_loss_on_embedded_like_data(tmp_path):
    plugins = pytest.importorskip("glocon.plugins")
    try:
        qgnet = plugins.load_plugin("qgnet")
    except plugins.PluginError as exc:
        pytest.skip(f"qgnet plugin not installed: {exc}")
    from glocon.models.prior import PriorArch, PriorExtractor, save_export

    torch.manual_seed(0)
    prior = tmp_path / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), prior)
    source = MemorySource(toy_items(n_per_class=7), min_pixels=64)
    cfg = FewShotConfig.model_validate(
        {**_toy_cfg(tmp_path), "plugin": "qgnet", "prior": str(prior), "model": {"backbone": "resnet18", "dilated": False}, "fit": {"steps": 6, "lr": 0.01}}
    )
    torch.manual_seed(cfg.seed)
    model = build(qgnet, cfg)
    batch = _fixed_batch(source, cfg, n=2)
    before = _loss_on(model, batch)
    optimizer, scheduler = make_optimizer(model, cfg, 6)
    sampler = TrainEpisodeSampler(source.class_index, benchmark="embedded", fold=0, shots=1, seed=cfg.seed, base=[1, 2, 3], novel=[4])
    # train on the very episodes the loss is measured on: a few steps must fit them better
    ds = TrainEpisodes(source, sampler, cfg.image_size, cfg.seed, [1000, 1001] * 6)
    train_steps(model, model.loss, optimizer, scheduler, ds, batch_size=2, start_step=0, device=torch.device("cpu"))
    after = _loss_on(model, batch)
    assert after < before, (before, after)


# -- real photos ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco128_shards(coco128, ray_session, tmp_path_factory):
    """Small shards of the annotated COCO128 photos (train2017 and val2017 halves)."""
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards

    out = tmp_path_factory.mktemp("coco128-shards")
    dirs = []
    for split in ("train2017", "val2017"):
        cfg = ShardsConfig.model_validate(
            {
                "data": {"layout": "coco", "coco_format": "semantic_png", "root": str(coco128), "split": split},
                "out_dir": str(out / split), "prefix": f"coco128-{split}", "samples_per_shard": 64, "longest_side": 160,
                "superpixels": {"slic": {"n_segments": 16}, "fh": {"scale": 300.0, "min_size": 100}},
            }
        )  # fmt: skip
        make_shards(cfg, dashboard=False)
        dirs.append(str(out / split))
    return dirs


@pytest.mark.slow
@pytest.mark.realdata
def test_eval_on_coco128_shards_runs_and_is_reproducible_bit_for_bit(coco128_shards, tmp_path):
    from glocon.models.prior import PriorArch, PriorExtractor, save_export
    from glocon.plugins import load_plugin

    torch.manual_seed(0)
    prior = tmp_path / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), prior)
    proto = load_plugin("proto")

    def cfg(out: str) -> FewShotConfig:
        return FewShotConfig.model_validate(
            {
                "plugin": "proto", "prior": str(prior), "image_size": 96, "device": "cpu",
                "data": {"shards": coco128_shards, "benchmark": "coco", "folds": [0]},
                "episodes_dir": str(tmp_path / "episodes"),
                "eval": {"episodes": 8, "shots": [1, 5], "seeds": 1, "out_dir": str(tmp_path / out), "n_figure_episodes": 2},
            }
        )  # fmt: skip

    first = evaluate(proto, cfg("a"))
    files = sorted((tmp_path / "episodes").glob("*.json"))
    assert [f.name for f in files] == ["coco-fold0-test-1shot-seed321-n8.json", "coco-fold0-test-5shot-seed321-n8.json"]
    stamps = [f.read_bytes() for f in files]
    second = evaluate(proto, cfg("b"))
    assert [f.read_bytes() for f in files] == stamps  # the episode file was reused, not redrawn
    for k in ("1", "5"):
        a, b = first["folds"]["0"][k], second["folds"]["0"][k]
        assert a["episodes"] == 8
        assert a["logits_sha256"] == b["logits_sha256"] and a["predictions_sha256"] == b["predictions_sha256"]
        assert a["miou"] == b["miou"] and a["fb_iou"] == b["fb_iou"] and a["class_iou"] == b["class_iou"]
        assert set(int(c) for c in a["class_iou"]) <= set(range(1, 81, 4))  # fold 0's novel classes only
    assert (tmp_path / "a" / "results.md").read_text() == (tmp_path / "b" / "results.md").read_text()
    assert (tmp_path / "a" / "fig5-fold0-5shot.png").stat().st_size > 0


def test_job_rejects_an_unknown_verb_and_a_missing_plugin(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fewshot_job", REPO / "jobs" / "fewshot.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["train", "--plugin", "proto"]) == 2
    assert "fit' or 'eval'" in capsys.readouterr().err
    assert job.main(["eval", "--plugin", "no-such-plugin"]) == 2
    assert "no-such-plugin" in capsys.readouterr().err
    assert job.main(["eval", "--plugin", "proto", "model.threshhold=0.3"]) == 2
    assert "threshhold" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_keeps_the_best_base_val_step_stops_on_patience_and_writes_its_curve(ray_session, tmp_path):
    ray_session.cloudpickle.register_pickle_by_value(fewshot_helpers)
    source = MemorySource(toy_items(n_per_class=10), min_pixels=64)
    plugin = TinyPlugin()
    kw = {"steps": 40, "checkpoint_every": 100, "eval_every": 2, "patience": 2, "val_fraction": 0.3, "val_episodes": 16, "train_eval_episodes": 8, "lr": 0.02}
    cfg = FewShotConfig.model_validate(_toy_cfg(tmp_path, name="early", **kw))
    info = fit(plugin, cfg, source=source)["folds"][0][1]
    curve = info["curve"]
    vals = [r["base_val_miou"] for r in curve]
    assert [r["step"] for r in curve] == list(range(2, 2 * len(curve) + 1, 2))
    best = curve[vals.index(max(vals))]["step"]  # the first of equal maxima
    assert info["best_step"] == best and info["best_base_val_miou"] == max(vals)
    # stopped iff the last `patience` evaluations brought no gain, and then it trained no further
    no_gain = all(v <= max(vals[:-2]) for v in vals[-2:]) if len(vals) > 2 else False
    assert info["stopped_early"] == no_gain
    assert info["complete"] and info["step"] == curve[-1]["step"] and (no_gain or info["step"] == 40)

    # model.pt holds the weights of the best step: the same run stopped there ends with them
    at_best = FewShotConfig.model_validate(_toy_cfg(tmp_path, name="at-best", **kw, stop_at_step=best))
    stopped = fit(plugin, at_best, source=source)["folds"][0][1]
    from glocon.fewshot.state import load_fit_state

    want = load_fit_state(Path(stopped["checkpoint"]))["model"]
    kept = load_model_file(Path(info["model"]), plugin, 0)["state"]
    assert kept.keys() == want.keys() and all(torch.equal(kept[k], want[k]) for k in kept)

    # the curve beside the model: JSON, PNG, and TensorBoard scalars of base-val and base-train
    run = Path(info["model"]).parent
    assert json.loads((run / "curve.json").read_text())["best_step"] == best
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]
    assert {"base_val/miou", "base_train/miou", "loss/total"} <= set(tags)
