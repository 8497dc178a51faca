"""The plan of a shard set: ``ShardsConfig``, and which records go into which shard.

The plan is a pure function of the sorted records: shard ``i`` holds ``records[i*n:(i+1)*n]``.
Each shard's fingerprint hashes its records, everything a task needs besides them (``BuildSpec``)
and the writer's version, so a done-record (``glocon.data.shardtask``) is reused only for the very
same shard.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import Field, field_validator

from glocon.config import GloconModel
from glocon.data.layouts import LayoutConfig
from glocon.data.manifest import Rejection
from glocon.data.record import Record
from glocon.data.schema import tar_key
from glocon.data.superpixels import SuperpixelConfig
from glocon.errors import DataError
from glocon.raycluster import RayConfig

# Bumped whenever the bytes a task writes for the same input change (invalidates done-records).
# 2: images smaller than longest_side are no longer upscaled (ShardsConfig.upscale).
WRITER_VERSION = 2
_PREFIX_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class ShardsConfig(GloconModel):
    """Config of ``jobs/make_shards.py``."""

    data: LayoutConfig = LayoutConfig()
    out_dir: str = "runs/shards"
    prefix: str = "shard"
    samples_per_shard: int = Field(256, gt=0)
    longest_side: int = Field(473, ge=8)  # 473: PFENet's and QGNet's training crop; larger images shrink to it
    upscale: bool = False  # true: smaller images (and their masks) are enlarged to longest_side too
    min_side: int = Field(8, ge=1)  # smaller images are rejected: too small for superpixels
    jpeg_quality: int = Field(95, ge=1, le=100)
    superpixels: SuperpixelConfig = SuperpixelConfig()
    strict: bool = False  # true: bad input is a DataError instead of a rejection
    overwrite: bool = False  # true: replace the shards of another configuration in out_dir (see the module doc)
    ray: RayConfig = RayConfig()
    parallelism: int | None = Field(None, gt=0)  # shard tasks in flight; None: 2 x the cluster's CPUs

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_file_stem(cls, v: str) -> str:
        if not _PREFIX_OK.match(v):
            raise ValueError(f"prefix {v!r} must be letters, digits, '_' or '-' (it names files)")
        return v


@dataclass(frozen=True)
class BuildSpec:
    """What a task needs besides its records (all of it goes into the fingerprint)."""

    longest_side: int
    min_side: int
    jpeg_quality: int
    superpixels: dict[str, Any]
    layout: dict[str, Any]
    upscale: bool = False

    @classmethod
    def from_config(cls, cfg: ShardsConfig) -> "BuildSpec":
        d = cfg.data
        layout = {"layout": d.layout, "coco_format": d.coco_format}
        if d.layout == "embedded":
            layout["embedded"] = d.embedded.model_dump(mode="json", exclude={"cache_dir"})
        if d.layout == "semantic":  # the id mapping decides the mask bytes
            layout.update(class_names=d.class_names, background_id=d.background_id, void_ids=list(d.void_ids))
        return cls(cfg.longest_side, cfg.min_side, cfg.jpeg_quality, cfg.superpixels.model_dump(mode="json"), layout, cfg.upscale)


@dataclass(frozen=True)
class ShardPlan:
    index: int
    name: str
    records: tuple[Record, ...]
    fingerprint: str


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def plan_shards(records: Sequence[Record], cfg: ShardsConfig) -> tuple[list[ShardPlan], list[Rejection]]:
    """Sorted records -> shard plans (shard i = records[i*n:(i+1)*n]) and the keys refused up front.

    A key that collides with an earlier one after ``tar_key`` sanitising (``a/b`` and ``a_b``)
    cannot live in one tar, so the later one is rejected rather than silently merged.
    """
    ordered = sorted(records, key=lambda r: r.key)
    kept: list[Record] = []
    refused: list[Rejection] = []
    by_tar_key: dict[str, Record] = {}
    for r in ordered:
        tk = tar_key(r.key)
        if tk in by_tar_key:
            first = by_tar_key[tk]
            if first.key == r.key:
                raise DataError(f"layout {cfg.data.layout}: key {r.key!r} appears twice ({first.source} and {r.source})")
            reason = f"{r.source}: key {r.key!r} collides with {first.key!r} ({first.source}) as tar key {tk!r}"
            refused.append(Rejection(key=r.key, path=r.source, reason=reason))
            continue
        by_tar_key[tk] = r
        kept.append(r)
    spec = BuildSpec.from_config(cfg)
    n = cfg.samples_per_shard
    plans = []
    for i in range(0, len(kept), n):
        chunk = tuple(kept[i : i + n])
        idx = i // n
        plans.append(ShardPlan(idx, shard_name(cfg.prefix, idx), chunk, _fingerprint(spec, idx, chunk)))
    return plans, refused


def _fingerprint(spec: BuildSpec, index: int, records: Sequence[Record]) -> str:
    blob = json.dumps(
        {
            "writer": WRITER_VERSION,
            "index": index,
            "spec": spec.__dict__,
            "records": [[r.key, r.source, r.layout] for r in records],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
