"""One way to name a set of shards: ``ShardSet.open(spec)``, for every job, reader and tool.

A spec is what configs hold (``data.shards``, ``shards``, ``probe.val_shards``, ...). Every path
in it is resolved like any job path (``glocon.paths.resolve``: against ``$GLOCON_SUBMIT_DIR``
under ``ray job submit``). The syntaxes, one example each:

- a shard folder with the ``manifest.json`` make_shards wrote: ``runs/shards/coco128``
  (the manifest's shards in its order, shards without samples left out);
- a manifest file: ``runs/shards/coco128/manifest.json`` (the same);
- a folder of plain tars without a manifest: ``runs/tars`` (its ``*.tar``, sorted);
- a single tar: ``runs/shards/coco128/shard-000003.tar``;
- a glob: ``runs/shards/coco128/shard-00000*.tar`` (the matches, sorted);
- comma-separated tars: ``runs/a/shard-000000.tar,runs/b/shard-000000.tar`` (sorted);
- in Python only, a list or tuple of tar paths: ``["a/shard-000000.tar", "b/shard-000000.tar"]``
  (the same as the comma-separated form).

``urls`` are absolute and in a stable order; ``manifest`` is the folder's manifest when the spec
names a folder with one or a manifest file, else None (a glob or tar list is not the manifest's
whole set, though each tar is still checked against its folder's manifest when read). ``count``
is the samples: the manifest's counts, else the tars' headers. ``check()`` is what preflight
checks before Ray starts; ``stream()`` and ``get(key)`` read with ``glocon.data.readers`` and
``glocon.data.shardindex``. A bad spec is a ``ShardSpecError`` (a ``DataError``) naming it and
saying what was expected.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from glocon.data.manifest import MANIFEST_NAME, Manifest
from glocon.data.readers import check_tar_end, stream_samples
from glocon.data.schema import Sample, tar_key
from glocon.data.shardindex import ShardIndex, read_sample, scan_tar
from glocon.data.verify import check_shard, expected_shas
from glocon.errors import DataError
from glocon.paths import resolve

MAKE_SHARDS = "jobs/make_shards.py"
EXPECTED = f"a shard folder or {MANIFEST_NAME}, a .tar, a glob or comma-separated .tar paths (make shards with {MAKE_SHARDS})"
REBUILD = "rerun make_shards with the same config to rebuild it"


class ShardSpecError(DataError):
    """A spec that names no shards: ``reason`` is the message without the spec (preflight names the key)."""

    def __init__(self, spec: str, reason: str):
        super().__init__(f"shards {spec}: {reason}" if spec else f"shards: {reason}")
        self.spec, self.reason = spec, reason


@dataclass(frozen=True)
class ShardSet:
    spec: str  # as given (a list joined by commas)
    urls: tuple[str, ...]  # absolute shard paths that hold samples, in a stable order
    manifest: Manifest | None = field(default=None, compare=False, repr=False)

    @classmethod
    def open(cls, spec: str | os.PathLike | Sequence[str | os.PathLike] | None) -> ShardSet:
        """The shards ``spec`` names (see the module doc); ShardSpecError when it names none."""
        if isinstance(spec, (list, tuple)):
            parts = [str(p) for p in spec]
            text = ",".join(parts)
        else:
            text = "" if spec is None else str(spec)
            whole = text.strip()  # a folder whose name has a comma is still the folder
            parts = [whole] if "," in whole and os.path.exists(resolve(whole, "shards") or whole) else [s.strip() for s in text.split(",") if s.strip()]
        if not parts:
            raise ShardSpecError("", f"empty; expected {EXPECTED}")
        parts = [resolve(p, "shards") or p for p in parts]
        one = parts[0] if len(parts) == 1 else None
        if one is not None and not one.endswith(".tar") and (os.path.exists(one) or not _is_glob(one)):
            return cls._of_path(text, Path(one))  # a folder named like a glob is still the folder
        return cls(text, _tar_files(text, parts))

    @classmethod
    def _of_path(cls, text: str, p: Path) -> ShardSet:
        """A folder (with or without a manifest) or a manifest file."""
        if p.is_file() or (p.is_dir() and (p / MANIFEST_NAME).is_file()):
            manifest = Manifest.load(p)
            urls = manifest.urls()
            if not urls:
                t = manifest.totals
                raise DataError(
                    f"shard manifest {manifest.root / MANIFEST_NAME} lists no samples ({t.get('records', 0)} inputs, "
                    f"{t.get('rejected', 0)} rejected: see its 'rejected' list, fix the inputs and rerun make_shards)"
                )
            return cls(text, tuple(urls), manifest)
        if p.is_dir():
            tars = tuple(sorted(str(t.resolve()) for t in p.glob("*.tar")))
            if not tars:
                raise ShardSpecError(text, f"no {MANIFEST_NAME} and no *.tar shards in it (make them with {MAKE_SHARDS})")
            return cls(text, tars)
        raise ShardSpecError(text, f"no such shard folder or manifest (make it with {MAKE_SHARDS} out_dir={text})")

    @cached_property
    def count(self) -> int:
        """Samples in the set: the manifest's counts, else the tars' headers (scanned once)."""
        if self.manifest is not None:
            return sum(s.count for s in self.manifest.shards)
        return sum(len(scan_tar(url)) for url in self.urls)

    @property
    def per_shard(self) -> int | None:
        """make_shards' samples_per_shard (else what the fullest shard holds); None without a manifest."""
        if self.manifest is None:
            return None
        per_shard = self.manifest.config.get("samples_per_shard")
        return per_shard if isinstance(per_shard, int) else max(s.count for s in self.manifest.shards)

    def check(self) -> None:
        """Every shard there and whole: of the manifest's size, ending like a finished tar, with its
        sha256 (``glocon.data.verify``, kept per process); a tar outside a manifest folder is only
        checked for its end. DataError naming the shard and how to repair it."""
        if self.manifest is None:
            for url in self.urls:
                check_tar_end(url)
            for url, (sha, manifest) in expected_shas(list(self.urls)).items():
                check_shard(url, sha, manifest)
            return
        listed = self.manifest.root / MANIFEST_NAME
        for entry in self.manifest.shards:
            shard = self.manifest.shard_path(entry.name)
            if not shard.is_file():
                raise DataError(f"shard {shard} listed in {listed} is missing ({REBUILD})")
            size = shard.stat().st_size
            if size != entry.bytes:
                raise DataError(f"shard {shard} is {size} bytes, {listed} says {entry.bytes} ({REBUILD})")
            try:
                check_tar_end(shard)
            except DataError as exc:
                raise DataError(f"{exc} ({REBUILD})") from None
            check_shard(shard, entry.sha256, listed)  # its message says how to rebuild it

    def stream(self, **kwargs: Any):
        """The shards as a stream of decoded samples: ``glocon.data.readers.stream_samples(urls, **kwargs)``."""
        return stream_samples(list(self.urls), **kwargs)

    @cached_property
    def index(self) -> ShardIndex:
        """Random access over the manifest's shards (headers scanned once); DataError without a manifest."""
        if self.manifest is None:
            raise DataError(f"shards {self.spec}: no {MANIFEST_NAME}, so no index by key (read with get(key))")
        return ShardIndex(self.manifest)

    def get(self, key: str) -> Sample:
        """Sample ``key`` (meta key or tar key), verified against its manifest: by the index when
        there is a manifest (KeyError for an unknown key), else by scanning the tars' headers."""
        if self.manifest is not None:
            return self.index.get(key)
        for url in self.urls:
            if tar_key(key) in scan_tar(url):
                return read_sample(url, key)
        raise DataError(f"sample {key!r} not found in {len(self.urls)} shard(s) of {self.spec} ({self.urls[0]} ...)")


def _is_glob(part: str) -> bool:
    return any(c in part for c in "*?[")


def _tar_files(text: str, parts: list[str]) -> tuple[str, ...]:
    """Tars by name or glob -> sorted absolute paths; every one must be a file."""
    urls = sorted(glob.glob(parts[0])) if len(parts) == 1 and _is_glob(parts[0]) else sorted(parts)
    missing = [u for u in urls if not os.path.isfile(u)]
    if not urls or missing:
        raise ShardSpecError(text, f"no shard file found{f' ({missing[0]} is missing)' if missing else ''}; expected .tar shards")
    return tuple(str(Path(u).resolve()) for u in urls)
