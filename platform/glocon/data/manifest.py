"""The shard manifest: what ``make_shards`` wrote, ``manifest.json`` beside the shards.

Every shard with its sample count and sha256, the class -> sample keys index (PFENet's rule: a
class counts for an image when it covers ``data.min_class_pixels`` pixels at the image's original
resolution) with a digest per class that every load checks, the rejected inputs, totals and the
resolved config. ``Manifest.load(dir_or_file)`` validates it; its errors name the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError

from glocon.config import GloconModel
from glocon.data.layouts import ClassTable
from glocon.errors import DataError
from glocon.io import atomic_write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class ShardEntry(GloconModel):
    name: str
    count: int = Field(ge=0)
    sha256: str
    bytes: int = Field(ge=0)
    keys: list[str]


class Rejection(GloconModel):
    key: str
    path: str
    reason: str
    shard: str | None = None


class Manifest(GloconModel):
    """What ``make_shards`` wrote. ``Manifest.load(dir_or_file)`` validates it."""

    version: int = MANIFEST_VERSION
    prefix: str
    members: list[str]
    min_class_pixels: int
    shards: list[ShardEntry]
    classes: dict[int, list[str]]  # class id -> keys of the samples where it counts
    rejected: list[Rejection]
    totals: dict[str, int]
    config: dict[str, Any]
    # how the layout's own class ids became the ids in the masks, with class names (coco, semantic)
    class_table: ClassTable | None = None
    # class id -> sha256 of its entry in ``classes``, written by ``save``: an index edited or damaged
    # afterwards would draw few-shot episodes of one class from images of another. None: written
    # before this field existed, read unchecked.
    class_digests: dict[int, str] | None = None
    _root: Path | None = PrivateAttr(default=None)

    @property
    def root(self) -> Path:
        if self._root is None:
            raise DataError("manifest has no folder: load it with Manifest.load(path)")
        return self._root

    def shard_path(self, name: str) -> Path:
        return self.root / name

    def urls(self, include_empty: bool = False) -> list[str]:
        """Absolute shard paths in order (empty shards skipped: they would skew split_by_node)."""
        return [str(self.shard_path(s.name)) for s in self.shards if include_empty or s.count > 0]

    def keys(self) -> list[str]:
        return [k for s in self.shards for k in s.keys]

    def summary(self, max_rejected: int = 20) -> str:
        t = self.totals
        lines = [
            f"{t['shards']} shards, {t['samples']} samples of {t['records']} records, "
            f"{t['rejected']} rejected, {len(self.classes)} classes indexed -> {self.root / MANIFEST_NAME}"
        ]
        if self.class_table is not None:
            lines.append(self.class_table.describe())
        for r in self.rejected[:max_rejected]:
            lines.append(f"  rejected {r.path} ({r.key}): {r.reason}")
        if len(self.rejected) > max_rejected:
            lines.append(f"  ... and {len(self.rejected) - max_rejected} more (see {MANIFEST_NAME})")
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike) -> Path:
        self.class_digests = class_digests(self.classes)
        path = atomic_write_json(Path(out_dir) / MANIFEST_NAME, self.model_dump(mode="json"))
        self._root = Path(out_dir).resolve()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """``path``: a shard folder or its manifest.json. Errors name the file and the field."""
        p = Path(path)
        if p.is_dir():
            p = p / MANIFEST_NAME
        if not p.is_file():
            raise DataError(f"no shard manifest at {p} (expected the {MANIFEST_NAME} that make_shards writes)")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"shard manifest {p}: not readable JSON ({exc})") from None
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"field {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
            raise DataError(f"shard manifest {p}: {problems}") from None
        manifest._root = p.parent.resolve()
        manifest._check(p)
        return manifest

    def _check(self, p: Path) -> None:
        if self.version != MANIFEST_VERSION:
            raise DataError(f"shard manifest {p}: field 'version' is {self.version}, expected {MANIFEST_VERSION}")
        seen: set[str] = set()
        for i, s in enumerate(self.shards):
            if Path(s.name).name != s.name or s.name.startswith("."):
                raise DataError(f"shard manifest {p}: field 'shards.{i}.name' {s.name!r} is not a plain file name")
            if s.count != len(s.keys):
                raise DataError(f"shard manifest {p}: field 'shards.{i}.count' is {s.count} but it lists {len(s.keys)} keys")
            dup = seen.intersection(s.keys)
            if dup:
                raise DataError(f"shard manifest {p}: key {sorted(dup)[0]!r} appears in more than one shard")
            seen.update(s.keys)
        for cid, keys in self.classes.items():
            unknown = [k for k in keys if k not in seen]
            if unknown:
                raise DataError(f"shard manifest {p}: field 'classes.{cid}' names key {unknown[0]!r} that no shard holds")
        if self.totals.get("samples") != len(seen):
            raise DataError(f"shard manifest {p}: field 'totals.samples' is {self.totals.get('samples')}, the shards hold {len(seen)}")
        if self.class_digests is not None:
            now = class_digests(self.classes)
            for cid in sorted(set(now) | set(self.class_digests)):
                if now.get(cid) != self.class_digests.get(cid):
                    what = ("is not in the index" if cid not in now else "is not in 'class_digests'" if cid not in self.class_digests
                            else "lists other keys than make_shards wrote")
                    raise DataError(
                        f"shard manifest {p}: field 'classes.{cid}' {what} (its digest in 'class_digests' does not match): "
                        "the class index was edited or damaged; rebuild it with make_shards"
                    )


def class_digests(classes: dict[int, list[str]]) -> dict[int, str]:
    """class id -> sha256 of (id, its keys in order): what ``Manifest.class_digests`` holds."""
    return {int(c): hashlib.sha256(json.dumps([int(c), keys]).encode("utf-8")).hexdigest() for c, keys in sorted(classes.items())}
