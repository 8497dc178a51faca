"""Bench the bank's three index kinds on synthetic 128-d vectors (glocon.bank.synthetic).

    python bench/bank.py                 # 1M vectors (the issue's size): ~5-8 min on 2 cores
    python bench/bank.py --n 200000      # a quick run

For Flat (exact, the baseline), IVF-Flat and IVF-PQ it prints build time, single-query latency
p50/p99 (one query per call, as an interactive query is), recall@10 against exact, and index
bytes per vector. For each IVF kind it sweeps nprobe and reports the smallest nprobe whose
recall@10 reaches --target (0.9); the IVF-PQ speed-up is exact p50 / IVF-PQ p50 at that nprobe.
Both IVF indexes share one coarse quantizer (spherical k-means, trained once; its time is added
to both build times). Headline figures are the last three lines.
"""

from __future__ import annotations

import argparse
import math
import time

import faiss
import numpy as np

from glocon.bank.index import recall_at_k
from glocon.bank.synthetic import clustered_vectors

K = 10


def latency_ms(index: faiss.Index, queries: np.ndarray) -> np.ndarray:
    out = np.empty(len(queries))
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t = time.perf_counter()
        index.search(q, K)
        out[i] = (time.perf_counter() - t) * 1e3
    return out


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).size)


def sweep(name: str, index: faiss.Index, queries: np.ndarray, exact: np.ndarray, target: float, nprobes: list[int], ivf: faiss.Index | None = None) -> tuple[int, float]:
    """Smallest nprobe reaching ``target`` recall@10 (else the best one), and its recall.
    ``ivf``: the IVF index whose nprobe to set when ``index`` wraps it (a re-ranking stage)."""
    best = (nprobes[-1], -1.0)
    for nprobe in nprobes:
        (ivf if ivf is not None else index).nprobe = nprobe
        _, ids = index.search(queries, K)
        r = recall_at_k(ids, exact, K)
        print(f"  {name:<9} nprobe={nprobe:<4} recall@10={r:.4f}", flush=True)
        if r > best[1]:
            best = (nprobe, r)
        if r >= target:
            return nprobe, r
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: sqrt(n), rounded)")
    ap.add_argument("--pq-m", type=int, default=128, help="PQ bytes per vector (8-bit codes); the bank's default is one per dimension")
    ap.add_argument("--train", type=int, default=100_000, help="training sample size")
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k-factor", type=int, default=4, help="IVF-PQ + exact re-rank: candidates = k_factor x 10")
    args = ap.parse_args(argv)
    n, d = args.n, args.dim
    nlist = args.nlist or max(1, round(math.sqrt(n)))
    print(f"bank bench: n={n} dim={d} nlist={nlist} pq_m={args.pq_m} train={args.train} faiss {faiss.__version__} "
          f"threads={faiss.omp_get_max_threads()} (latency: one query per call)", flush=True)

    t = time.perf_counter()
    data = clustered_vectors(n + args.recall_queries, d, seed=args.seed)
    base, queries = data[:n], data[n:]
    print(f"data: {time.perf_counter() - t:.1f}s (clustered, 24 intrinsic dims, L2-normalised)", flush=True)
    lat_q = queries[: args.latency_queries]
    rows = {}

    # Exact baseline.
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, exact = flat.search(queries, K)
    print(f"exact ground truth for {len(queries)} queries: {time.perf_counter() - t:.1f}s", flush=True)
    lat = latency_ms(flat, lat_q)
    rows["flat"] = dict(build=build, p50=np.percentile(lat, 50), p99=np.percentile(lat, 99), recall=1.0, nprobe="-", bytes=index_bytes(flat) / n)
    print(f"flat: build {build:.2f}s p50 {rows['flat']['p50']:.2f}ms", flush=True)

    # One coarse quantizer for both IVF kinds.
    rng = np.random.default_rng(args.seed)
    sample = base[np.sort(rng.choice(n, min(n, args.train), replace=False))]
    t = time.perf_counter()
    km = faiss.Kmeans(d, nlist, niter=10, spherical=True, seed=args.seed, verbose=False)
    km.train(sample)
    t_quant = time.perf_counter() - t
    print(f"coarse quantizer: {nlist} centroids in {t_quant:.1f}s", flush=True)
    nprobes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist]

    for name, make in (
        ("ivf_flat", lambda q: faiss.IndexIVFFlat(q, d, nlist, faiss.METRIC_INNER_PRODUCT)),
        ("ivf_pq", lambda q: faiss.IndexIVFPQ(q, d, nlist, args.pq_m, 8, faiss.METRIC_INNER_PRODUCT)),
    ):
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(km.centroids)
        index = make(quantizer)
        index.own_fields = True
        quantizer.this.disown()
        t = time.perf_counter()
        index.train(sample)  # the quantizer is already filled: only PQ (if any) trains here
        index.add(base)
        build = t_quant + time.perf_counter() - t
        print(f"{name}: build {build:.1f}s", flush=True)
        nprobe, recall = sweep(name, index, queries, exact, args.target, nprobes)
        index.nprobe = nprobe
        lat = latency_ms(index, lat_q)
        rows[name] = dict(build=build, p50=np.percentile(lat, 50), p99=np.percentile(lat, 99), recall=recall, nprobe=nprobe, bytes=index_bytes(index) / n)
        if name == "ivf_pq":
            # PQ's quantisation error caps its recall (faiss wiki: "IndexRefine"); re-ranking k_factor x 10
            # PQ candidates with the exact vectors lifts it, at the cost of keeping the raw vectors.
            rerank = faiss.IndexRefineFlat(index, faiss.swig_ptr(base))
            rerank.k_factor = args.k_factor
            nprobe_r, recall_r = sweep("ivf_pq+rr", rerank, queries, exact, args.target, nprobes, ivf=index)
            index.nprobe = nprobe_r
            lat = latency_ms(rerank, lat_q)
            rows["ivf_pq_rr"] = dict(build=build, p50=np.percentile(lat, 50), p99=np.percentile(lat, 99), recall=recall_r,
                                     nprobe=nprobe_r, bytes=(index_bytes(index) + base.nbytes) / n)
            del rerank
        del index

    print(f"\n{'index':<9} {'build_s':>8} {'nprobe':>6} {'p50_ms':>8} {'p99_ms':>8} {'recall@10':>9} {'bytes/vec':>9} {'speedup':>8}")
    for name, r in rows.items():
        speed = rows["flat"]["p50"] / r["p50"]
        print(f"{name:<9} {r['build']:>8.2f} {r['nprobe']!s:>6} {r['p50']:>8.3f} {r['p99']:>8.3f} {r['recall']:>9.4f} {r['bytes']:>9.1f} {speed:>7.1f}x")
    pq = rows["ivf_pq"]
    reached = pq["recall"] >= args.target
    print(f"ivf_pq reached recall@10 >= {args.target}: {reached} (nprobe {pq['nprobe']}); "
          f"memory {pq['bytes']:.1f} B/vector vs {rows['flat']['bytes']:.1f} for flat ({rows['flat']['bytes'] / pq['bytes']:.1f}x smaller)")
    rr = rows["ivf_pq_rr"]
    print(f"ivf_pq + exact re-rank (k_factor {args.k_factor}): recall@10 {rr['recall']:.4f} at nprobe {rr['nprobe']}, "
          f"{rows['flat']['p50'] / rr['p50']:.1f}x faster than exact, {rr['bytes']:.1f} B/vector")
    print(f"ivfpq_rerank_speedup_vs_exact = {rows['flat']['p50'] / rr['p50']:.2f}")
    print(f"ivfpq_rerank_recall_at_10 = {rr['recall']:.4f}")
    print(f"ivfpq_speedup_vs_exact = {rows['flat']['p50'] / pq['p50']:.2f}")
    print(f"ivfpq_recall_at_10 = {pq['recall']:.4f}")
    print(f"flat_query_ms_p50 = {rows['flat']['p50']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
