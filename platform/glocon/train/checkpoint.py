"""Pretraining checkpoints: one folder per checkpoint, plain tensors, atomic files.

``state.pt`` (rank 0): model, momentum twin, both queues, optimizer, scheduler, AMP scaler, step,
epoch and the config; ``rng-rank<r>.pt`` (every rank): that worker's torch / CUDA / numpy /
Python RNG states; ``prior.pt`` (epoch ends): a prior-extractor export plugins can load;
``metrics.json``: the metrics reported with it. Everything loads with
``torch.load(weights_only=True)``; nothing is pickled code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from glocon.errors import CheckpointError
from glocon.io import atomic_open
from glocon.safeload import load_weights_only

STATE = "state.pt"
PRIOR = "prior.pt"
METRICS = "metrics.json"
STATE_FORMAT = "glocon.pretrain_state/v1"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def save_tensors(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load_tensors(path: str | os.PathLike) -> dict[str, Any]:
    return load_weights_only(path, "checkpoint")


def stamped(state: dict[str, Any]) -> dict[str, Any]:
    """A pretraining state as written: stamped with ``STATE_FORMAT``, which ``load_state`` checks."""
    return {"format": STATE_FORMAT, **state}


def save_state(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    return save_tensors(Path(folder) / STATE, stamped(state))


def load_state(folder: str | os.PathLike) -> dict[str, Any]:
    state = load_tensors(Path(folder) / STATE)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"checkpoint {Path(folder) / STATE}: expected format {STATE_FORMAT!r}, got {state.get('format')!r}")
    missing = [k for k in ("model", "twin", "queue_global", "queue_local", "optimizer", "scheduler", "step", "epoch") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {Path(folder) / STATE}: missing {missing}")
    return state


_NAME = re.compile(r"^checkpoint-step(\d+)(?:-r(\d+))?$")


def checkpoint_order(folder: Path) -> tuple[int, int]:
    """Sort key of a checkpoint folder: (step, attempt); ``-r<k>`` marks a later attempt's folder."""
    m = _NAME.match(Path(folder).name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, -1)


def _step_of(folder: Path) -> int:
    return checkpoint_order(folder)[0]


class CheckpointNames:
    """The folder name of each checkpoint this attempt writes: ``checkpoint-step<NNNNNNNN>``, or
    ``...-r<k>`` when an earlier attempt left a folder of that name.

    A run that resumed from an older checkpoint because the newest one was damaged
    (``load_resumable``) trains through the damaged one's step again. Reported under the same
    name, the new checkpoint lands in the damaged one's folder, and Ray Train, which still counts
    the damaged one, deletes that folder when retention (``num_to_keep``) drops it: the newest
    checkpoint vanishes, and the next resume fails with Ray's "Path not found". The folders are
    listed once, when the worker starts (before any of this attempt's checkpoints exist), so every
    rank derives the same names. Remote storage is not listed (its runs never fall back)."""

    def __init__(self, run_dir: str | os.PathLike | None) -> None:
        folder = Path(run_dir) if run_dir is not None else None
        self.taken = {p.name for p in folder.glob("checkpoint-step*")} if folder is not None and folder.is_dir() else set()

    def __call__(self, step: int) -> str:
        name, k = f"checkpoint-step{step:08d}", 0
        while name in self.taken:
            k += 1
            name = f"checkpoint-step{step:08d}-r{k}"
        return name


def load_resumable(
    folder: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    warn: Callable[[str], object] = print,
    loader: Callable[[Path], dict[str, Any]] = load_state,
) -> tuple[dict[str, Any], Path]:
    """The state of ``folder`` (the checkpoint Ray hands back), or, when that one is damaged (a
    truncated ``state.pt`` after a crash or a full disk), of the newest older
    ``checkpoint-step*`` folder of the same run that loads. Each skipped file is named through
    ``warn``; when none loads, the error names every file tried. Returns (state, folder used).

    ``loader`` reads and validates one checkpoint folder, raising ``CheckpointError`` naming the
    file; pretraining uses ``load_state``, the few-shot fit its own state format."""
    folder = Path(folder)
    candidates = [folder]
    if run_dir is not None and Path(run_dir).is_dir():
        older = [p for p in Path(run_dir).glob("checkpoint-step*") if p.is_dir() and _step_of(p) < _step_of(folder)]
        candidates += sorted(older, key=checkpoint_order, reverse=True)
    errors = []
    for candidate in candidates:
        try:
            return loader(candidate), candidate
        except CheckpointError as exc:
            errors.append(str(exc))
            warn(f"skipping damaged checkpoint: {exc}")
    raise CheckpointError("no loadable checkpoint; tried:\n  " + "\n  ".join(errors))


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain tensors and ints (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
