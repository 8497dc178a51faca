"""Choosing, building, saving and loading the bank's FAISS index.

Vectors are L2-normalised, so every index uses the inner-product metric and a score is a cosine.
Size decides the kind (``IndexConfig``): exact ``IDMap,Flat`` for small banks, ``IVF{n},Flat``
for medium ones, ``IVF{n},PQ{m}`` for large ones; IVF and PQ are trained on a random sample.
With faiss-gpu and a GPU the index is trained, filled and searched on GPU, and always written
as a CPU index (faiss: ``index_gpu_to_cpu``), so a bank built on a GPU box opens anywhere.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np

from glocon.bank.config import IndexConfig
from glocon.errors import DataError
from glocon.io import atomic_write_bytes

METRIC = faiss.METRIC_INNER_PRODUCT
# faiss warns below 39 training points per centroid (Clustering.cpp); keep nlist under that.
MIN_POINTS_PER_CENTROID = 39


def auto_nlist(n: int) -> int:
    """IVF lists for n vectors: faiss's rule of thumb 4 sqrt(n) (wiki 'Guidelines to choose an index'),
    capped so every list has at least 39 training points."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // MIN_POINTS_PER_CENTROID))


def auto_pq_m(dim: int, wanted: int | None = None) -> int:
    """Sub-quantizer count: ``wanted`` (default dim, one byte per dimension: fewer bytes cap the
    recall below 0.9, see ``IndexConfig.pq_m``) rounded down to a divisor of dim."""
    m = max(1, min(wanted or dim, dim))
    while dim % m:
        m -= 1
    return m


def choose_factory(n: int, dim: int, cfg: IndexConfig) -> str:
    """The factory string for a bank of n vectors of size dim."""
    if cfg.factory:
        return cfg.factory
    if n <= cfg.exact_max:
        return "IDMap,Flat"
    nlist = cfg.nlist or auto_nlist(n)
    if n <= cfg.ivf_flat_max:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{auto_pq_m(dim, cfg.pq_m)}"


def gpu_count(cfg: IndexConfig | None = None) -> int:
    if cfg is not None and cfg.gpu == "never":
        return 0
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def to_gpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_cpu_to_all_gpus(index)


def to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__ else index


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Lists visited per query; a no-op for an index without IVF."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    elif "Gpu" in type(index).__name__ and hasattr(faiss, "GpuParameterSpace"):
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))


def _no_polysemous(index: faiss.Index) -> None:
    """index_factory turns on polysemous training for IVF-PQ (it ranks codes by Hamming distance);
    the bank never searches that way and it costs most of the training time, so switch it off."""
    try:
        # extract_index_ivf returns the IndexIVF base class: downcast, or the isinstance below is
        # never true and the training stays on (faiss 1.15: 102 s vs 23-39 s on IVF256,PQ64, same recall)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return
    if isinstance(ivf, faiss.IndexIVFPQ):
        ivf.do_polysemous_training = False


def build_index(vectors: np.ndarray, factory: str, cfg: IndexConfig, ids: np.ndarray | None = None) -> faiss.Index:
    """Train (on a sample) and fill an index; returns a CPU index. vectors (N, D) float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.ascontiguousarray(ids, dtype=np.int64)
    index = faiss.index_factory(dim, factory, METRIC)
    _no_polysemous(index)
    if gpu_count(cfg) > 0:
        index = to_gpu(index)
    if not index.is_trained:
        rng = np.random.default_rng(cfg.seed)
        take = min(n, cfg.train_size)
        sample = vectors if take == n else vectors[np.sort(rng.choice(n, take, replace=False))]
        index.train(sample)
    index.add_with_ids(vectors, ids)
    index = to_cpu(index)
    set_nprobe(index, cfg.nprobe)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) -> scores (Q, k) (cosine), ids (Q, k) (-1 where fewer than k were found)."""
    if nprobe is not None:
        set_nprobe(index, nprobe)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean |top-k found ∩ top-k exact| / k over queries (the 'k-recall@k' of the faiss benchmarks)."""
    hits = [len(set(f[:k].tolist()) & set(e[:k].tolist())) for f, e in zip(found, exact)]
    return float(np.mean(hits)) / k


def write_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Serialise a CPU copy of the index atomically."""
    data = faiss.serialize_index(to_cpu(index))
    return atomic_write_bytes(path, np.asarray(data, dtype=np.uint8).tobytes())


def read_index(path: str | os.PathLike, dim: int | None = None, count: int | None = None) -> faiss.Index:
    """Load an index; errors name the file and what was expected (the bank manifest's dim / count)."""
    path = Path(path)
    want = f"a FAISS index of {count if count is not None else '?'} vectors of dim {dim if dim is not None else '?'} written by the bank build"
    if not path.is_file():
        raise DataError(f"bank index not found: {path} (expected {want})")
    raw = np.fromfile(path, dtype=np.uint8)
    try:
        index = faiss.deserialize_index(raw)
    except Exception as exc:  # faiss raises RuntimeError with its C++ message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"bank index {path}: corrupt or not a FAISS index ({first}); expected {want}") from None
    if dim is not None and index.d != dim:
        raise DataError(f"bank index {path}: holds vectors of dim {index.d}, expected {dim} (the bank manifest's)")
    if count is not None and index.ntotal != count:
        raise DataError(f"bank index {path}: holds {index.ntotal} vectors, expected {count} (the bank manifest's)")
    return index
