"""Every job answers -h with its docstring (and, for a config model, its keys), exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "jobs").glob("*.py")))
def test_every_job_answers_help(job):
    done = subprocess.run([sys.executable, str(REPO / "jobs" / job), "-h"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower() or "python jobs/" in done.stdout, done.stdout[:500]
