"""A pretraining run's per-epoch exports, read back: ``epoch_records(storage_path, name)``.

The loop (``glocon.train.loop``) writes ``<storage_path>/<name>/epochs/epoch-<EEEE>/{prior.pt,
metrics.json}`` at each epoch end; the probe (``glocon.probe.run``: a run's priors against epoch)
and the sweep helper read them here. This module imports no training code, so the probe, which
the loop runs at epoch ends, can read a run without importing the loop
(``tests/test_import_graph.py``). ``glocon.train.pretrain`` re-exports both names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glocon.train.checkpoint import METRICS, PRIOR


@dataclass
class EpochRecord:
    epoch: int
    metrics: dict[str, Any]
    prior_path: Path


def epoch_records(storage_path: str | os.PathLike, name: str) -> list[EpochRecord]:
    """Finished epochs of a run: metrics + the path of that epoch's prior export, in epoch order."""
    root = Path(storage_path).expanduser().resolve() / name / "epochs"
    out = []
    for d in sorted(root.glob("epoch-*")):
        if (d / PRIOR).is_file() and (d / METRICS).is_file():
            out.append(EpochRecord(int(d.name.split("-")[1]), json.loads((d / METRICS).read_text()), d / PRIOR))
    return out
