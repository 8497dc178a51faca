"""Shards written directly, without Ray: the writer's own tar settings, the one sample schema,
and a manifest laid out as ``make_shards`` writes it. For reader and hostile-input tests."""

from __future__ import annotations

from pathlib import Path

from glocon.data.schema import Sample, encode_sample
from glocon.data.manifest import Manifest, ShardEntry
from glocon.data.shardtask import open_tar_writer
from glocon.io import sha256_file


def write_sample_shards(folder: Path, samples: list[Sample], per_shard: int, prefix: str, classes: dict[int, list[str]]) -> Manifest:
    """``samples`` in tars of ``per_shard`` named ``<prefix>-NNNNNN.tar``, plus their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for s, start in enumerate(range(0, len(samples), per_shard)):
        chunk = samples[start : start + per_shard]
        name = f"{prefix}-{s:06d}.tar"
        with open(folder / name, "wb") as fh, open_tar_writer(fh) as writer:
            for sample in chunk:
                writer.write(encode_sample(sample))
        entries.append(ShardEntry(name=name, count=len(chunk), sha256=sha256_file(folder / name),
                                  bytes=(folder / name).stat().st_size, keys=[x.key for x in chunk]))
    n = len(samples)
    manifest = Manifest(prefix=prefix, members=["fh.png", "jpg", "json", "mask.png", "slic.png"], min_class_pixels=100,
                        shards=entries, classes=classes, rejected=[],
                        totals={"records": n, "samples": n, "shards": len(entries), "rejected": 0}, config={})
    manifest.save(folder)
    return manifest


def write_embedded_shards(root: Path, split: str, n: int, size: int = 64, per_shard: int = 8) -> Path:
    """Shards of the embedded layout's ``split`` (n images of ``size`` px) written in-process, no Ray,
    through the shard writer's own sample code (``make_sample``): ``<root>/shards-<split>``."""
    import warnings

    from glocon.data.layouts import LayoutConfig, open_layout
    from glocon.data.shardplan import BuildSpec, ShardsConfig
    from glocon.data.shardtask import make_sample

    data = LayoutConfig(layout="embedded", split=split, min_class_pixels=64, embedded={"n_images": n, "size": size, "cache_dir": str(root / "cache")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few images: the 5-shot coverage warning is expected
        records = open_layout(data)
    spec = BuildSpec.from_config(ShardsConfig(data=data, out_dir=str(root), longest_side=size, superpixels={"slic": {"n_segments": 16}}))
    samples = [make_sample(r, spec) for r in records]
    classes: dict[int, list[str]] = {}
    for s in samples:
        for c in s.classes:
            classes.setdefault(int(c), []).append(s.key)
    folder = root / f"shards-{split}"
    write_sample_shards(folder, samples, per_shard=per_shard, prefix=split, classes=classes)
    return folder
