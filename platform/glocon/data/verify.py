"""Shard content against the manifest: each shard's sha256, checked once per process.

The manifest ``make_shards`` writes holds every shard's sha256. The readers check a shard the
first time they open it in a process and keep the result keyed by (path, size, mtime), so a
training run hashes each shard once per worker process, not once per pass, and a file that
changes on disk (new size or mtime) is hashed again. A mismatch is a ``DataError`` that names the
shard and says how to repair it: ``make_shards`` compares every shard with its done-record by
sha256 and rebuilds the ones that differ, byte-identical to the original.

Shards in a folder without a manifest (plain ``*.tar``) have nothing to be checked against;
they are read as they are, with one warning per folder and process.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Sequence

from glocon.data.manifest import MANIFEST_NAME, Manifest
from glocon.errors import DataError
from glocon.io import sha256_file

log = logging.getLogger(__name__)

_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the file
_manifests: dict[tuple[str, int, int], dict[str, str]] = {}  # manifest file -> {shard name: sha256}
_warned: set[str] = set()


def _stat_key(path: str | os.PathLike) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"shard {path}: cannot read ({exc})") from None
    return str(path), st.st_size, st.st_mtime_ns


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of ``path``, hashed at most once per process while its size and mtime stay the same."""
    key = _stat_key(path)
    with _lock:
        known = _hashes.get(key)
    if known is None:
        known = sha256_file(path)  # outside the lock: two threads may hash one file twice, never wrongly
        with _lock:
            _hashes[key] = known
    return known


def check_shard(path: str | os.PathLike, expected: str, manifest: str | os.PathLike) -> None:
    """Raise DataError naming the shard when its content is not what ``manifest`` recorded."""
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"shard {path}: sha256 differs from the manifest's ({manifest} says {expected[:16]}..., the file is "
            f"{actual[:16]}...): it changed after make_shards wrote it. Rerun make_shards with the same config "
            "and out_dir to rebuild it (verify=False reads it unchecked)"
        )


def manifest_shas(manifest: Path) -> dict[str, str]:
    """{shard file name: sha256} from a manifest file (the JSON read once per process and version)."""
    key = _stat_key(manifest)
    with _lock:
        known = _manifests.get(key)
    if known is None:
        known = {s.name: s.sha256 for s in Manifest.load(manifest).shards}
        with _lock:
            _manifests[key] = known
    return known


def expected_shas(urls: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{url: (sha256, manifest path)} for every local url whose folder has a manifest.

    A url that its folder's manifest does not list is an error (a stray or renamed tar beside
    real shards); urls in folders without a manifest, and remote urls, are left out.
    """
    out: dict[str, tuple[str, str]] = {}
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            continue
        path = Path(url)
        manifest = path.parent / MANIFEST_NAME
        if not manifest.is_file():
            _warn_unverified(str(path.parent))
            continue
        shas = manifest_shas(manifest)
        if path.name not in shas:
            raise DataError(
                f"shard {url}: not listed in {manifest} (expected one of its {len(shas)} shards; "
                "rerun make_shards, or read it with verify=False)"
            )
        out[url] = (shas[path.name], str(manifest))
    return out


def _warn_unverified(folder: str) -> None:
    with _lock:
        if folder in _warned:
            return
        _warned.add(folder)
    log.warning("shards in %s have no %s: their content cannot be verified", folder, MANIFEST_NAME)


def clear_cache() -> None:
    """Forget every hash (tests and benches that time a cold start)."""
    with _lock:
        _hashes.clear()
        _manifests.clear()
        _warned.clear()
