"""``make_shards`` for test modules that must not start Ray in the pytest process.

Each shard task (``build_shard``, what a Ray task runs) is run here first; ``make_shards`` then
finds every shard done, starts no Ray, and writes the manifest as it always does.
"""

from __future__ import annotations

from glocon.data.layouts import open_layout_classes
from glocon.data.shards import BuildSpec, Manifest, ShardsConfig, build_shard, make_shards_from_records, plan_shards, resolve_paths


def make_shards_in_process(cfg: ShardsConfig) -> Manifest:
    cfg = resolve_paths(cfg)
    records, classes = open_layout_classes(cfg.data)
    plans, _ = plan_shards(records, cfg)
    spec = BuildSpec.from_config(cfg)
    for plan in plans:
        build_shard(plan, cfg.out_dir, spec)
    return make_shards_from_records(records, cfg, dashboard=False, classes=classes)
