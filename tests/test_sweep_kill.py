"""Drill: a sweep driver killed with SIGKILL mid-way, then the same command rerun.

In a module of its own, with no Ray in the pytest process while the sweep runs: the sweep job
starts its own local Ray, and the test kills the driver's whole session with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sweep_helpers import JOB, REPO, make_sweep_shards, sweep_dict, trial_statuses, write_yaml


@pytest.fixture(scope="module")
def shards(coco128, tmp_path_factory):
    # built in this process: the module's only Ray is the one the swept job starts
    return make_sweep_shards(coco128, tmp_path_factory.mktemp("sweep-shards"), in_process=True)


@pytest.mark.slow
@pytest.mark.realdata
def test_killed_sweep_resumes_without_redoing_completed_trials(shards, no_ray_in_process, tmp_path):
    storage = tmp_path / "sweeps"
    d = sweep_dict(shards, storage, "killme")
    d["space"] = {"tau": [0.1, 0.3]}
    d["asha"] = {"enabled": False}
    d["ray"] = {"num_cpus": 2, "temp_dir": f"/tmp/glocon-ray-kill-{os.getpid()}"}
    cfg_path = write_yaml(tmp_path / "sweep.yaml", d)
    exp_dir = storage / "killme"
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1"}
    log1 = (tmp_path / "run1.log").open("w")
    # its own session: the driver and the Ray processes it starts share one process group we can kill
    proc = subprocess.Popen([sys.executable, str(JOB), "--config", str(cfg_path)], cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        done_first = None
        while time.monotonic() < deadline and proc.poll() is None:
            st = trial_statuses(exp_dir)
            finished = [t for t, s in st.items() if s == "TERMINATED"]
            running = [t for t, s in st.items() if s == "RUNNING"]
            if finished and running:
                done_first = finished[0]
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"sweep ended before it could be killed:\n{(tmp_path / 'run1.log').read_text()[-3000:]}"
        assert done_first is not None, "no trial finished within the time limit"
        os.killpg(proc.pid, signal.SIGKILL)  # really kill the driver (and the local Ray it started)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log1.close()
    time.sleep(2)  # let the orphaned Ray workers notice their raylet is gone
    first_dir = next(p for p in exp_dir.iterdir() if p.is_dir() and done_first in p.name)
    before = (first_dir / "result.json").read_bytes()
    before_ckpts = sorted(p.name for p in (exp_dir / "trains" / f"trial-{done_first}").glob("checkpoint-*"))
    assert before and before_ckpts

    run2 = subprocess.run([sys.executable, str(JOB), "--config", str(cfg_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run2.returncode == 0, run2.stdout[-3000:] + run2.stderr[-3000:]
    assert "(resumed)" in run2.stdout
    results = json.loads((exp_dir / "results.json").read_text())
    assert results["restored"] is True
    assert {t["status"] for t in results["trials"]} == {"done"} and len(results["trials"]) == 2
    # the trial that had finished was not run again: same results, no new Train checkpoint
    assert (first_dir / "result.json").read_bytes() == before
    assert sorted(p.name for p in (exp_dir / "trains" / f"trial-{done_first}").glob("checkpoint-*")) == before_ckpts
    assert f"start {done_first}" not in run2.stdout
