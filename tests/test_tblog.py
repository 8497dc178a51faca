"""TensorBoard event files hold the scalars runs push, read back with TensorBoard's own reader;
the log is a no-op that says why without tensorboard, and MLflow is used only when asked."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from glocon import tblog
from glocon.train.pretrain import METRICS_LOG, _Feed

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="tensorboard is not installed (pip install tensorboard)"
)


class _Dash:
    """The two Dashboard calls _Feed makes."""

    def update(self, **_: object) -> None: ...

    def log(self, _: str) -> None: ...


def step(s: int, **over: float) -> dict:
    m = {"step": s, "epoch": 0, "total_steps": 6, "loss": 9.0 - s, "L_global": 5.0 - s / 2, "L_local": 4.0 - s / 2, "lr": 0.06 / s,
         "images_per_s": 10.0 + s, "queue_fill_global": s / 6, "queue_fill_local": s / 12, "patches": 3 * s, "patches_per_image": 1.5 + s,
         "resumed_from_step": -1}  # fmt: skip
    return {**m, **over}


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_step_scalar_and_the_probe_miou_reach_tensorboard_event_files(tmp_path):
    feed = _Feed(_Dash(), tmp_path / "run" / METRICS_LOG)
    pushed = [step(s) for s in range(1, 5)]
    feed({"event": "start", "step": 0, "total_steps": 6, "resumed_from_step": -1})
    for m in pushed:
        feed(m)
    feed({"event": "probe", "step": 4, "epoch": 0, "retrieval_miou": 0.125, "seconds": 1.0})
    feed({"event": "checkpoint", "step": 4, "epoch": 0, "checkpoint": "checkpoint-step00000004", "epoch_end": True})
    feed.flush()
    feed.tb.close()
    got = read_scalars(tmp_path / "run" / "tb")
    for key, tag in tblog.TAGS["pretrain"].items():
        assert got[tag] == [(m["step"], pytest.approx(m[key], rel=1e-6)) for m in pushed], tag
    assert got[tblog.PROBE_TAG] == [(4, 0.125)]
    assert set(got) == set(tblog.TAGS["pretrain"].values()) | {tblog.PROBE_TAG}


def test_a_restart_from_a_checkpoint_hides_the_steps_it_runs_again(tmp_path):
    log = tblog.run_log(tmp_path, "pretrain")
    for s in range(1, 5):
        log.log(step(s))
    log.log({"event": "start", "step": 2, "total_steps": 6, "resumed_from_step": 2})  # workers died after step 4
    for s in (3, 4, 5):
        log.log(step(s, loss=100.0 + s))
    log.close()
    losses = read_scalars(tmp_path / "tb")["loss/total"]
    assert losses == [(1, 8.0), (2, 7.0), (3, 103.0), (4, 104.0), (5, 105.0)]


def test_fit_metrics_log_loss_lr_and_the_plugins_loss_parts(tmp_path):
    log = tblog.run_log(tmp_path, "fit")
    log.log({"event": "start", "step": 0, "total_steps": 2, "resumed_from_step": 0})
    log.log({"step": 1, "total_steps": 2, "fold": 0, "resumed_from_step": 0, "loss": 0.7, "aux": 0.2, "lr": 0.01, "s_per_step": 0.5})
    log.close()
    got = read_scalars(tmp_path / "tb")
    assert set(got) == {"loss/total", "loss/aux", "train/lr", "throughput/s_per_step"}
    assert got["loss/aux"] == [(1, pytest.approx(0.2))]


def test_without_tensorboard_the_log_writes_nothing_and_says_why_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setattr(tblog, "_said", set())
    for name in ("a", "b"):
        log = tblog.run_log(tmp_path / name, "pretrain")
        log.log(step(1))
        log.flush()
        log.close()
    assert not (tmp_path / "a" / "tb").exists()
    err = capsys.readouterr().err
    assert err.count("TensorBoard logging is off") == 1 and "pip install tensorboard" in err


def test_mlflow_gets_the_same_scalars_only_when_a_tracking_uri_is_set(tmp_path, monkeypatch, capsys):
    calls: list[tuple] = []
    fake = types.SimpleNamespace(
        set_tracking_uri=lambda uri: calls.append(("uri", uri)), start_run=lambda run_name: calls.append(("start", run_name)),
        log_metrics=lambda values, step: calls.append(("log", step, dict(values))), end_run=lambda: calls.append(("end",)),
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv(tblog.MLFLOW_ENV, raising=False)
    off = tblog.run_log(tmp_path / "off", "pretrain")
    off.log(step(1))
    off.close()
    assert calls == []
    monkeypatch.setenv(tblog.MLFLOW_ENV, "http://127.0.0.1:5000")
    on = tblog.run_log(tmp_path / "run-x", "pretrain")
    on.log(step(2))
    on.close()
    assert calls[:2] == [("uri", "http://127.0.0.1:5000"), ("start", "run-x")] and calls[-1] == ("end",)
    assert calls[2] == ("log", 2, tblog.scalars(step(2), "pretrain"))
    # A URI without mlflow installed: training goes on, the reason is said once.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setattr(tblog, "_said", set())
    unlogged = tblog.run_log(tmp_path / "none", "pretrain")
    unlogged.log(step(1))
    unlogged.close()  # its writer thread must not outlive tmp_path (deleted when a passing test ends)
    assert "mlflow is not installed" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_a_short_pretraining_writes_its_pushed_step_scalars_to_tensorboard(photo_shards, tmp_path, ray_session):
    from glocon.config import load_config
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining

    overrides = [
        f"storage_path={tmp_path}", "name=short", "num_workers=2", "batch_size=8", "epochs=1", "data.samples_per_epoch=24", "use_gpu=false",
        "model.backbone=resnet18", "model.hidden_dim=64", f"data.shards={photo_shards}", "data.image_size=64", "data.shuffle_buffer=8",
        "loss.queue_global=16", "loss.queue_local=64", "loss.max_patches=4", "loss.min_patch_area=0.25", "checkpoint.every_steps=100",
        "log_every_s=2", "max_failures=0",
    ]  # fmt: skip
    out = run_pretraining(load_config(PretrainConfig, None, overrides))
    assert out.result.error is None
    logged = [json.loads(line) for line in (tmp_path / "short" / METRICS_LOG).read_text().splitlines()]
    steps = [m for m in logged if m.get("event") is None]
    assert [m["step"] for m in steps] == [1, 2, 3]
    got = read_scalars(tmp_path / "short" / "tb")
    for key, tag in tblog.TAGS["pretrain"].items():
        assert got[tag] == [(m["step"], pytest.approx(m[key], rel=1e-6)) for m in steps], tag


@pytest.mark.slow
def test_a_short_fewshot_fit_writes_loss_and_lr_under_its_fold_run_folder(ray_session, tmp_path):
    import fewshot_helpers
    from fewshot_helpers import MemorySource, TinyPlugin, toy_items
    from glocon.fewshot.runner import FewShotConfig, fit, run_dir

    ray_session.cloudpickle.register_pickle_by_value(fewshot_helpers)  # workers cannot import tests/
    cfg = FewShotConfig.model_validate({
        "data": {"folds": [0], "novel_classes": [4]}, "image_size": 64, "episodes_dir": str(tmp_path / "episodes"),
        "fit": {"steps": 3, "shots": [1], "checkpoint_every": 3, "storage_path": str(tmp_path / "runs"), "name": "tb", "lr": 0.05},
    })  # fmt: skip
    fit(TinyPlugin(), cfg, source=MemorySource(toy_items(n_per_class=7), min_pixels=64))
    got = read_scalars(run_dir(cfg, 0, 1) / "tb")
    history = [m for m in json.loads((run_dir(cfg, 0, 1) / "history.json").read_text()) if "loss" in m]
    assert got["loss/total"] == [(m["step"], pytest.approx(m["loss"], rel=1e-6)) for m in history] and len(history) == 3
    assert [s for s, _ in got["train/lr"]] == [1, 2, 3]
