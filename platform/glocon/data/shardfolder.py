"""One shard set per folder: the configuration it holds, overwriting it, the lock, stale files.

``config.resolved.yaml`` is written before the first shard, so a folder always names the
configuration of the set it holds or is building; a run with another configuration (what the
shards hold: data, sizes, superpixels, prefix; not ``ray``, ``strict``, ``parallelism``) is
refused, naming the folder and the keys that differ, unless ``overwrite=true``. Then the new set
is built in a hidden sibling folder (``.{out_dir}.overwrite``, resumed if the run is interrupted)
and swapped in once complete: the old set stays whole until then.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from glocon.config import RESOLVED_NAME, read_yaml
from glocon.data.manifest import MANIFEST_NAME
from glocon.data.shardplan import ShardsConfig
from glocon.data.shardtask import DONE_DIR, done_path
from glocon.errors import DataError, PreflightError


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """One make_shards per folder at a time (a killed job's lock dies with its process)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another make_shards is writing to {out_dir} (lock {out_dir / '.lock'})") from None
        yield


def clean_stale(out_dir: Path, prefix: str, keep: set[str]) -> list[str]:
    """Remove temp files a killed run left behind, and our shards beyond the current plan."""
    removed = []
    ours = re.compile(rf"^{re.escape(prefix)}-\d{{6}}\.tar$")
    for p in list(out_dir.glob(f".{prefix}-*.tar.*.tmp")) + list((out_dir / DONE_DIR).glob(".*.tmp")):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    for p in out_dir.glob(f"{prefix}-*.tar"):
        if ours.match(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)
            done_path(out_dir, p.name).unlink(missing_ok=True)
            removed.append(p.name)
    return removed


# Keys that say how a run goes, not what its shards hold: a rerun may change them.
RUN_ONLY_KEYS = ("out_dir", "strict", "overwrite", "ray", "parallelism", "data.embedded.cache_dir")
# What make_shards leaves in a folder (besides the shards of the recorded prefix): an overwrite
# replaces a folder holding only these, never one where a user keeps other files.
_OWN_FILES = {MANIFEST_NAME, RESOLVED_NAME, DONE_DIR, ".lock"}


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if key in RUN_ONLY_KEYS:
            continue
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def recorded_config(folder: Path) -> tuple[dict[str, Any], Path] | None:
    """The config of the shard set in ``folder`` (its manifest's, else config.resolved.yaml's) and its file."""
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):  # unreadable: the resolved config decides
            config = json.loads(manifest.read_text(encoding="utf-8")).get("config")
            if isinstance(config, dict):
                return config, manifest
    resolved = folder / RESOLVED_NAME
    if resolved.is_file():
        config = read_yaml(resolved, "shard config", DataError)
        if isinstance(config, dict):
            return config, resolved
    return None


def config_differences(recorded: dict[str, Any], cfg: ShardsConfig) -> list[str]:
    """``key: old -> new`` for every key that decides the shards and differs (keys only one side
    knows are skipped: a field added to ShardsConfig later is not a change of data)."""
    old, new = _flat(recorded), _flat(cfg.model_dump(mode="json"))
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]


def _staging(out: Path) -> Path:
    return out.parent / f".{out.name}.overwrite"


def _check_replaceable(out: Path, prefix: str) -> None:
    """Refuse to replace a folder holding files make_shards did not write."""
    ours = re.compile(rf"^{re.escape(prefix)}-\d{{6}}\.tar$|^\..*\.tmp$")
    others = sorted(p.name for p in out.iterdir() if p.name not in _OWN_FILES and not ours.match(p.name))
    if others:
        raise PreflightError(
            f"out_dir={out}: overwrite=true would replace this folder, but it holds files make_shards did not write "
            f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); move them, or choose another out_dir"
        )


def build_folder(cfg: ShardsConfig, out: Path) -> Path:
    """Where make_shards builds: ``out`` when it is empty or holds this configuration's shards, the
    staging folder when ``overwrite`` replaces another configuration's; else a PreflightError
    saying what differs. (A stale staging folder of another configuration is removed.)"""
    recorded = recorded_config(out) if out.is_dir() else None
    if recorded is None:
        return out
    config, source = recorded
    changed = config_differences(config, cfg)
    if not changed:
        return out
    if not cfg.overwrite:
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise PreflightError(
            f"out_dir={out} already holds shards of another configuration ({source}): {'; '.join(changed[:5])}{more}. "
            "Choose another out_dir, or set overwrite=true to replace them"
        )
    _check_replaceable(out, str(config.get("prefix", cfg.prefix)))
    staging = _staging(out)
    if staging.is_dir():  # an interrupted overwrite: resume it if it built this configuration
        left = recorded_config(staging)
        if left is None or config_differences(left[0], cfg):
            shutil.rmtree(staging)
    return staging


def swap_in(staging: Path, out: Path) -> None:
    """Put the complete new set at ``out``; the old folder is moved aside first and removed last."""
    old = out.parent / f".{out.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)
