"""What the sweep tests share: small coco128 shards, a sweep config, Tune's trial states."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "sweep.py"

OBJECTIVE_FOLD = 1  # COCO-20i fold 1: person (class 1) is a base class, so coco128 has episodes


def make_sweep_shards(coco128: Path, root: Path, in_process: bool = False) -> dict[str, Path]:
    """8 train2017 photos for pretraining, 24 val2017 photos for the objective; 64 px (uses Ray,
    or with ``in_process`` the same shards built in the pytest process: no Ray to start)."""
    from glocon.config import validate_config
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards

    from inprocess_shards import make_shards_in_process

    out = {}
    for name, split, n in (("pre", "train2017", 8), ("obj", "val2017", 24)):
        cfg = validate_config(ShardsConfig, {
            "data": {"layout": "coco", "root": str(coco128), "split": split, "coco_format": "semantic_png", "limit": n},
            "out_dir": str(root / name), "samples_per_shard": 4, "longest_side": 64,
        })
        if in_process:
            make_shards_in_process(cfg)
        else:
            make_shards(cfg, dashboard=False)
        out[name] = root / name
    return out


def sweep_dict(shards: dict, storage: Path, name: str, **extra) -> dict:
    d = {
        "name": name,
        "storage_path": str(storage),
        "pretrain": str(REPO / "configs" / "pretrain-demo.yaml"),
        "pretrain_overrides": [
            "epochs=1", "batch_size=4", "num_workers=1", f"data.shards={shards['pre']}", "data.image_size=64",
            "data.shuffle_buffer=8", "loss.queue_global=64", "loss.queue_local=256", "checkpoint.every_steps=1000",
            "max_failures=0",
        ],
        "space": {"tau": [0.1, 0.3], "patch_method": ["slic", "fh"]},
        "objective": {
            "plugin": "proto",
            "config": {
                "data": {"shards": str(shards["obj"]), "benchmark": "coco", "folds": [OBJECTIVE_FOLD]},
                "image_size": 64,
                "device": "cpu",
                "objective": {"fold": OBJECTIVE_FOLD, "episodes": 6, "shots": 1},
            },
        },
        "resources": {"workers_per_trial": 1, "driver_cpus": 1, "max_concurrent_trials": 1},
        "dashboard": False,
    }
    for k, v in extra.items():
        d[k] = v
    return d


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def trial_statuses(exp_dir: Path) -> dict[str, str]:
    """trial id -> Tune status, from the newest experiment_state file Tune wrote."""
    files = sorted(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for t in data["trial_data"]:
        info = json.loads(t[0])
        out[info["trial_id"]] = info["status"]
    return out
