"""Stages that remember what they made and from which config.

A stage is skipped on rerun when its record (``<root>/stages/<name>.json``) has the same
config hash and every output it listed still exists. Downstream stages put their inputs'
hashes into their own config, so a change upstream reruns everything after it and nothing
before it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from glocon.io import atomic_write_json


def config_hash(config: object) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageResult:
    name: str
    outputs: dict[str, str]
    wall_s: float
    reused: bool
    info: dict[str, Any] = field(default_factory=dict)


def stage_record(root: str | Path, name: str) -> Path:
    return Path(root) / "stages" / f"{name}.json"


def run_stage(root: str | Path, name: str, config: object, fn: Callable[[], dict[str, Any]]) -> StageResult:
    """Run ``fn`` unless a finished record with the same config exists. ``fn`` returns
    ``{"outputs": {label: path}, **info}``; outputs must exist when it returns."""
    record = stage_record(root, name)
    digest = config_hash(config)
    if record.is_file():
        try:
            old = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("config_hash") == digest and old.get("outputs") and all(Path(p).exists() for p in old["outputs"].values()):
            return StageResult(name, old["outputs"], float(old.get("wall_s", 0.0)), True, old.get("info", {}))
    t0 = time.perf_counter()
    produced = fn()
    wall = time.perf_counter() - t0
    outputs = {k: str(v) for k, v in produced.pop("outputs", {}).items()}
    missing = [p for p in outputs.values() if not Path(p).exists()]
    if missing:
        raise RuntimeError(f"stage {name!r} finished but did not produce {missing}")
    atomic_write_json(record, {"name": name, "config_hash": digest, "config": config, "outputs": outputs, "wall_s": wall, "info": produced})
    return StageResult(name, outputs, wall, False, produced)
