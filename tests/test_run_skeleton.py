"""The one Ray Train skeleton (glocon.train.run): what both runs (pretraining, few-shot fit) share."""

from __future__ import annotations

import ast
from pathlib import Path

from glocon.train.run import STAGING, RunSpec, build_trainer, clear_staging, staging_dir

REPO = Path(__file__).resolve().parents[1]


def test_a_checkpoint_is_staged_inside_its_run_and_a_rank_clears_only_its_own_leftovers(tmp_path):
    run = tmp_path / "run"
    with staging_dir(run, 1) as tmp:
        assert Path(tmp).parent == run and Path(tmp).name.startswith(f"{STAGING}1-")
    assert not any(run.iterdir())  # a finished write leaves nothing
    left = [run / f"{STAGING}0-dead", run / f"{STAGING}1-dead", run / "checkpoint-step00000004"]
    for p in left:
        (p / "x").mkdir(parents=True)
    assert clear_staging(run, 1) == [left[1]]
    assert sorted(p.name for p in run.iterdir()) == sorted([left[0].name, left[2].name])
    assert clear_staging(None, 0) == [] and clear_staging(tmp_path / "missing", 0) == []


def test_remote_storage_has_no_local_run_folder_and_stages_in_the_system_temp():
    assert RunSpec(name="r", storage_path="s3://bucket/runs").local_dir is None
    assert RunSpec(name="r", storage_path="/abs/runs").local_dir == Path("/abs/runs/r")
    with staging_dir(None, 0) as tmp:
        assert Path(tmp).name.startswith("glocon-ckpt-")


def test_the_spec_reaches_ray_trains_run_config(tmp_path):
    spec = RunSpec(name="r", storage_path=str(tmp_path), num_workers=2, cpus_per_worker=1.5, use_gpu=False, num_to_keep=3, max_failures=4)
    trainer = build_trainer(lambda config: None, {"k": 1}, spec)
    run, scaling = trainer.run_config, trainer.scaling_config
    assert (run.name, run.storage_path, run.failure_config.max_failures, run.checkpoint_config.num_to_keep) == ("r", str(tmp_path), 4, 3)
    assert (scaling.num_workers, scaling.use_gpu, scaling.resources_per_worker) == (2, False, {"CPU": 1.5})


def test_both_training_loops_build_their_trainer_and_session_from_the_skeleton_only():
    """No second trainer builder, checkpoint writer or resume path: TorchTrainer, ray.train.report
    and ray.train.get_checkpoint appear in glocon.train.run and nowhere else in the platform."""
    owners: dict[str, set[str]] = {}
    for path in sorted((REPO / "platform" / "glocon").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in ("TorchTrainer", "get_checkpoint", "report") and (name != "report" or _is_ray_train(node)):
                owners.setdefault(name, set()).add(str(path.relative_to(REPO)))
    assert owners == {k: {"platform/glocon/train/run.py"} for k in ("TorchTrainer", "get_checkpoint", "report")}, owners


def _is_ray_train(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "train"
