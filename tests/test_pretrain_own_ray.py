"""The pretraining job as its own process with its own Ray: the README's ``ray job submit``
commands (pretraining and sweep) run verbatim against a local head, and a drill that kills the
driver with SIGKILL and reruns the same command.

In a module of their own, with no Ray in the pytest process, so that the cluster a test runs on
is the only Ray on the machine while it runs: the drill's own, then one head that both README
tests submit to (the ``head`` fixture). Each ends exactly the Ray processes it started
(``tests/ray_procs.py``), never others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from glocon.models.prior import load_prior_extractor, read_export
from glocon.train.pretrain import METRICS_LOG

from inprocess_shards import make_shards_in_process
from ray_procs import local_head, stop_processes_naming

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _started_runs(log: Path) -> list[dict]:
    """The 'start' events of a metrics log; a line torn by a SIGKILL is skipped, never read as valid."""
    events = []
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("event") == "start":
            events.append(row)
    return events


@pytest.mark.slow
@pytest.mark.realdata
def test_driver_killed_with_sigkill_then_the_same_command_resumes_from_its_last_checkpoint(photo_shards, no_ray_in_process, tmp_path):
    storage, name = tmp_path / "runs", "driver-kill"
    temp = Path(f"/tmp/gdk-{os.getpid()}")
    overrides = [
        f"storage_path={storage}", f"name={name}", "num_workers=2", "batch_size=8", "epochs=3", "use_gpu=false",
        "model.backbone=resnet18", "model.hidden_dim=64", f"data.shards={photo_shards}", "data.image_size=64",
        "data.shuffle_buffer=8", "loss.queue_global=16", "loss.queue_local=64", "loss.max_patches=4",
        "loss.min_patch_area=0.25", "checkpoint.every_steps=2", "checkpoint.num_to_keep=2", "log_every_s=2",
        f"ray.temp_dir={temp}", "ray.num_cpus=2",
    ]  # fmt: skip
    command = [sys.executable, str(REPO / "jobs" / "pretrain.py"), *overrides]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run_dir = storage / name
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    log1 = (tmp_path / "run1.log").open("w")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            # Kill only once Ray has *committed* a checkpoint (its checkpoint-manager snapshot names
            # it): a state.pt already copied into storage but not yet registered is, rightly, not
            # resumed from, and a kill in that window made the rerun start over (CI, 2026-11-25).
            if snapshot.is_file() and '"checkpoint_dir_name":"checkpoint-step' in snapshot.read_text(errors="replace").replace(" ", ""):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the run ended before a committed checkpoint could be interrupted:\n{(tmp_path / 'run1.log').read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session, with no chance to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log1.close()
        stop_processes_naming(temp)  # the raylet and workers the killed driver had started
    assert not (run_dir / "prior.pt").exists()  # the killed run never finished

    try:
        rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    finally:
        stop_processes_naming(temp)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    starts = _started_runs(run_dir / METRICS_LOG)
    assert len(starts) >= 2 and starts[-1]["resumed_from_step"] >= 2, starts  # continued, not restarted
    assert load_prior_extractor(run_dir / "prior.pt").arch.backbone == "resnet18"
    assert read_export(run_dir / "prior.pt")["extra"]["step"] == 24  # 64 images / 8 per step x 3 epochs


def readme_submit_commands() -> dict[str, str]:
    """README.md's ``ray job submit`` commands, continuation lines joined, by the job script they run."""
    commands: dict[str, str] = {}
    for block in re.findall(r"```\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "ray job submit" in line:
                script = re.search(r"jobs/(\w+)\.py", line).group(1)
                assert script not in commands, f"README.md: two `ray job submit` commands run jobs/{script}.py"
                commands[script] = " ".join(line.split())
    return commands


@pytest.fixture(scope="module")
def head(coco128) -> Iterator[tuple[Path, dict[str, str]]]:
    """One local head for both README submit tests: a head and its job agent take 20-40 s to come
    up on 2 cores, and each test's two submissions are independent jobs on it, as a user's are.
    Module-scoped, so it starts after the SIGKILL drill (which needs no other Ray) has ended."""
    temp = Path(f"/tmp/gjs-{os.getpid()}")
    with local_head(temp) as env:
        env.pop("RAY_ADDRESS")  # as the README: `ray job` finds the head by RAY_API_SERVER_ADDRESS alone
        yield temp, env


def submit(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a README command line verbatim (bash, in ``cwd``), retrying while the job agent starts."""
    deadline = time.time() + 300  # generous: on a loaded 2-core machine the agent took > 120 s
    while True:  # the head's job agent comes up a little after `ray start` returns
        job = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        not_ready = "No available agent" in job.stderr or "Connection refused" in job.stderr
        if job.returncode == 0 or not not_ready or time.time() > deadline:
            return job
        time.sleep(3)


def checkout(root: Path, coco128: Path, n_images: int) -> Path:
    """What a user's clone holds for these commands: jobs/, configs/, .gitignore (so runs/ is not
    uploaded, as in a real clone) and make_shards output in runs/demo/shards (64 px coco128 photos)."""
    from glocon.config import validate_config
    from glocon.data.shardplan import ShardsConfig

    root.mkdir(parents=True)
    for name in ("jobs", "configs"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    make_shards_in_process(validate_config(ShardsConfig, {
        "data": {"layout": "coco", "root": str(coco128), "split": "val2017", "coco_format": "semantic_png", "limit": n_images},
        "out_dir": str(root / "runs" / "demo" / "shards"), "samples_per_shard": 4, "longest_side": 64,
    }))  # fmt: skip
    return root


TINY_PRETRAIN = """\
# tests/test_pretrain_own_ray.py: configs/pretrain-demo.yaml at test size (same name, same relative paths)
name: pretrain-demo
storage_path: runs/pretrain
epochs: 1
batch_size: 8
num_workers: 2
use_gpu: false
max_failures: 0
model: {backbone: resnet18, hidden_dim: 64}
data: {shards: runs/demo/shards, image_size: 64, shuffle_buffer: 8, samples_per_epoch: 32}
loss: {queue_global: 16, queue_local: 64, max_patches: 4, min_patch_area: 0.25}
checkpoint: {every_steps: 2}
log_every_s: 1
"""


def no_outputs_in_rays_copies(temp: Path) -> None:
    """Nothing was written inside Ray's uploaded copies of the working dir (they die with the session)."""
    copies = list(temp.glob("session_*/runtime_resources/working_dir_files/*"))
    assert copies, f"no working_dir copy under {temp}: did the job run from one?"
    assert not [c for c in copies if (c / "runs").exists()], copies


@pytest.mark.slow
@pytest.mark.realdata
def test_readme_ray_job_submit_for_pretraining_keeps_its_export_and_a_second_submission_resumes(coco128, no_ray_in_process, head, tmp_path):
    command = readme_submit_commands()["pretrain"]
    assert "--working-dir ." in command and "GLOCON_SUBMIT_DIR" in command
    work = checkout(tmp_path / "clone", coco128, n_images=16)
    config = work / "configs" / "pretrain-demo.yaml"
    config.write_text(TINY_PRETRAIN + "stop_at_step: 2\n")  # the first submission stops after its step-2 checkpoint
    run_dir = work / "runs" / "pretrain" / "pretrain-demo"
    assert "`runs/pretrain/pretrain-demo/prior.pt`" in README.read_text()  # where the README says the export lands
    temp, env = head
    first = submit(command, work, env)
    log = first.stdout + first.stderr
    assert first.returncode == 0 and "succeeded" in log, log[-4000:]
    assert "[pretrain pretrain-demo]" in log and "loss=" in log  # plain dashboard lines, not a TTY
    assert read_export(run_dir / "prior.pt")["extra"]["step"] == 2
    config.write_text(TINY_PRETRAIN)  # a file changed: Ray uploads a new copy, the run must still resume
    second = submit(command, work, env)
    log = second.stdout + second.stderr
    assert second.returncode == 0 and "succeeded" in log, log[-4000:]
    no_outputs_in_rays_copies(temp)
    assert [s["resumed_from_step"] for s in _started_runs(run_dir / METRICS_LOG)] == [-1, 2]
    assert torch.load(run_dir / "prior.pt", map_location="cpu", weights_only=True)["extra"]["step"] == 4


TINY_SWEEP = """\
# tests/test_pretrain_own_ray.py: configs/sweep-table6.yaml at test size (same name, same relative paths)
name: sweep-table6
storage_path: runs/sweeps
pretrain: configs/pretrain-demo.yaml
pretrain_overrides: [epochs=1, num_workers=1, batch_size=4, data.samples_per_epoch=8]
space:
  loss_weights: [{global: 1.0, local: 1.0}]
objective:
  plugin: proto
  config:
    data: {shards: runs/demo/shards, benchmark: coco, folds: [1]}
    image_size: 64
    device: cpu
    objective: {fold: 1, episodes: 6, shots: 1}
asha: {enabled: false}
resources: {workers_per_trial: 1, driver_cpus: 1, max_concurrent_trials: 1}
dashboard: false
"""


@pytest.mark.slow
@pytest.mark.realdata
def test_readme_ray_job_submit_for_a_sweep_keeps_its_folder_and_a_second_submission_resumes(coco128, no_ray_in_process, head, tmp_path):
    command = readme_submit_commands()["sweep"]
    assert "--working-dir ." in command and "GLOCON_SUBMIT_DIR" in command
    work = checkout(tmp_path / "clone", coco128, n_images=24)
    (work / "configs" / "pretrain-demo.yaml").write_text(TINY_PRETRAIN)
    (work / "configs" / "sweep-table6.yaml").write_text(TINY_SWEEP)
    exp_dir = work / "runs" / "sweeps" / "sweep-table6"
    assert "`runs/sweeps/sweep-table6/`" in README.read_text()
    temp, env = head
    first = submit(command, work, env)
    log = first.stdout + first.stderr
    assert first.returncode == 0 and "succeeded" in log, log[-4000:]
    results = json.loads((exp_dir / "results.json").read_text())
    assert results["restored"] is False and [t["status"] for t in results["trials"]] == ["done"]
    assert list((exp_dir / "trains").glob("trial-*/checkpoint-step*"))  # the trial's Train run is here too
    second = submit(command, work, env)
    log = second.stdout + second.stderr
    assert second.returncode == 0 and "(resumed)" in log, log[-4000:]
    no_outputs_in_rays_copies(temp)
    results = json.loads((exp_dir / "results.json").read_text())
    assert results["restored"] is True and [t["status"] for t in results["trials"]] == ["done"]
