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


def save_state(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    return save_tensors(Path(folder) / STATE, {"format": STATE_FORMAT, **state})


def load_state(folder: str | os.PathLike) -> dict[str, Any]:
    state = load_tensors(Path(folder) / STATE)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"checkpoint {Path(folder) / STATE}: expected format {STATE_FORMAT!r}, got {state.get('format')!r}")
    missing = [k for k in ("model", "twin", "queue_global", "queue_local", "optimizer", "scheduler", "step", "epoch") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {Path(folder) / STATE}: missing {missing}")
    return state


def _step_of(folder: Path) -> int:
    digits = "".join(ch for ch in folder.name if ch.isdigit())
    return int(digits) if digits else -1


def load_resumable(
    folder: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    warn: Any = print,
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
        candidates += sorted(older, key=_step_of, reverse=True)
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
