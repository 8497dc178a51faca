"""Bench a click in the explorer on a 1M-vector bank: index search plus rendering the hits grid.

    python bench/explore.py                 # 1M vectors (the issue's size): a few minutes, most of it IVF training
    python bench/explore.py --n 200000      # a quick run

The bank is real where it is shown and synthetic where it is only searched: a small embedded-data
shard set (generated offline, written by make_shards) is embedded by a random-init resnet18 prior
(``local_head``, 128-d, as bench/bank.py), then filled up to ``--n`` vectors with clustered
synthetic ones (glocon.bank.synthetic) whose provenance points at real superpixels, so every hit
has a picture to draw. Its index is the one the bank build chooses for that size (IVF-Flat at 1M).

A click is what the sample page makes the browser fetch, over HTTP from the explorer served by
uvicorn on 127.0.0.1 (in a thread of this process, with the job's thread settings): ``GET
/api/query`` (embed the clicked superpixel with the prior, search, provenance rows) plus one ``GET
/api/tile`` per hit (the hit's sample, outline, PNG), one after the other (a browser fetches the
tiles in parallel, so this is the slow case). Baselines measured here too: ``index.search`` alone
on the same query vectors, and ``glocon bank query`` (the CLI's ``query_bank``: opens the bank and
prior, writes the sheet) per click. Headline figure last: explore_query_ms_p50 (goal < 200 ms on a CPU).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_shards(work: Path, images: int, size: int) -> Path:
    from glocon.data.layouts import LayoutConfig
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards as build

    data = LayoutConfig(layout="embedded", min_class_pixels=256, embedded={"n_images": images, "size": size, "seed": 0, "cache_dir": str(work / "cache")})
    build(ShardsConfig(data=data, out_dir=str(work / "bench-shards"), prefix="bench", samples_per_shard=16, longest_side=size), dashboard=False)
    return work / "bench-shards"


def real_bank(work: Path, shards: Path) -> Path:
    import torch

    from glocon.bank.build import build_bank
    from glocon.bank.config import BankConfig
    from glocon.models.prior import PriorArch, PriorExtractor, save_export

    torch.manual_seed(0)
    prior = work / "priors" / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), prior)
    build_bank(BankConfig(prior=str(prior), shards=str(shards), out=str(work / "real"), workers=0, embedding="local_head", device="cpu"))
    return work / "real"


def grow_bank(real: Path, out: Path, n: int) -> tuple[str, float]:
    """The real bank filled to n vectors: synthetic rows reuse real rows' provenance (cycled)."""
    import json

    from glocon.bank import provenance
    from glocon.bank.config import IndexConfig
    from glocon.bank.index import build_index, choose_factory, write_index
    from glocon.bank.store import open_bank, save_npy, write_manifest
    from glocon.bank.synthetic import clustered_vectors

    bank = open_bank(real)
    vecs = np.asarray(bank.vectors)
    m = len(vecs)
    synth = clustered_vectors(n - m, vecs.shape[1], seed=1)
    vectors = np.concatenate([vecs, synth])
    cols = bank.table.to_pydict()
    take = np.concatenate([np.arange(m), np.arange(n - m) % m])
    columns = provenance.with_ids({c: np.asarray(cols[c], dtype=object if c in ("shard", "key") else None)[take] for c in provenance.COLUMNS if c != "id"})
    t = time.perf_counter()
    factory = choose_factory(n, vectors.shape[1], IndexConfig())
    index = build_index(vectors, factory, IndexConfig(), ids=columns["id"])
    build_s = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    write_index(index, out / "index.faiss")
    provenance.write(out / "provenance.parquet", columns)
    save_npy(out / "vectors.npy", vectors)
    shutil.copy(real / "config.resolved.yaml", out / "config.resolved.yaml")
    manifest = {k: v for k, v in json.loads((real / "manifest.json").read_text()).items() if k != "format"}
    manifest.update(count=n, factory=factory, counts={**manifest["counts"], "vectors": n})
    write_manifest(out, manifest)
    return factory, build_s


def click_ms(http, bank: str, key: str, x: int, y: int) -> tuple[float, float, int]:
    """(whole click ms, of which /api/query ms, hits) for one click."""
    t = time.perf_counter()
    r = http.get("/api/query", params={"bank": bank, "shards": "bench", "key": key, "x": x, "y": y})
    assert r.status_code == 200, r.text
    t_query = time.perf_counter() - t
    hits = r.json()["hits"]
    for h in hits:
        tile = http.get("/api/tile", params={"bank": bank, "id": h["id"]})
        assert tile.status_code == 200 and tile.content[:4] == b"\x89PNG"
    return (time.perf_counter() - t) * 1e3, t_query * 1e3, len(hits)


def start_job(cfg, work: Path) -> tuple[subprocess.Popen, str]:
    """`python jobs/explore.py --config <yaml>` in its own process (as a user starts it); its URL."""
    path = work / "explore.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "explore.py"), "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "glocon explore: open " in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
            return proc, line.split("open ", 1)[1].split()[0].rstrip("/")
    raise RuntimeError(f"jobs/explore.py ended before serving (exit {proc.wait()})")


def search_ms(bank, model, patches, nprobe: int, k: int) -> np.ndarray:
    """Baseline: index.search alone, on the vectors of the clicked patches."""
    from glocon.bank.index import search
    from glocon.bank.query import embed_region

    vecs = np.stack([embed_region(model, p, bank.manifest) for p in patches])
    out = np.empty(len(vecs))
    for i, v in enumerate(vecs):
        t = time.perf_counter()
        search(bank.index, v[None], k, nprobe)
        out[i] = (time.perf_counter() - t) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=48, help="real embedded-data images (what hits show)")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--clicks", type=int, default=200)
    ap.add_argument("--cli-clicks", type=int, default=5, help="clicks through glocon bank query (it reopens the 1M bank each time)")
    ap.add_argument("--work", default=None, help="folder to build in (default: a temp folder, removed at the end)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="glocon-bench-explore-"))
    import faiss
    import httpx

    from glocon.bank.config import QueryConfig
    from glocon.bank.query import query_bank, resolve_patch
    from glocon.explore.config import ExploreConfig
    from glocon.explore.serve import set_threads

    cfg = ExploreConfig(port=0, shards={"bench": str(work / "bench-shards")}, banks={"big": str(work / "bank")}, inputs=[str(work / "priors")])
    print(f"explore bench: n={args.n} real images={args.images} at {args.size} px, server threads={cfg.threads} "
          f"(faiss build threads {faiss.omp_get_max_threads()}), load {os.getloadavg()[0]:.1f}, work {work}", flush=True)
    t = time.perf_counter()
    shards = make_shards(work, args.images, args.size)
    real = real_bank(work, shards)
    factory, build_s = grow_bank(real, work / "bank", args.n)
    print(f"bank: {args.n} vectors, {factory} (index built in {build_s:.1f}s; all set-up {time.perf_counter() - t:.1f}s)", flush=True)

    proc, base = start_job(cfg, work)
    try:
        http = httpx.Client(base_url=base, timeout=300)
        sizes = {k: (m["width"], m["height"]) for k in http.get("/api/shards/bench", params={"limit": 10_000}).json()["keys"]
                 for m in [http.get("/api/sample", params={"shards": "bench", "key": k}).json()]}
        keys = sorted(sizes)
        rng = np.random.default_rng(0)
        clicks = []
        for _ in range(args.clicks):
            key = keys[int(rng.integers(len(keys)))]
            clicks.append((key, int(rng.integers(sizes[key][0])), int(rng.integers(sizes[key][1]))))
        t = time.perf_counter()
        click_ms(http, "big", *clicks[0])  # opens the bank (index, prior) and warms the caches
        print(f"first click (opens the bank): {time.perf_counter() - t:.2f}s", flush=True)
        whole, query, n_hits = np.array([click_ms(http, "big", *c) for c in clicks]).T
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    set_threads(cfg.threads)  # the baselines run with the server's threads
    from glocon.explore.app import Explorer

    ex = Explorer(cfg)
    ob = ex.banks.get("big")
    patches = [resolve_patch(ex.banks.config_for(ob, key=k, point=(x, y)), ob.bank) for k, x, y in clicks]
    k_search = int(ob.defaults.k + 1 + ob.bank.table.column("superpixel").to_numpy().max())  # what neighbours() asks faiss for
    base_ms = search_ms(ob.bank, ob.model, patches, ob.bank.manifest["nprobe"], k_search)
    cli = []
    for k, x, y in clicks[: args.cli_clicks]:
        t = time.perf_counter()
        query_bank(QueryConfig(bank=str(work / "bank"), key=k, point=(x, y), out=str(work / "cli"), device="cpu"))
        cli.append((time.perf_counter() - t) * 1e3)
    p50 = float(np.percentile(whole, 50))
    print(f"\n{'':<26} {'p50_ms':>9} {'p90_ms':>9}")
    for name, arr in (("click (query + tiles)", whole), ("  /api/query", query), ("  tiles", whole - query),
                      ("baseline index.search", base_ms), ("baseline bank query CLI", np.array(cli))):
        print(f"{name:<26} {np.percentile(arr, 50):>9.2f} {np.percentile(arr, 90):>9.2f}")
    print(f"hits per click: {n_hits.mean():.1f}; {len(clicks)} clicks; load {os.getloadavg()[0]:.1f}")
    print(f"explore_vs_index_search_ratio = {p50 / np.percentile(base_ms, 50):.1f}")
    print(f"cli_vs_explore_speedup = {np.percentile(cli, 50) / p50:.1f}")
    print(f"explore_query_ms_p90 = {np.percentile(whole, 90):.1f}")
    print(f"explore_query_ms_p50 = {p50:.1f}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
