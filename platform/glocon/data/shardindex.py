"""Random access to shards by key, for few-shot episodes: ``ShardIndex`` and ``read_sample``.

A tar's headers are scanned once (``scan_tar``); a read then seeks to the sample's members and
decodes them with ``glocon.data.schema.decode_sample``, as the stream does
(``glocon.data.readers``, whose module doc says why). Hostile tars are refused the same way: a
member whose name is absolute or contains ``..``, or a truncated tar, is a ``DataError`` naming the
shard. With ``verify=True`` (the default) a shard's sha256 is checked against the manifest
(``glocon.data.verify``) before a sample is read from it.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

from glocon.data.manifest import MANIFEST_NAME, Manifest, ShardEntry
from glocon.data.readers import check_tar_end, unsafe_member
from glocon.data.schema import Sample, decode_sample, tar_key
from glocon.data.verify import check_shard, expected_shas
from glocon.errors import DataError


def scan_tar(path: str | os.PathLike) -> dict[str, dict[str, tuple[int, int]]]:
    """Read the headers of a tar once: {tar key: {member suffix: (data offset, size)}}.

    Refuses absolute or ``..`` member names and truncated archives (DataError naming the shard).
    """
    from webdataset.tariterators import base_plus_ext

    p = Path(path)
    check_tar_end(p)
    size = p.stat().st_size
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(p, mode="r:") as tf:
            for info in tf:
                if unsafe_member(info.name):
                    raise DataError(f"shard {p}: tar member {info.name!r} has an absolute path or '..' (refused)")
                if not info.isreg():
                    continue
                if info.offset_data + info.size > size:
                    raise DataError(f"shard {p}: truncated tar (member {info.name!r} runs past the end of the file)")
                key, suffix = base_plus_ext(info.name)
                if key is None:
                    continue
                members = samples.setdefault(key, {})
                if suffix in members:
                    raise DataError(f"shard {p}: member {info.name!r} appears twice")
                members[suffix] = (info.offset_data, info.size)
    except tarfile.TarError as exc:
        raise DataError(f"shard {p}: truncated or corrupt tar ({exc})") from None
    return samples


class ShardIndex:
    """Random access by key over the shards of a manifest (headers scanned once, reads seek).

    ``verify`` (default): a shard's sha256 is checked against the manifest before the first
    sample is read from it in a process (``glocon.data.verify``: cached by path, size and mtime).
    Holds no open files, so it can be pickled to Ray or DataLoader workers (which check again,
    once, in their own process).
    """

    def __init__(self, manifest_or_dir: str | os.PathLike | Manifest, verify: bool = True):
        self.manifest = manifest_or_dir if isinstance(manifest_or_dir, Manifest) else Manifest.load(manifest_or_dir)
        self.verify = verify
        self._loc: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}
        self._sha: dict[str, str] = {}
        self._keys: list[str] = []
        for entry in self.manifest.shards:
            self._index_shard(entry)

    def _index_shard(self, entry: ShardEntry) -> None:
        path = self.manifest.shard_path(entry.name)
        if not path.is_file():
            raise DataError(f"shard {path}: missing (listed in {self.manifest.root / MANIFEST_NAME})")
        members = scan_tar(path)
        actual = path.stat().st_size
        if actual != entry.bytes:
            raise DataError(
                f"shard {path}: {actual} bytes, the manifest says {entry.bytes} (truncated or replaced; rerun make_shards)"
            )
        if len(members) != entry.count:
            raise DataError(f"shard {path}: holds {len(members)} samples, the manifest says {entry.count}")
        self._sha[str(path)] = entry.sha256
        for key in entry.keys:
            tk = tar_key(key)
            if tk not in members:
                raise DataError(f"shard {path}: sample {key!r} (tar key {tk!r}) listed in the manifest is missing")
            self._loc[tk] = (str(path), members[tk])
            self._keys.append(key)

    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and tar_key(key) in self._loc

    @property
    def class_index(self) -> dict[int, list[str]]:
        """class id -> keys of the samples where the class covers >= min_class_pixels."""
        return self.manifest.classes

    def shard_of(self, key: str) -> str:
        return self._locate(key)[0]

    def _locate(self, key: str) -> tuple[str, dict[str, tuple[int, int]]]:
        try:
            return self._loc[tar_key(key)]
        except KeyError:
            raise KeyError(f"sample {key!r} is not in the shards of {self.manifest.root}") from None

    def get(self, key: str) -> Sample:
        path, members = self._locate(key)
        if self.verify:
            check_shard(path, self._sha[path], self.manifest.root / MANIFEST_NAME)
        return _read_sample(path, key, members)

    def __getitem__(self, key: str) -> Sample:
        return self.get(key)

    def meta(self, key: str) -> dict[str, Any]:
        """The sample's ``json`` member alone (its classes, size, source), without decoding the
        image: what episode sampling reads for every candidate. Verified like ``get``."""
        path, members = self._locate(key)
        if self.verify:
            check_shard(path, self._sha[path], self.manifest.root / MANIFEST_NAME)
        if "json" not in members:
            return {}
        offset, size = members["json"]
        with open(path, "rb") as fh:
            fh.seek(offset)
            return json.loads(fh.read(size).decode("utf-8"))


def _read_sample(path: str, key: str, members: dict[str, tuple[int, int]]) -> Sample:
    """Decode sample ``key`` from the member offsets ``scan_tar`` found in shard ``path``."""
    raw: dict[str, Any] = {"__key__": tar_key(key), "__url__": path}
    try:
        with open(path, "rb") as fh:
            for suffix, (offset, size) in sorted(members.items(), key=lambda kv: kv[1][0]):
                fh.seek(offset)
                data = fh.read(size)
                if len(data) != size:
                    raise DataError(f"shard {path}: truncated tar (sample {key!r}, field {suffix!r} cut short)")
                raw[suffix] = data
    except OSError as exc:
        raise DataError(f"shard {path}: cannot read sample {key!r} ({exc})") from None
    sample = decode_sample(raw, shard=path)
    if sample.key != key and tar_key(sample.key) != tar_key(key):
        raise DataError(f"shard {path}, sample {key!r}, field 'json': key is {sample.key!r}")
    return sample


def read_sample(url: str | os.PathLike, key: str, verify: bool = True) -> Sample:
    """One sample of one shard by key (headers scanned, then a seek), verified like the stream:
    against the manifest of the shard's folder when it has one."""
    path = str(url)
    if verify:
        for shard, (sha, manifest) in expected_shas([path]).items():
            check_shard(shard, sha, manifest)
    members = scan_tar(path).get(tar_key(key))
    if members is None:
        raise DataError(f"shard {path}: no sample with key {key!r}")
    return _read_sample(path, key, members)
