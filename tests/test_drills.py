"""Fault drills for checkpoints: a truncated file on disk, and a disk that fills mid-write.

(The drills that kill real processes live beside the jobs they kill: a pretraining worker in
tests/test_pretrain_job.py, the pretraining driver in tests/test_pretrain_own_ray.py, a
few-shot fit worker in tests/test_fewshot_job.py, a shard job in tests/test_shards.py, a sweep
driver in tests/test_sweep.py.)
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from glocon.errors import CheckpointError
from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, save_export
from glocon.train import checkpoint as ckpt


def _state(step: int) -> dict:
    return {
        "model": {"w": torch.full((2,), float(step))}, "twin": {}, "queue_global": {}, "queue_local": {},
        "optimizer": {}, "scheduler": {}, "step": step, "epoch": 0,
    }  # fmt: skip


def _run(tmp_path: Path, steps=(10, 20, 30)) -> Path:
    run = tmp_path / "run"
    for step in steps:
        ckpt.save_state(run / f"checkpoint-step{step:08d}", _state(step))
    return run


def test_a_truncated_latest_checkpoint_falls_back_to_the_newest_good_one_and_names_the_file(tmp_path):
    run = _run(tmp_path)
    latest = run / "checkpoint-step00000030" / ckpt.STATE
    latest.write_bytes(latest.read_bytes()[:100])  # what a crash mid-copy leaves
    warnings: list[str] = []
    state, used = ckpt.load_resumable(latest.parent, run, warn=warnings.append)
    assert used.name == "checkpoint-step00000020" and state["step"] == 20
    assert len(warnings) == 1 and str(latest) in warnings[0]


def test_a_run_that_fell_back_never_writes_into_the_damaged_checkpoints_folder(tmp_path):
    run = _run(tmp_path)  # 10, 20, 30; 30 damaged: the attempt resumes from 20 and trains through 30 again
    (run / "checkpoint-step00000030" / ckpt.STATE).write_bytes(b"")
    names = ckpt.CheckpointNames(run)
    assert [names(s) for s in (25, 30, 40)] == ["checkpoint-step00000025", "checkpoint-step00000030-r1", "checkpoint-step00000040"]
    (run / "checkpoint-step00000030-r1").mkdir()
    assert ckpt.CheckpointNames(run)(30) == "checkpoint-step00000030-r2"  # a second fallback
    assert ckpt.CheckpointNames(None)(30) == "checkpoint-step00000030"  # remote storage: not listed
    ckpt.save_state(run / "checkpoint-step00000030-r2", _state(31))
    order = sorted(run.glob("checkpoint-step*"), key=ckpt.checkpoint_order)
    assert [p.name for p in order][-3:] == ["checkpoint-step00000030", "checkpoint-step00000030-r1", "checkpoint-step00000030-r2"]
    # the newest attempt's folder falls back past the damaged one of the same step, to 20
    (run / "checkpoint-step00000030-r2" / ckpt.STATE).write_bytes(b"")
    state, used = ckpt.load_resumable(run / "checkpoint-step00000030-r2", run, warn=lambda _: None)
    assert used.name == "checkpoint-step00000020" and state["step"] == 20


def test_when_every_checkpoint_is_damaged_the_error_names_each_file(tmp_path):
    run = _run(tmp_path, steps=(10, 20))
    for step in (10, 20):
        (run / f"checkpoint-step{step:08d}" / ckpt.STATE).write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        ckpt.load_resumable(run / "checkpoint-step00000020", run, warn=lambda _: None)
    for step in (10, 20):
        assert str(run / f"checkpoint-step{step:08d}" / ckpt.STATE) in str(err.value)


def test_a_newer_checkpoint_is_never_used_to_replace_the_one_ray_returned(tmp_path):
    run = _run(tmp_path)
    state, used = ckpt.load_resumable(run / "checkpoint-step00000020", run, warn=lambda _: None)
    assert used.name == "checkpoint-step00000020" and state["step"] == 20


def test_a_few_shot_fit_checkpoint_of_the_wrong_format_or_truncated_is_skipped_by_name(tmp_path):
    from glocon.fewshot.runner import STATE_FORMAT, load_fit_state
    from glocon.io import atomic_write_json

    run = tmp_path / "fit-fold0"
    for step in (4, 8):
        folder = run / f"checkpoint-step{step:08d}"
        ckpt.save_tensors(folder / "state.pt", {"format": STATE_FORMAT, "model": {}, "optimizer": {}, "scheduler": {}, "step": step, "fold": 0})
        atomic_write_json(folder / "metrics.json", {"step": step})
    newest = run / "checkpoint-step00000008" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:50])
    warnings: list[str] = []
    state, used = ckpt.load_resumable(newest.parent, run, warn=warnings.append, loader=load_fit_state)
    assert state["step"] == 4 and used.name == "checkpoint-step00000004"
    assert len(warnings) == 1 and str(newest) in warnings[0]
    # a pretraining checkpoint is not a fit checkpoint: refused, naming the file and the format
    ckpt.save_state(run / "checkpoint-step00000004", _state(4))
    with pytest.raises(CheckpointError, match=r"checkpoint-step00000004/state.pt: expected format"):
        load_fit_state(run / "checkpoint-step00000004")


def _full_disk_save(real_save):
    def save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_a_disk_that_fills_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint-step00000010"
    ckpt.save_state(folder, _state(10))
    before = (folder / ckpt.STATE).read_bytes()
    monkeypatch.setattr(torch, "save", _full_disk_save(torch.save))
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_state(folder, _state(11))
    monkeypatch.undo()
    assert (folder / ckpt.STATE).read_bytes() == before  # nothing half-written replaced it
    assert sorted(p.name for p in folder.iterdir()) == [ckpt.STATE]  # and no temp file is left to be mistaken for one
    assert ckpt.load_state(folder)["step"] == 10


def test_a_disk_that_fills_during_an_export_keeps_the_previous_export_loadable(tmp_path, monkeypatch):
    path = tmp_path / "prior.pt"
    model = PriorExtractor(PriorArch(backbone="resnet18", hidden_dim=32, proj_dim=16))
    save_export(model, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _full_disk_save(torch.save))
    with pytest.raises(OSError):
        save_export(model, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["prior.pt"]
    assert load_prior_extractor(path).arch.proj_dim == 16


def test_a_truncated_export_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18", hidden_dim=32, proj_dim=16)), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(path)):
        load_prior_extractor(path)
