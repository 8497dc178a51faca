"""Build a bank: shards -> prior -> one pooled vector per superpixel -> FAISS index + provenance.

Embedding is spread over Ray actors (``cfg.workers``), each loading the prior once and taking a
subset of the shards; ``workers=0`` runs in this process (same code, no Ray). FAISS ids are
assigned afterwards in sorted-shard, file order, so the bank does not depend on which worker
finished first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from glocon.bank import provenance
from glocon.bank.config import BankConfig
from glocon.bank.embed import embed_patches, global_vector, patch_table, to_input
from glocon.bank.index import build_index, choose_factory, gpu_count, write_index
from glocon.bank.store import GLOBAL, IMAGES, INDEX, PROVENANCE, VECTORS, load_class_names, save_npy, write_manifest
from glocon.config import save_resolved
from glocon.data.readers import stream_samples
from glocon.data.shardset import ShardSet
from glocon.device import pick_device
from glocon.errors import ConfigError
from glocon.io import sha256_file
from glocon.models.prior import load_prior_extractor
from glocon.featstore import open_store, slot
from glocon.paths import resolve
from glocon.preflight import check_bank


class ShardEmbedder:
    """Loads the prior once; ``embed_shard(url)`` -> vectors, provenance columns, optional globals."""

    def __init__(self, prior: str, cfg: dict[str, Any]) -> None:
        self.cfg = BankConfig.model_validate(cfg)
        torch.set_num_threads(max(1, self.cfg.threads_per_worker))
        self.device = pick_device(self.cfg.device)
        self.model = load_prior_extractor(prior, map_location=self.device)
        store = open_store(self.cfg.store)
        self.cached = slot(store, self.model, f"dense_map:{self.cfg.embedding}", frozen_only=False)
        self.cached_global = slot(store, self.model, "global_q", frozen_only=False) if self.cfg.global_embedding else None

    def embed_shard(self, url: str, limit: int | None = None) -> dict[str, Any]:
        cfg = self.cfg
        vectors, columns, globals_, images = [], [], [], []
        # one shard, read whole: no splitting by rank or DataLoader worker (the bank splits by shard itself)
        for n_img, sample in enumerate(stream_samples([url], split_by_node=False, split_by_worker=False)):
            if limit is not None and n_img >= limit:
                break
            labels = sample.label_map(cfg.patch_method)
            n = int(labels.max()) + 1
            vec, grid_area = embed_patches(
                self.model, sample.image, labels, n, cfg.embedding, cfg.pooling_mode, cfg.input_size, self.device, self.cached
            )
            cols = patch_table(labels, sample.mask, n)
            h, w = labels.shape
            cols.update(
                shard=np.array([url] * n, dtype=object),
                key=np.array([sample.key] * n, dtype=object),
                grid_area=grid_area,
                height=np.full(n, h, np.int32),
                width=np.full(n, w, np.int32),
            )
            vectors.append(vec)
            columns.append(cols)
            images.append({"key": sample.key, "shard": url, "height": h, "width": w, "n_patches": n})
            if cfg.global_embedding:
                globals_.append(global_vector(self.model, to_input(sample.image, cfg.input_size, self.device), self.cached_global)[0].cpu().numpy())
        dim = self.model.dense_channels(cfg.embedding)
        return {
            "shard": url,
            "vectors": np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
            "columns": provenance.concat(columns),
            "images": images,
            "globals": np.stack(globals_).astype(np.float32) if globals_ else None,
        }


def _embed_local(cfg: BankConfig, urls: list[str], on_shard: Callable[[dict], None]) -> list[dict]:
    embedder = ShardEmbedder(cfg.prior, cfg.model_dump())
    results = []
    remaining = cfg.limit
    for url in urls:
        if remaining is not None and remaining <= 0:
            break
        res = embedder.embed_shard(url, remaining)
        remaining = None if remaining is None else remaining - len(res["images"])
        results.append(res)
        on_shard(res)
    return results


def _embed_ray(cfg: BankConfig, urls: list[str], on_shard: Callable[[dict], None]) -> list[dict]:
    import ray

    from glocon.raycluster import init_ray

    init_ray(cfg.ray)
    gpus = 1.0 / cfg.workers if torch.cuda.is_available() and cfg.device != "cpu" else 0
    actor_cls = ray.remote(num_cpus=cfg.threads_per_worker, num_gpus=gpus)(ShardEmbedder)
    n_actors = min(cfg.workers, len(urls))
    actors = [actor_cls.remote(cfg.prior, cfg.model_dump()) for _ in range(n_actors)]
    # Each actor takes every n-th shard: actor calls queue up per actor, so this is its subset.
    pending = {actors[i % n_actors].embed_shard.remote(url, cfg.limit): url for i, url in enumerate(urls)}
    results = []
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            res = ray.get(done[0])
            pending.pop(done[0])
            results.append(res)
            on_shard(res)
    finally:
        for actor in actors:
            ray.kill(actor)
    order = {u: i for i, u in enumerate(urls)}
    results.sort(key=lambda r: order[r["shard"]])
    if cfg.limit is not None:  # keep the first `limit` images in shard order, as the local path does
        kept, left = [], cfg.limit
        for res in results:
            if left <= 0:
                break
            if len(res["images"]) > left:
                n_vec = sum(im["n_patches"] for im in res["images"][:left])
                res = {**res, "vectors": res["vectors"][:n_vec], "images": res["images"][:left],
                       "columns": {c: v[:n_vec] for c, v in res["columns"].items()},
                       "globals": None if res["globals"] is None else res["globals"][:left]}
            kept.append(res)
            left -= len(res["images"])
        results = kept
    return results


def build_bank(cfg: BankConfig, dashboard: Any | None = None) -> dict[str, Any]:
    """Embed, index and write a bank to ``cfg.out``; returns its manifest."""
    # paths that outlive a Ray job (glocon.paths), then the checks that need no Ray (glocon.preflight)
    cfg = cfg.model_copy(update={k: resolve(getattr(cfg, k), k) for k in ("prior", "out", "class_names")})
    if cfg.shards and not any(c in cfg.shards for c in "*?[,"):
        cfg = cfg.model_copy(update={"shards": resolve(cfg.shards, "shards")})
    check_bank(cfg)
    t0 = time.monotonic()
    urls = list(ShardSet.open(cfg.shards).urls)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"shards": 0, "images": 0, "vectors": 0}

    def on_shard(res: dict) -> None:
        counts["shards"] += 1
        counts["images"] += len(res["images"])
        counts["vectors"] += len(res["vectors"])
        if dashboard is not None:
            dashboard.advance(1, images=counts["images"], vectors=counts["vectors"])

    results = (_embed_ray if cfg.workers > 0 else _embed_local)(cfg, urls, on_shard)
    vectors = np.concatenate([r["vectors"] for r in results]).astype(np.float32)
    if len(vectors) == 0:
        raise ConfigError(f"bank build: no vectors from shards {cfg.shards!r} (are the shards empty?)")
    columns = provenance.with_ids(provenance.concat([r["columns"] for r in results]))
    images = [im for r in results for im in r["images"]]
    t_embed = time.monotonic() - t0

    factory = choose_factory(len(vectors), vectors.shape[1], cfg.index)
    if dashboard is not None:
        dashboard.log(f"embedded {len(images)} images -> {len(vectors)} vectors of dim {vectors.shape[1]}; index {factory}")
    index = build_index(vectors, factory, cfg.index, ids=columns["id"])
    t_index = time.monotonic() - t0 - t_embed

    files = {"index": INDEX, "provenance": PROVENANCE, "vectors": VECTORS}
    write_index(index, out / INDEX)
    provenance.write(out / PROVENANCE, columns)
    save_npy(out / VECTORS, vectors)
    if cfg.global_embedding:
        save_npy(out / GLOBAL, np.concatenate([r["globals"] for r in results if r["globals"] is not None]))
        first = np.cumsum([0] + [im["n_patches"] for im in images])[:-1]
        provenance_images = {
            "key": [im["key"] for im in images], "shard": [im["shard"] for im in images],
            "height": [im["height"] for im in images], "width": [im["width"] for im in images],
            "n_patches": [im["n_patches"] for im in images], "first_id": first.tolist(),
        }
        import pyarrow as pa
        import pyarrow.parquet as pq

        from glocon.io import atomic_open

        with atomic_open(out / IMAGES, "wb") as fh:
            pq.write_table(pa.table(provenance_images), fh)
        files.update(global_vectors=GLOBAL, images=IMAGES)
    save_resolved(cfg, out)

    sizes = np.array([max(im["height"], im["width"]) for im in images])
    with_class = int((columns["dominant_class"] >= 0).sum())
    manifest = {
        "prior": {"path": os.path.abspath(cfg.prior), "sha256": sha256_file(cfg.prior)},
        "embedding": cfg.embedding,
        "patch_method": cfg.patch_method,
        "pooling_mode": cfg.pooling_mode,
        "input_size": cfg.input_size,
        "image_size": int(np.median(sizes)),
        "dim": int(vectors.shape[1]),
        "count": int(len(vectors)),
        "metric": "inner_product",
        "factory": factory,
        "nprobe": cfg.index.nprobe,
        "counts": {"shards": len(urls), "images": len(images), "vectors": int(len(vectors)), "vectors_with_class": with_class},
        "shards": urls,
        "files": files,
        "class_names": {str(k): v for k, v in load_class_names(cfg.class_names).items()},
        "built_on": {"device": str(pick_device(cfg.device)), "faiss_gpus": gpu_count(cfg.index), "workers": cfg.workers},
        "seconds": {"embed": round(t_embed, 3), "index": round(t_index, 3), "total": round(time.monotonic() - t0, 3)},
        "config": cfg.model_dump(mode="json"),
    }
    write_manifest(out, manifest)
    return {"format": "glocon.bank/v1", **manifest}
