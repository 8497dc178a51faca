"""``make_shards`` for test modules that must not start Ray in the pytest process.

Each shard task (``build_shard``, what a Ray task runs) is run here first, in the folder
``make_shards`` will build in (``build_folder``: ``out_dir``, or its staging sibling when
``overwrite`` replaces another configuration); ``make_shards`` then finds every shard done,
starts no Ray, and writes the manifest as it always does.
"""

from __future__ import annotations

from pathlib import Path

from glocon.config import save_resolved
from glocon.data.layouts import open_layout_classes
from glocon.data.manifest import Manifest
from glocon.data.shardfolder import build_folder
from glocon.data.shardplan import BuildSpec, ShardsConfig, plan_shards
from glocon.data.shards import make_shards_from_records, resolve_paths
from glocon.data.shardtask import build_shard


def make_shards_in_process(cfg: ShardsConfig) -> Manifest:
    cfg = resolve_paths(cfg)
    records, classes = open_layout_classes(cfg.data)
    return make_records_in_process(records, cfg, classes)


def make_records_in_process(records, cfg: ShardsConfig, classes=None) -> Manifest:
    """``make_shards_from_records`` with every shard task run here first (no Ray)."""
    cfg = resolve_paths(cfg)
    plans, _ = plan_shards(records, cfg)
    spec = BuildSpec.from_config(cfg)
    folder = build_folder(cfg, Path(cfg.out_dir))
    save_resolved(cfg, folder)  # as make_shards does before its first task: the staging folder is then resumed
    for plan in plans:
        build_shard(plan, str(folder), spec)
    return make_shards_from_records(records, cfg, dashboard=False, classes=classes)
