"""Ending the Ray processes a test started, and only those.

``ray stop`` kills every Ray process on the machine (other users' clusters and this test
session's own Ray included), so tests that start a cluster in a subprocess end exactly the
processes whose command line names that cluster's temp dir, by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


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
    """SIGTERM, then SIGKILL, every process naming ``temp``; waits up to 15 s for each round."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = pids_naming(str(temp))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + 15
        while pids and time.time() < deadline and pids_naming(str(temp)):
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
