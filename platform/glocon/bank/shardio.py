"""Reading shards for the bank: a thin seam over the one shard reader.

Prefers ``glocon.data.readers`` (the project's reader) and falls back to a minimal tar walk
over ``glocon.data.schema.decode_sample`` while that module is absent, so the bank has one
decoding path (the schema's) either way.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator

from glocon.data.schema import Sample, decode_sample, tar_key
from glocon.errors import DataError

try:  # the project's reader, when present
    from glocon.data import readers as _readers
except ImportError:  # pragma: no cover - depends on what is installed beside the bank
    _readers = None


def shard_urls(spec: str) -> list[str]:
    """A folder of *.tar, a glob, a shard manifest (JSON), a single tar, or comma-separated tars -> sorted paths."""
    if not spec:
        raise DataError("shards: empty; expected a folder of .tar shards, a glob, a manifest or tar paths")
    if _readers is not None and hasattr(_readers, "shard_urls") and not any(c in spec for c in "*?[,"):
        return [str(u) for u in _readers.shard_urls(spec)]
    if "," in spec:
        urls = [s.strip() for s in spec.split(",") if s.strip()]
    elif any(c in spec for c in "*?["):
        urls = sorted(glob.glob(spec))
    elif os.path.isdir(spec):
        urls = sorted(str(p) for p in Path(spec).glob("*.tar"))
    elif spec.endswith(".json") and os.path.isfile(spec):
        urls = _manifest_urls(Path(spec))
    else:
        urls = [spec]
    missing = [u for u in urls if not os.path.isfile(u)]
    if not urls or missing:
        raise DataError(f"shards {spec!r}: no shard file found{f' ({missing[0]} is missing)' if missing else ''}; expected .tar shards")
    return urls


def _manifest_urls(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    shards = data.get("shards") if isinstance(data, dict) else None
    if not shards:
        raise DataError(f"shard manifest {path}: expected a 'shards' list")
    names = [s["path"] if isinstance(s, dict) else s for s in shards]
    return [str(p if os.path.isabs(p) else path.parent / p) for p in names]


def iter_shard(url: str) -> Iterator[Sample]:
    """Every sample of one tar, in file order, decoded by the schema (errors name shard/key/field)."""
    if _readers is not None and hasattr(_readers, "stream_samples"):
        # one shard, read whole: no splitting by rank or DataLoader worker (the bank splits by shard itself)
        yield from _readers.stream_samples([url], split_by_node=False, split_by_worker=False)
        return
    try:
        tar = tarfile.open(url, "r")
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"shard {url}: not a readable tar ({exc})") from None
    with tar:
        group: dict[str, object] = {}
        current = None
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key, _, ext = base.partition(".")  # webdataset: the key ends at the first dot
            if key != current and group:
                yield decode_sample(group, url)
                group = {}
            current = key
            group["__key__"] = key
            group[ext] = tar.extractfile(member).read()
        if group:
            yield decode_sample(group, url)


def find_sample(url: str, key: str) -> Sample:
    """The sample ``key`` (its meta key or tar key) in shard ``url``."""
    if _readers is not None and hasattr(_readers, "scan_tar"):
        # random access: scan the tar headers once, then seek to the sample's members
        members = _readers.scan_tar(url).get(tar_key(key))
        if members is None:
            raise DataError(f"shard {url}: no sample with key {key!r}")
        raw: dict[str, object] = {"__key__": tar_key(key), "__url__": url}
        with open(url, "rb") as fh:
            for suffix, (offset, size) in members.items():
                fh.seek(offset)
                raw[suffix] = fh.read(size)
        return decode_sample(raw, url)
    wanted = {key, tar_key(key)}
    for sample in iter_shard(url):
        if sample.key in wanted or tar_key(sample.key) in wanted:
            return sample
    raise DataError(f"shard {url}: no sample with key {key!r}")
