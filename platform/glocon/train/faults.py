"""Fault injection for drills: SIGKILL one Ray Train worker once, at a step, after a checkpoint.

Shared by the pretraining loop and the few-shot fit loop, so both drills kill the same way.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from glocon.config import GloconModel


class FaultSection(GloconModel):
    """Tests only: kill rank ``kill_rank`` at ``kill_at_step``, once (``marker`` remembers it happened)."""

    kill_at_step: int | None = None
    kill_rank: int = 1
    marker: str | None = None


def maybe_die(fault: FaultSection, step: int, rank: int) -> None:
    if fault.kill_at_step is None or step != fault.kill_at_step or rank != fault.kill_rank or not fault.marker:
        return
    if os.path.exists(fault.marker):
        return
    import ray.train

    # Die only once the last report's checkpoint is committed: a worker that dies while Ray Train
    # still processes its last report loses that checkpoint (the restart then goes back further).
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=60)
    Path(fault.marker).parent.mkdir(parents=True, exist_ok=True)
    Path(fault.marker).write_text(f"killed rank {rank} at step {step} pid {os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
