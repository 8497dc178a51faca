"""Turn any dataset layout into ``{prefix}-{000000}.tar`` WebDataset shards, as Ray tasks.

The plan is a pure function of the sorted records (``glocon.data.shardplan``): shard ``i`` holds
``records[i*n:(i+1)*n]``. One Ray task builds one shard (``glocon.data.shardtask``): decode, resize,
superpixels, encode, and write the tar with fixed metadata to a temp file that is renamed into
place. So a shard's bytes depend only on its records and the config, and a rerun after an
interruption rebuilds exactly the shards that are missing or do not match their done-record, and
ends byte-identical to an uninterrupted run.

Next to the shards:

- ``_done/{shard}.json``: one done-record per finished shard (sha256, sizes, keys, the classes of
  every sample, what was rejected), written by the task after its tar;
- ``manifest.json`` (``glocon.data.manifest``): every shard with its sample count and sha256, the
  class -> sample keys index (PFENet's rule: a class counts for an image when it covers
  ``data.min_class_pixels`` pixels at the image's original resolution) with a digest per class
  that every load checks, the rejected inputs, totals and the resolved config;
- ``config.resolved.yaml``.

Bad input (an unreadable or truncated image, a mask whose size differs from its image, ...) is
not fatal: it goes to ``rejected`` with its path and a reason that names every file it concerns
(the image, and the mask when the mask is at fault). ``strict=true`` makes it a ``DataError``
naming the file. A job whose every input was rejected writes its manifest (the rejections are
worth keeping) and then fails with a summary of them: no shards is never a success.

Images are only shrunk to ``longest_side``; a smaller image keeps its size (and its mask is not
resampled) unless ``upscale=true``.

A folder holds one shard set; a run with another configuration is refused unless
``overwrite=true`` (``glocon.data.shardfolder``).
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from glocon.config import save_resolved
from glocon.data.layouts import ClassTable, open_layout_classes
from glocon.data.manifest import MANIFEST_NAME, Manifest, Rejection, ShardEntry
from glocon.data.record import Record, classes_present
from glocon.data.schema import MASK, REQUIRED
from glocon.data.shardfolder import build_folder, clean_stale, exclusive, swap_in
from glocon.data.shardplan import BuildSpec, ShardPlan, ShardsConfig, plan_shards
from glocon.data.shardtask import build_shard, read_done
from glocon.errors import DataError
from glocon.paths import check_out_dir, resolve


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
    with exclusive(final):
        out = build_folder(cfg, final)
        out.mkdir(parents=True, exist_ok=True)
        # before any shard: the folder names the configuration of what it holds, finished or not
        save_resolved(cfg, out)
        if clean_stale(out, cfg.prefix, {p.name for p in plans}):
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
            swap_in(out, final)
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
