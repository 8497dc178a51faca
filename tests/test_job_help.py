"""Every job answers -h with its docstring (and, for a config model, its keys), exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = sorted(p.name for p in (REPO / "jobs").glob("*.py"))


@pytest.fixture(scope="module")
def answers():
    """Every job's ``-h``, all started at once: each spends ~5 s importing torch and Ray before it
    can print its config keys, and on 2 cores nine of them side by side take half the time of one
    after another. The test per job then waits for its own."""
    procs = {job: subprocess.Popen([sys.executable, str(REPO / "jobs" / job), "-h"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for job in JOBS}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("job", JOBS)
def test_every_job_answers_help(job, answers):
    stdout, stderr = answers[job].communicate(timeout=120)
    assert answers[job].returncode == 0, stderr
    assert "usage" in stdout.lower() or "python jobs/" in stdout, stdout[:500]
