"""Ending the Ray processes a test started, and only those.

``ray stop`` kills every Ray process on the machine (other users' clusters and this test
session's own Ray included), so tests that start a cluster in a subprocess end exactly the
processes whose command line names that cluster's temp dir, by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def pids_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text`` (read from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry))
    return pids


def stop_processes_naming(temp: Path) -> None:
    """SIGTERM, then SIGKILL, every process naming ``temp``; waits up to 5 s for the first round
    (a Ray head's processes that end on SIGTERM do so in 1-2 s; the rest ignored it for the whole
    15 s this used to wait) and 15 s for the second."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 15)):
        pids = pids_naming(str(temp))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while pids and time.time() < deadline and pids_naming(str(temp)):
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_head(temp: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A Ray head on 127.0.0.1 with free ports and its own temp dir, started in ``cwd`` with ``env``
    (default: this process's), so its workers see that folder and environment, as a job's own
    local Ray would. Yields the environment in which ``ray job`` commands reach its job server and
    jobs join it (``RAY_ADDRESS``). Ends exactly its own processes."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    port, dash = free_port(), free_port()
    start = [
        str(venv_bin / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
        "--port", str(port), "--dashboard-port", str(dash), "--temp-dir", str(temp), "--num-cpus", "2",
        "--include-dashboard", "true", "--disable-usage-stats",
        # Other Ray heads may run on this machine: give every fixed-default port a free one.
        *[arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                           "--metrics-export-port", "--ray-client-server-port", "--node-manager-port", "--object-manager-port")
          for arg in (flag, str(free_port()))],
    ]  # fmt: skip
    try:
        subprocess.run(start, cwd=cwd, env=env, check=True, capture_output=True, timeout=180)
        # what the README exports: the job server `ray job submit` talks to (here on a free port)
        yield dict(env, RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dash}", RAY_ADDRESS=f"127.0.0.1:{port}")
    finally:
        stop_processes_naming(temp)
        shutil.rmtree(temp, ignore_errors=True)
