"""Synthetic bank-like vectors for tests and benches.

Uniform random vectors are the worst case for any ANN index (no neighbourhood structure, every
point nearly equidistant; see the faiss wiki 'Indexing 1M vectors'), and nothing like patch
embeddings, which cluster by what they show and vary along few directions. So the generator
draws a Gaussian mixture in a low-dimensional latent space (``intrinsic`` dims), maps it into
``dim`` dims with a random orthonormal basis, adds a little isotropic noise, and L2-normalises
the rows like bank vectors.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(
    n: int,
    dim: int = 128,
    intrinsic: int = 24,
    n_clusters: int = 1024,
    spread: float = 1.0,
    noise: float = 0.05,
    seed: int = 0,
    chunk: int = 200_000,
) -> np.ndarray:
    """(n, dim) float32 unit rows. ``spread``: cluster std relative to the centres' (unit) scale,
    ``noise``: ambient std, both in units of a latent coordinate."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, intrinsic)))  # (dim, intrinsic), orthonormal columns
    basis = basis.astype(np.float32)
    centres = rng.standard_normal((n_clusters, intrinsic)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = centres[rng.integers(0, n_clusters, m)] + spread * rng.standard_normal((m, intrinsic)).astype(np.float32)
        x = z @ basis.T + noise * rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out
