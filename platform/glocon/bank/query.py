"""Ask a bank "what looks like this patch?".

The patch is an image file plus a point (x, y), a box or a superpixel id, or an existing sample
key (its shard's own superpixel map) plus the same. It is embedded with the bank's prior, patch
method, embedding source and pooling, exactly as the build embedded bank patches, then searched.
The answer is a JSON hit list (``hits.json``) and a contact sheet (``sheet.png``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from glocon.bank.config import QueryConfig
from glocon.bank.embed import embed_patches, patch_table
from glocon.bank.index import gpu_count, search, to_gpu
from glocon.bank.provenance import rows
from glocon.bank.render import Tile, render_sheet
from glocon.bank.store import Bank, open_bank
from glocon.data.schema import Sample, tar_key
from glocon.data.shardindex import read_sample
from glocon.data.superpixels import fh_labels, slic_labels
from glocon.device import pick_device
from glocon.errors import ConfigError, DataError
from glocon.io import atomic_write_json, sha256_file
from glocon.models.prior import PriorExtractor, load_prior_extractor

if TYPE_CHECKING:  # annotations only
    import faiss
    import torch


@dataclass
class Patch:
    """The query patch. image (H, W, 3) uint8; region (H, W) bool; key = its sample key, if any."""

    image: np.ndarray
    region: np.ndarray
    kind: str
    key: str | None = None
    superpixel: int | None = None
    source: str = ""
    mask: np.ndarray | None = None  # the sample's mask, for the query's own class


def load_bank_prior(bank: Bank, prior: str | None = None, allow_other: bool = False, device: str | torch.device = "cpu") -> PriorExtractor:
    """The prior to embed queries with; errors name the files when it cannot match the bank."""
    path = prior or bank.manifest["prior"]["path"]
    model = load_prior_extractor(path, map_location=device)
    source = bank.manifest["embedding"]
    dim = model.dense_channels(source)
    if dim != bank.dim:
        raise DataError(
            f"prior {path}: gives {dim}-d {source!r} vectors, but bank index {bank.index_path} holds {bank.dim}-d vectors "
            f"(expected a prior with the bank's embedding size, e.g. the one it was built with: {bank.manifest['prior']['path']})"
        )
    if not allow_other and prior and sha256_file(path) != bank.manifest["prior"]["sha256"]:
        raise DataError(
            f"prior {path}: sha256 differs from the bank's prior {bank.manifest['prior']['path']} "
            f"(expected {bank.manifest['prior']['sha256'][:12]}…); vectors from another prior are not comparable "
            "(set allow_other_prior=true to search anyway)"
        )
    return model


def _labels_for(image: np.ndarray, method: str, cfg: QueryConfig) -> np.ndarray:
    return slic_labels(image, cfg.superpixels.slic) if method == "slic" else fh_labels(image, cfg.superpixels.fh)


def _load_image(path: str, size: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(f"query image not found: {path}")
    try:
        img = Image.open(path).convert("RGB")
    except Exception as exc:
        raise DataError(f"query image {path}: not a readable image ({exc})") from None
    scale = size / max(img.size)
    if scale != 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    return np.asarray(img)


def resolve_patch(cfg: QueryConfig, bank: Bank, sample: Sample | None = None) -> Patch:
    """Turn the config's key / image + point / box / superpixel into an image and a pixel region.
    ``sample``: the key's sample when the caller already read it (the explorer); else it is read
    from the shard the bank's provenance names."""
    if (cfg.key is None) == (cfg.image is None):
        raise ConfigError("bank query: give exactly one of 'key' (a sample in the bank) or 'image' (an image file)")
    if sum(x is not None for x in (cfg.point, cfg.box, cfg.superpixel)) > 1:
        raise ConfigError("bank query: give at most one of 'point', 'box', 'superpixel'")
    method = bank.manifest["patch_method"]
    if cfg.key is not None:
        row = bank.row_of_key(cfg.key)
        if row is None:
            raise DataError(f"bank query: sample key {cfg.key!r} is not in bank {bank.root} (provenance table)")
        shard = bank.table.column("shard")[row].as_py()
        sample = sample if sample is not None else read_sample(shard, cfg.key)
        image, labels, key, source, mask = sample.image, sample.label_map(method), sample.key, shard, sample.mask
    else:
        image = _load_image(cfg.image, cfg.image_size or int(bank.manifest["image_size"]))
        labels, key, source, mask = _labels_for(image, method, cfg), None, os.path.abspath(cfg.image), None
    h, w = labels.shape
    if cfg.box is not None:
        x0, y0, x1, y1 = cfg.box
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ConfigError(f"bank query: box {cfg.box} must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
        region = np.zeros((h, w), bool)
        region[y0:y1, x0:x1] = True
        return Patch(image, region, "box", key, None, source, mask)
    if cfg.superpixel is not None:
        if not 0 <= cfg.superpixel <= int(labels.max()):
            raise ConfigError(f"bank query: superpixel {cfg.superpixel} out of range [0, {int(labels.max())}] for this image's {method} map")
        sp = cfg.superpixel
    else:
        x, y = cfg.point if cfg.point is not None else (w // 2, h // 2)
        if not (0 <= x < w and 0 <= y < h):
            raise ConfigError(f"bank query: point ({x}, {y}) outside the {w}x{h} query image")
        sp = int(labels[y, x])
    return Patch(image, labels == sp, "superpixel", key, sp, source, mask)


def embed_region(model: PriorExtractor, patch: Patch, manifest: dict[str, Any], device: str | torch.device = "cpu") -> np.ndarray:
    """(D,) L2-normalised: the region pooled exactly as the build pooled a superpixel."""
    labels = np.where(patch.region, 0, -1).astype(np.int64)
    vec, _ = embed_patches(model, patch.image, labels, 1, manifest["embedding"], manifest["pooling_mode"], manifest["input_size"], device)
    return vec[0]


def neighbours(bank: Bank, vectors: np.ndarray, k: int, nprobe: int | None, exclude_keys: list[str | None], index: faiss.Index | None = None) -> list[list[dict]]:
    """Top-k provenance rows (+ 'score', 'rank') per query vector, skipping rows whose key is excluded."""
    index = index if index is not None else bank.index
    max_per_image = int(np.max(bank.table.column("superpixel").to_numpy())) + 1
    extra = max_per_image if any(exclude_keys) else 0
    k_search = min(bank.count, k + extra)
    scores, ids = search(index, vectors, k_search, nprobe if nprobe is not None else bank.manifest["nprobe"])
    out = []
    for q, ex in enumerate(exclude_keys):
        hits = []
        for row, score in zip(rows(bank.table, ids[q]), scores[q][ids[q] >= 0]):
            if ex is not None and row["key"] == ex:
                continue
            hits.append({**row, "score": float(score), "rank": len(hits) + 1})
            if len(hits) == k:
                break
        out.append(hits)
    return out


def class_name(names: dict[int, str], cls: int) -> str | None:
    return None if cls < 0 else names.get(int(cls), str(cls))


def answer(
    cfg: QueryConfig, bank: Bank, model: PriorExtractor, device: str | torch.device = "cpu", index: faiss.Index | None = None, sample: Sample | None = None
) -> tuple[dict[str, Any], Patch]:
    """Embed ``cfg``'s patch and search an opened bank: (the hit list hits.json holds, minus its
    'sheet' entry; the patch). ``glocon bank query`` and the explorer both answer through here."""
    patch = resolve_patch(cfg, bank, sample)
    vec = embed_region(model, patch, bank.manifest, device)
    names = bank.class_names
    hits = neighbours(bank, vec[None], cfg.k, cfg.nprobe, [patch.key if cfg.exclude_same_image else None], index)[0]
    for hit in hits:
        hit["class_name"] = class_name(names, hit["dominant_class"])
    info = patch_table(patch.region.astype(np.int32), patch.mask, 2)  # bbox/area/class of the region (label 1)
    q_class = int(info["dominant_class"][1])
    query = {
        "kind": patch.kind, "key": patch.key, "source": patch.source, "superpixel": patch.superpixel,
        "bbox": [int(info[c][1]) for c in ("x0", "y0", "x1", "y1")], "area": int(info["area"][1]),
        "point": cfg.point, "box": cfg.box, "image_size": list(patch.image.shape[:2]),
        "dominant_class": q_class, "class_name": class_name(names, q_class),
    }
    result = {
        "bank": str(bank.root), "factory": bank.manifest["factory"],
        "nprobe": cfg.nprobe if cfg.nprobe is not None else bank.manifest["nprobe"],
        "k": cfg.k, "query": query, "hits": hits,
    }
    return result, patch


def query_bank(cfg: QueryConfig) -> dict[str, Any]:
    """Embed the patch, search, write hits.json + sheet.png; returns the hit list."""
    if cfg.bank is None:
        raise ConfigError("bank query: 'bank' is empty; expected the folder a bank build wrote")
    bank = open_bank(cfg.bank)
    device = pick_device(cfg.device)
    model = load_bank_prior(bank, cfg.prior, cfg.allow_other_prior, device)
    index = to_gpu(bank.index) if gpu_count() > 0 else bank.index
    result, patch = answer(cfg, bank, model, device, index)
    name = tar_key(patch.key or Path(patch.source).stem)
    out = Path(cfg.out) if cfg.out else bank.root / "queries" / f"{name}-{patch.kind}-{patch.superpixel if patch.superpixel is not None else 'box'}"
    sheet = render_sheet(query_tile(patch, result["query"]), [hit_tile(bank, h) for h in result["hits"]], out / "sheet.png", cfg.tile, cfg.columns)
    result["sheet"] = {"path": str(out / "sheet.png"), **sheet}
    atomic_write_json(out / "hits.json", result)
    result["out"] = str(out)
    return result


def query_tile(patch: Patch, query: dict[str, Any]) -> Tile:
    """The sheet's first tile: the whole query image, its region outlined."""
    return Tile(patch.image, patch.region, f"query {query['class_name'] or ''}".strip(), full=True)


def hit_tile(bank: Bank, hit: dict[str, Any], sample: Sample | None = None) -> Tile:
    """A hit's tile: a crop around its superpixel, outlined. ``sample``: the hit's sample when the
    caller already holds it (the explorer caches them); else it is read from the hit's shard."""
    sample = sample if sample is not None else read_sample(hit["shard"], hit["key"])
    region = sample.label_map(bank.manifest["patch_method"]) == hit["superpixel"]
    cls = f" {hit['class_name']}" if hit.get("class_name") else ""
    caption = f"#{hit['rank']} {hit['score']:.3f}{cls}" if "rank" in hit else cls.strip()
    return Tile(sample.image, region, caption, bbox=(hit["x0"], hit["y0"], hit["x1"], hit["y1"]))
