"""Reading shards for the bank: a thin seam over the one shard reader, ``glocon.data.readers``.

The bank reads nothing itself: folders and manifests go through ``readers.shard_urls``, whole
shards through ``readers.stream_samples`` and single samples through ``shardindex.read_sample``,
so it decodes with the one sample schema and verifies each shard against its manifest like every
other reader. What is the bank's own is only the spec syntax: a glob or comma-separated tars.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator

from glocon.data import readers, shardindex
from glocon.data.schema import Sample
from glocon.errors import DataError
from glocon.paths import resolve


def shard_urls(spec: str) -> list[str]:
    """A folder of *.tar, a glob, a shard manifest (JSON), a single tar, or comma-separated tars -> sorted paths."""
    if not spec:
        raise DataError("shards: empty; expected a folder of .tar shards, a glob, a manifest or tar paths")
    # every part resolved like any job path: against $GLOCON_SUBMIT_DIR under `ray job submit` (glocon.paths)
    parts = [resolve(s.strip(), "shards") for s in spec.split(",") if s.strip()]
    if len(parts) > 1:
        urls = parts
    elif any(c in parts[0] for c in "*?["):
        urls = sorted(glob.glob(parts[0]))
    elif parts[0].endswith(".tar"):
        urls = parts
    else:
        return readers.shard_urls(parts[0])  # folder or manifest: the manifest's order, empty shards left out
    missing = [u for u in urls if not os.path.isfile(u)]
    if not urls or missing:
        raise DataError(f"shards {spec!r}: no shard file found{f' ({missing[0]} is missing)' if missing else ''}; expected .tar shards")
    return [str(Path(u).resolve()) for u in urls]


def iter_shard(url: str) -> Iterator[Sample]:
    """Every sample of one tar, in file order, decoded by the schema (errors name shard/key/field)."""
    # one shard, read whole: no splitting by rank or DataLoader worker (the bank splits by shard itself)
    yield from readers.stream_samples([url], split_by_node=False, split_by_worker=False)


def find_sample(url: str, key: str) -> Sample:
    """The sample ``key`` (its meta key or tar key) in shard ``url``: random access, verified."""
    return shardindex.read_sample(url, key)
