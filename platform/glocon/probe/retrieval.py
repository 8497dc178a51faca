"""Dense nearest-neighbour retrieval segmentation (Balazevic et al., NeurIPS 2023, "Towards
In-context Scene Understanding"; public reproduction ``vpariza/open-hummingbird-eval``).

1. Every feature-grid cell of a labelled *train* image becomes a memory entry: its L2-normalised
   feature and its class distribution (the share of each class among the cell's pixels, 255
   left out; ``cell_label_distribution``). open-hummingbird-eval labels a patch the same way
   (``one_hot(patch gt).mean``).
2. Each cell of a *val* image takes the softmax-weighted vote of its k nearest memory entries
   (cosine, FAISS exact inner product through ``glocon.bank.index``):
   label(q) = sum_i softmax(cos(q, m_i) / T)_i * labels(m_i).
   open-hummingbird-eval's defaults, kept here: k = 30, T = 0.02.
3. The vote map (C, h, w) is upsampled bilinearly to the mask and its argmax scored by mIoU.

``memory_size`` caps the memory by a seeded uniform draw of cells (the only randomness here).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from glocon.bank.config import IndexConfig
from glocon.bank.index import build_index, search
from glocon.ops import IGNORE_INDEX
from glocon.pooling import cell_index


def cell_label_distribution(mask: np.ndarray, grid: tuple[int, int], n_classes: int, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 mask -> (h*w, C) class shares per feature-grid cell and (h*w,) labelled share.

    Cells follow ``glocon.pooling.cell_index`` (proportional position), the mapping the local loss
    and the bank use. A cell whose pixels are all ``ignore_index`` gets an all-zero row.
    """
    h, w = grid
    cells = cell_index(mask.shape[0], mask.shape[1], grid).numpy().reshape(-1)
    m = mask.reshape(-1).astype(np.int64)
    valid = m != ignore_index
    if valid.any() and m[valid].max() >= n_classes:
        raise ValueError(f"mask holds class {int(m[valid].max())}, outside 0..{n_classes - 1}")
    counts = np.bincount(cells[valid] * n_classes + m[valid], minlength=h * w * n_classes).reshape(h * w, n_classes).astype(np.float32)
    pixels = np.bincount(cells, minlength=h * w).astype(np.float32)
    labelled = counts.sum(1)
    dist = counts / np.maximum(labelled, 1.0)[:, None]
    return dist, labelled / np.maximum(pixels, 1.0)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised (a zero row stays zero), float32 contiguous."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_memory(
    features: np.ndarray, labels: np.ndarray, labelled: np.ndarray, memory_size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Memory entries from train cells: features (M, D) L2-normalised, labels (M, C).

    features (N, D), labels (N, C), labelled (N,) from ``cell_label_distribution``; cells with no
    labelled pixel are left out; ``memory_size`` (None = all) keeps a seeded uniform draw.
    """
    keep = np.flatnonzero(labelled > 0)
    if memory_size is not None and len(keep) > memory_size:
        keep = np.sort(np.random.default_rng(seed).choice(keep, memory_size, replace=False))
    return normalize_rows(features[keep]), np.ascontiguousarray(labels[keep], dtype=np.float32)


class RetrievalMemory:
    """A FAISS index over memory features plus their label distributions."""

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        if len(features) == 0:
            raise ValueError("retrieval memory is empty: no train cell has a labelled pixel")
        self.labels = labels
        self.index = build_index(normalize_rows(features), "IDMap,Flat", IndexConfig(gpu="never"))

    def vote(self, queries: np.ndarray, k: int, temperature: float) -> np.ndarray:
        """(Q, D) -> (Q, C): softmax(cos / T)-weighted mean of the k nearest entries' labels."""
        k = min(k, len(self.labels))
        scores, ids = search(self.index, normalize_rows(queries), k)
        weights = torch.softmax(torch.from_numpy(scores).double() / temperature, dim=1).numpy()
        return np.einsum("qk,qkc->qc", weights, self.labels[ids]).astype(np.float32)


def segment(votes: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(h*w, C) votes of one image -> (H, W) int predicted class, after a bilinear upsampling."""
    h, w = grid
    v = torch.from_numpy(votes).T.reshape(1, -1, h, w)
    up = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
    return up[0].max(0).indices.numpy().astype(np.int64)  # argmax over classes (first on ties), 3x faster on CPU
