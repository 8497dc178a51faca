"""Turn any dataset layout into ``{prefix}-{000000}.tar`` WebDataset shards, as Ray tasks.

The plan is a pure function of the sorted records: shard ``i`` holds ``records[i*n:(i+1)*n]``.
One Ray task builds one shard: decode, convert to RGB, resize to the configured longest side
(the mask with nearest neighbour), SLIC + Felzenszwalb on the resized image, encode with the one
sample schema (``glocon.data.schema``), and write the tar with fixed metadata (mtime 0, fixed
owner and mode) to a temp file that is renamed into place. So a shard's bytes depend only on its
records and the config, and a rerun after an interruption rebuilds exactly the shards that are
missing or do not match their done-record, and ends byte-identical to an uninterrupted run.

Next to the shards:

- ``_done/{shard}.json``: one done-record per finished shard (sha256, sizes, keys, the classes of
  every sample, what was rejected), written by the task after its tar;
- ``manifest.json``: every shard with its sample count and sha256, the class -> sample keys index
  (PFENet's rule: a class counts for an image when it covers ``data.min_class_pixels`` pixels at
  the image's original resolution) with a digest per class that every load checks, the rejected
  inputs, totals and the resolved config;
- ``config.resolved.yaml``.

Bad input (an unreadable or truncated image, a mask whose size differs from its image, ...) is
not fatal: it goes to ``rejected`` with its path and a reason that names every file it concerns
(the image, and the mask when the mask is at fault). ``strict=true`` makes it a ``DataError``
naming the file. A job whose every input was rejected writes its manifest (the rejections are
worth keeping) and then fails with a summary of them: no shards is never a success.

Images are only shrunk to ``longest_side``; a smaller image keeps its size (and its mask is not
resampled) unless ``upscale=true``.

A folder holds one shard set. ``config.resolved.yaml`` is written before the first shard, so a
folder always names the configuration of the set it holds or is building; a run with another
configuration (what the shards hold: data, sizes, superpixels, prefix; not ``ray``, ``strict``,
``parallelism``) is refused, naming the folder and the keys that differ, unless ``overwrite=true``.
Then the new set is built in a hidden sibling folder (``.{out_dir}.overwrite``, resumed if the run
is interrupted) and swapped in once complete: the old set stays whole until then.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from glocon.config import RESOLVED_NAME, GloconModel, read_yaml, save_resolved
from glocon.data.imageio import check_mask
from glocon.data.layouts import ClassTable, LayoutConfig, open_layout_classes
from glocon.data.record import Record, class_pixels, classes_present
from glocon.ops import IGNORE_INDEX
from glocon.data.schema import MASK, REQUIRED, Sample, encode_sample, tar_key
from glocon.data.superpixels import SuperpixelConfig, superpixels
from glocon.errors import DataError, PreflightError
from glocon.io import atomic_open, atomic_write_json, sha256_file
from glocon.paths import check_out_dir, resolve
from glocon.raycluster import RayConfig

MANIFEST_NAME = "manifest.json"
DONE_DIR = "_done"
MANIFEST_VERSION = 1
# Bumped whenever the bytes a task writes for the same input change (invalidates done-records).
# 2: images smaller than longest_side are no longer upscaled (ShardsConfig.upscale).
WRITER_VERSION = 2
# Fixed tar metadata: with these, a shard's bytes depend only on its samples.
TAR_USER = TAR_GROUP = "glocon"
TAR_MODE = 0o444
TAR_MTIME = 0
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


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# One sample, one shard (these run inside Ray tasks)
# ---------------------------------------------------------------------------------------------


class Rejected(Exception):
    """A record that cannot become a sample; the message is the reason."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no message"
    return text if isinstance(exc, DataError) else f"{type(exc).__name__}: {text}"


def resized_size(width: int, height: int, longest_side: int, upscale: bool = False) -> tuple[int, int]:
    """(W, H) scaled so that max(W, H) == longest_side (aspect kept, each side >= 1); a smaller
    image keeps its size unless ``upscale``."""
    if max(width, height) <= longest_side and not upscale:
        return width, height
    scale = longest_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _naming(text: str, *paths: str) -> str:
    """``text``, prefixed with each of ``paths`` it does not already name (a rejection names its files)."""
    missing = [p for p in paths if p and p not in text]
    return f"{', '.join(missing)}: {text}" if missing else text


def _load_image(record: Record) -> Image.Image:
    try:
        image = record.load_image()
        image.load()  # decode now: a truncated file fails here, not in SLIC
        if image.mode != "RGB":
            image = image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise Rejected(_naming(f"unreadable image ({_describe(exc)})", record.source)) from None
    return image


def _load_mask(record: Record, size: tuple[int, int]) -> np.ndarray | None:
    if record.load_mask is None:
        return None
    mask_file = str(record.extra.get("mask_source", ""))
    try:
        mask = np.asarray(record.load_mask())
    except Exception as exc:
        raise Rejected(_naming(f"unreadable mask ({_describe(exc)})", mask_file)) from None
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise Rejected(_naming(f"mask must be a (H, W) uint8 array of class ids, got shape {mask.shape} dtype {mask.dtype}", mask_file))
    w, h = size
    if mask.shape != (h, w):
        where = f"mask {mask_file}, image {record.source}" if mask_file else f"image {record.source}"
        raise Rejected(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {w}x{h} ({where})")
    try:  # ids beyond the layout's classes (37 in a VOC mask) would otherwise be indexed as a class
        check_mask(size, mask, f"mask {mask_file or record.source}", record.extra.get("max_class"))
    except DataError as exc:
        raise Rejected(str(exc)) from None
    return mask


def _json_safe(extra: dict) -> dict:
    try:
        json.dumps(extra)
        return dict(extra)
    except TypeError:
        return {str(k): (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in extra.items()}


def sample_classes(mask: np.ndarray, extra: dict) -> dict[int, int]:
    """Pixels per class id at the original resolution. FSS binary masks: 1 means ``extra['binary_class']``."""
    pixels = class_pixels(mask, ignore_index=IGNORE_INDEX)
    if "binary_class" in extra:
        n = pixels.get(1, 0)
        return {int(extra["binary_class"]): n} if n else {}
    return pixels


def make_sample(record: Record, spec: BuildSpec) -> Sample:
    """Record -> Sample: decode, resize (image bicubic, mask nearest), superpixels on the resized image.

    Raises ``Rejected`` (with the reason) for input that cannot become a sample.
    """
    image = _load_image(record)
    w, h = image.size
    size = resized_size(w, h, spec.longest_side, spec.upscale)
    # min_side guards what is stored and fed to superpixels: the resized image (a 10x20000 strip
    # passes at its own size but becomes 1x256)
    if min(size) < spec.min_side:
        after = "" if size == (w, h) else f", {size[0]}x{size[1]} after resizing to longest_side={spec.longest_side}"
        raise Rejected(f"image {record.source} is {w}x{h}{after}, smaller than min_side={spec.min_side}")
    mask = _load_mask(record, (w, h))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.uint8)
    meta: dict[str, Any] = {
        "key": record.key,
        "source": record.source,
        "layout": record.layout,
        "orig_size": [int(h), int(w)],
        # Counted at the original resolution, where PFENet's 2x32x32 rule is defined.
        "classes": {},
        "extra": _json_safe(record.extra),
    }
    resized_mask = None
    if mask is not None:
        meta["classes"] = {str(c): n for c, n in sorted(sample_classes(mask, record.extra).items())}
        resized_mask = mask if size == (w, h) else np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    slic, fh = superpixels(pixels, _superpixel_cfg(spec))
    return Sample(key=record.key, image=pixels, slic=slic, fh=fh, meta=meta, mask=resized_mask)


def _superpixel_cfg(spec: BuildSpec) -> SuperpixelConfig:
    return SuperpixelConfig.model_validate(spec.superpixels)


def done_path(out_dir: Path, name: str) -> Path:
    return out_dir / DONE_DIR / f"{name}.json"


def open_tar_writer(fileobj: IO[bytes]):
    """A ``webdataset.TarWriter`` with fixed metadata, so equal samples give equal bytes."""
    import webdataset as wds

    return wds.TarWriter(fileobj, user=TAR_USER, group=TAR_GROUP, mode=TAR_MODE, mtime=TAR_MTIME, encoder=False)


def build_shard(plan: ShardPlan, out_dir: str, spec: BuildSpec) -> dict[str, Any]:
    """Write one shard (temp file, then rename) and its done-record; return the done-record.

    ``out_dir`` is absolute: a Ray worker's cwd is not the driver's.
    """
    out = Path(out_dir)
    path = out / plan.name
    keys: list[str] = []
    classes: dict[str, dict[str, int]] = {}
    rejected: list[dict[str, str]] = []
    t0 = time.perf_counter()
    with atomic_open(path, "wb") as fh:
        with open_tar_writer(fh) as writer:
            for record in plan.records:
                try:
                    sample = make_sample(record, spec)
                except Rejected as exc:
                    rejected.append({"key": record.key, "path": record.source, "reason": str(exc), "shard": plan.name})
                    continue
                writer.write(encode_sample(sample, spec.jpeg_quality))
                keys.append(record.key)
                classes[record.key] = sample.meta["classes"]
    record = {
        "writer": WRITER_VERSION,
        "name": plan.name,
        "fingerprint": plan.fingerprint,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "count": len(keys),
        "keys": keys,
        "classes": classes,
        "rejected": rejected,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(done_path(out, plan.name), record)
    return record


def read_done(out_dir: Path, plan: ShardPlan, verify_sha: bool = True) -> dict[str, Any] | None:
    """The shard's done-record if the shard on disk is finished and matches it, else None."""
    dpath, tpath = done_path(out_dir, plan.name), out_dir / plan.name
    try:
        record = json.loads(dpath.read_text(encoding="utf-8"))
        if record.get("fingerprint") != plan.fingerprint or record.get("name") != plan.name:
            return None
        if tpath.stat().st_size != record["bytes"]:
            return None
        if verify_sha and sha256_file(tpath) != record["sha256"]:
            return None
        if record["count"] != len(record["keys"]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def resolve_paths(cfg: ShardsConfig) -> ShardsConfig:
    """A copy with absolute paths (``glocon.paths.resolve``): tasks run with another cwd, the
    manifest should say where, and under ``ray job submit`` they must outlive the job."""
    cfg = cfg.model_copy(deep=True)
    data = cfg.data.model_copy(deep=True)
    for name in ("root", "voc_sbd_list", "fss_split_dir"):
        setattr(data, name, resolve(getattr(data, name), f"data.{name}"))
    if data.layout == "embedded":
        from glocon.data.layouts.embedded import cache_root

        emb = data.embedded.model_copy()
        emb.cache_dir = resolve(str(cache_root(data).expanduser()), "data.embedded.cache_dir")
        data.embedded = emb
    cfg.data = data
    cfg.out_dir = resolve(cfg.out_dir, "out_dir")
    return cfg


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One make_shards per folder at a time (a killed job's lock dies with its process)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another make_shards is writing to {out_dir} (lock {out_dir / '.lock'})") from None
        yield


def _clean_stale(out_dir: Path, prefix: str, keep: set[str]) -> list[str]:
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


def _swap_in(staging: Path, out: Path) -> None:
    """Put the complete new set at ``out``; the old folder is moved aside first and removed last."""
    old = out.parent / f".{out.name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def make_shards(cfg: ShardsConfig, dashboard: bool = True) -> Manifest:
    """Build (or finish) the shards of ``cfg.data`` in ``cfg.out_dir``; return the manifest."""
    cfg = resolve_paths(cfg)
    check_out_dir(cfg.out_dir, "out_dir")  # before the layout is listed: that can take a while
    records, classes = open_layout_classes(cfg.data)
    return make_shards_from_records(records, cfg, dashboard=dashboard, classes=classes)


def make_shards_from_records(
    records: Sequence[Record], cfg: ShardsConfig, dashboard: bool = True, classes: ClassTable | None = None
) -> Manifest:
    """``make_shards`` on records already listed (tests and benches build their own).

    ``classes``: the layout's id mapping and names, written into the manifest. Raises DataError
    (after writing the manifest) when no input became a sample.
    """
    import ray

    from glocon.dashboard import Dashboard
    from glocon.raycluster import init_ray

    cfg = resolve_paths(cfg)
    final = Path(cfg.out_dir)
    check_out_dir(final, "out_dir")
    if not records:
        raise DataError(f"layout {cfg.data.layout} ({cfg.data.root}): no inputs to write to {final}")
    plans, refused = plan_shards(records, cfg)
    spec = BuildSpec.from_config(cfg)
    with _exclusive(final):
        out = build_folder(cfg, final)
        out.mkdir(parents=True, exist_ok=True)
        # before any shard: the folder names the configuration of what it holds, finished or not
        save_resolved(cfg, out)
        if _clean_stale(out, cfg.prefix, {p.name for p in plans}):
            (out / MANIFEST_NAME).unlink(missing_ok=True)
        results: dict[int, dict[str, Any]] = {}
        todo: list[ShardPlan] = []
        for plan in plans:
            done = read_done(out, plan)
            if done is not None:
                results[plan.index] = done
            else:
                todo.append(plan)
        if todo:  # the old manifest would describe shards that are about to change
            (out / MANIFEST_NAME).unlink(missing_ok=True)
        if cfg.strict:
            _raise_if_rejected(refused, results.values())
        started = not ray.is_initialized()
        if todo:
            init_ray(cfg.ray)
        try:
            n_images = sum(len(p.records) for p in todo)
            dash = Dashboard("shards", total=n_images, unit="img", plain=None if dashboard else True, stream=None if dashboard else _Null())
            with dash:
                if results:
                    dash.log(f"reusing {len(results)} finished shards of {len(plans)}")
                _run_tasks(todo, out, spec, cfg, results, dash, len(plans) - len(todo), len(plans))
        finally:
            if started and ray.is_initialized():
                ray.shutdown()
        manifest = _manifest(cfg, plans, results, refused, n_records=len(records))
        manifest.class_table = classes
        manifest.save(out)
        if out != final and manifest.totals["samples"] > 0:  # a set of no samples replaces nothing
            _swap_in(out, final)
            manifest._root = final.resolve()
    if dashboard:
        print(manifest.summary(), flush=True)
    if manifest.totals["samples"] == 0:
        raise DataError(all_rejected(manifest))
    return manifest


def all_rejected(manifest: Manifest, show: int = 5) -> str:
    """The error of a job whose every input was rejected: counts by reason, then the first few."""
    kinds: dict[str, int] = {}
    for r in manifest.rejected:
        kind = re.sub(r"\S*/\S*", "", r.reason).split(" (")[0]  # the reason without its file names
        kind = re.sub(r"\s+", " ", kind).strip(" :,") or r.reason
        kinds[kind] = kinds.get(kind, 0) + 1
    by_kind = ", ".join(f"{n} x {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    lines = [f"all {len(manifest.rejected)} inputs were rejected, no shard holds a sample "
             f"(manifest {manifest.root / MANIFEST_NAME}): {by_kind}"]
    lines += [f"  rejected {r.path}: {r.reason}" for r in manifest.rejected[:show]]
    if len(manifest.rejected) > show:
        lines.append(f"  ... and {len(manifest.rejected) - show} more (the manifest's 'rejected' list)")
    return "\n".join(lines)


class _Null:
    """A stream that drops everything (dashboard=False)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _run_tasks(todo, out: Path, spec: BuildSpec, cfg: ShardsConfig, results: dict, dash, reused: int, total: int) -> None:
    if not todo:
        return
    import ray

    task = ray.remote(build_shard).options(num_cpus=1, max_retries=2)
    limit = cfg.parallelism or max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending = deque(todo)
    inflight: dict[Any, ShardPlan] = {}
    rejected = sum(len(r["rejected"]) for r in results.values())
    built = 0
    try:
        while pending or inflight:
            while pending and len(inflight) < limit:
                plan = pending.popleft()
                inflight[task.remote(plan, str(out), spec)] = plan
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                plan = inflight.pop(ref)
                record = ray.get(ref)
                results[plan.index] = record
                built += 1
                rejected += len(record["rejected"])
                dash.advance(len(plan.records), shards=f"{reused + built}/{total}", rejected=rejected)
                if cfg.strict and record["rejected"]:
                    _raise_if_rejected([], [record])
    except BaseException:
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise


def _raise_if_rejected(refused: Sequence[Rejection], records: Iterable[Mapping[str, Any]]) -> None:
    bad = [(r.path, r.reason) for r in refused]
    for rec in records:
        bad.extend((r["path"], r["reason"]) for r in rec["rejected"])
    if bad:
        path, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"strict=true: bad input {path}: {reason}{more}")


def _manifest(cfg: ShardsConfig, plans: list[ShardPlan], results: dict, refused: list[Rejection], n_records: int) -> Manifest:
    shards, rejected = [], list(refused)
    index: dict[int, list[str]] = {}
    for plan in plans:
        rec = results[plan.index]
        shards.append(ShardEntry(name=plan.name, count=rec["count"], sha256=rec["sha256"], bytes=rec["bytes"], keys=rec["keys"]))
        rejected.extend(Rejection(**r) for r in rec["rejected"])
        for key in rec["keys"]:
            pixels = {int(c): int(n) for c, n in rec["classes"].get(key, {}).items()}
            for c in classes_present(pixels, cfg.data.min_class_pixels):
                index.setdefault(c, []).append(key)
    samples = sum(s.count for s in shards)
    has_masks = any(r.load_mask is not None for p in plans for r in p.records)
    return Manifest(
        prefix=cfg.prefix,
        members=sorted([*REQUIRED, MASK] if has_masks else REQUIRED),
        min_class_pixels=cfg.data.min_class_pixels,
        shards=shards,
        classes=dict(sorted(index.items())),
        rejected=sorted(rejected, key=lambda r: r.key),
        totals={"records": n_records, "samples": samples, "shards": len(shards), "rejected": len(rejected)},
        config=cfg.model_dump(mode="json"),
    )
