"""The pretraining job as its own process with its own Ray: ``ray job submit`` to a local head,
and a drill that kills the driver with SIGKILL and reruns the same command.

In a module of their own, with no Ray in the pytest process, so that the cluster each test
starts is the only Ray on the machine while it runs. Each test ends exactly the Ray processes it
started (``tests/ray_procs.py``), never others.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glocon.models.prior import load_prior_extractor, read_export
from glocon.train.pretrain import METRICS_LOG

from ray_procs import free_port, stop_processes_naming

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


@pytest.mark.slow
@pytest.mark.realdata
def test_ray_job_submit_against_a_local_head_runs_the_job_end_to_end(photo_shards, no_ray_in_process, tmp_path):
    venv_bin = Path(sys.executable).parent
    ray_cli = str(venv_bin / "ray")
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    temp = Path(f"/tmp/gjs-{os.getpid()}")
    port, dash = free_port(), free_port()
    storage = tmp_path / "runs"
    config = tmp_path / "job.yaml"
    config.write_text(
        "\n".join(
            [
                "name: submitted", f"storage_path: {storage}", "epochs: 1", "batch_size: 8", "num_workers: 2",
                "use_gpu: false", "model: {backbone: resnet18, hidden_dim: 64}",
                f"data: {{shards: {photo_shards}, image_size: 64, shuffle_buffer: 8, samples_per_epoch: 16}}",
                "loss: {queue_global: 16, queue_local: 64, max_patches: 4, min_patch_area: 0.25}",
                "checkpoint: {every_steps: 2}",
            ]
        )
    )  # fmt: skip
    start = [
        ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
        "--port", str(port), "--dashboard-port", str(dash), "--temp-dir", str(temp), "--num-cpus", "2",
        "--include-dashboard", "true", "--disable-usage-stats",
        # Other Ray heads may run on this machine: give every fixed-default port a free one.
        *[arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                           "--metrics-export-port", "--ray-client-server-port", "--node-manager-port", "--object-manager-port")
          for arg in (flag, str(free_port()))],
    ]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    try:
        submit_env = dict(env, RAY_AUTH_MODE="token")  # ray 2.60: token auth is on; the client must send the token
        submit = [
            ray_cli, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(REPO),
            "--", "python", "jobs/pretrain.py", "--config", str(config), "log_every_s=1",
        ]  # fmt: skip
        deadline = time.time() + 300  # generous: on a loaded 2-core machine the agent took > 120 s
        while True:  # the head's job agent comes up a little after `ray start` returns
            job = subprocess.run(submit, env=submit_env, capture_output=True, text=True, timeout=600)
            not_ready = "No available agent" in job.stderr or "Connection refused" in job.stderr
            if job.returncode == 0 or not not_ready or time.time() > deadline:
                break
            time.sleep(3)
        log = job.stdout + job.stderr
        assert job.returncode == 0, log[-4000:]
        assert "succeeded" in log and "export:" in log, log[-4000:]
        assert "[pretrain submitted]" in log and "loss=" in log  # plain dashboard lines, not a TTY
        export = storage / "submitted" / "prior.pt"
        assert torch.load(export, map_location="cpu", weights_only=True)["extra"]["step"] == 2
    finally:
        stop_processes_naming(temp)
        shutil.rmtree(temp, ignore_errors=True)
