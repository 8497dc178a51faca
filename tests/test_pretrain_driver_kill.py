"""Drill: the pretraining driver killed with SIGKILL, then the same command rerun.

In a module of its own, with no Ray in the pytest process: the job starts its own local Ray
(its own temp dir), the test kills the driver's whole session with SIGKILL (the driver gets no
chance to clean up), ends the Ray processes it left, and runs the same command again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glocon.models.prior import load_prior_extractor, read_export
from glocon.train.pretrain import METRICS_LOG

from ray_procs import stop_processes_naming

REPO = Path(__file__).resolve().parents[1]


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
def test_driver_killed_with_sigkill_then_the_same_command_resumes_from_its_last_checkpoint(photo_shards, tmp_path):
    import ray

    assert not ray.is_initialized(), "this drill needs a pytest process without Ray (see the module docstring)"
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
    log1 = (tmp_path / "run1.log").open("w")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            if any((p / "state.pt").is_file() for p in run_dir.glob("checkpoint-step*")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the run ended before a checkpoint could be interrupted:\n{(tmp_path / 'run1.log').read_text()[-3000:]}"
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
