"""The prior extractor's losses (paper Sec. IV-A, Eq. 1, 6 and 7) as pure functions of tensors.

- ``info_nce``: InfoNCE against a queue of negatives, for both L_global (Eq. 1, queue of K image
  keys) and L_local (Eq. 6, queue of M patch keys).
- ``local_patch_pairs``: which superpixels (patches) of each image enter L_local: up to P per
  image, visible in both views above a minimum area on the feature grid. Superpixel id s means the
  same source region in both views (train/views.py crops the map with the image), so the positive
  of query patch s is key patch s of the other view, as in DetCon (google-deepmind/detcon).
- ``pooled_patch_vectors``: mask-average pooling (glocon.pooling) of a dense map over the chosen
  patches, L2-normalised, ready for ``info_nce``.
- ``total_loss``: Eq. (7) with configurable weights, so Table VI's ablations (global only, local
  only, both) are one flag each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from glocon.pooling import patch_weights, pool_patches


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean InfoNCE of N queries against their positives and a shared queue of negatives.

    q: (N, D) queries; k_pos: (N, D) their positive keys; queue: (K, D) negative keys. All
    L2-normalised by the caller. Returns a scalar:

        L = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_i exp(q.k_i / tau)) )     # Eq. (1), Eq. (6)

    The denominator's sum over i = 0..K of the paper includes the positive, as in MoCo's logits
    layout (positive at index 0, then the queue). N = 0 gives 0 (an image with no shared patch).
    """
    if q.shape[0] == 0:
        return q.sum() * 0.0
    l_pos = (q * k_pos).sum(dim=1, keepdim=True)  # (N, 1)
    l_neg = q @ queue.t()  # (N, K)
    logits = torch.cat([l_pos, l_neg.to(l_pos.dtype)], dim=1) / tau  # (N, 1 + K)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is column 0
    return F.cross_entropy(logits.float(), labels)


@dataclass
class PatchPairs:
    """Patches chosen for L_local.

    weights_q / weights_k: (B, n, h * w) pooling weights of every patch id in each view;
    index: (N, 2) long rows (image b, patch id s) of the chosen pairs.
    """

    weights_q: torch.Tensor
    weights_k: torch.Tensor
    index: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.index.shape[0])


def local_patch_pairs(
    labels_q: torch.Tensor,
    labels_k: torch.Tensor,
    grid: tuple[int, int],
    max_patches: int,
    min_area: float,
    mode: Literal["area", "majority"] = "area",
    generator: torch.Generator | None = None,
) -> PatchPairs:
    """Sample up to ``max_patches`` (P) patches per image that both views show.

    labels_q, labels_k: (B, H, W) long superpixel maps of the two views (same ids = same source
    region; ids < 0 are ignored). grid: the dense map's (h, w). A patch qualifies when it covers
    at least ``min_area`` feature-grid cells in BOTH views (area = sum of its pooling weights).
    Among qualifying patches, P are drawn uniformly at random (``generator`` makes it seeded).
    """
    if labels_q.shape != labels_k.shape:
        raise ValueError(f"label maps of the two views differ in shape: {tuple(labels_q.shape)} vs {tuple(labels_k.shape)}")
    n = int(max(labels_q.max().item(), labels_k.max().item())) + 1 if labels_q.numel() else 0
    n = max(n, 1)
    w_q = patch_weights(labels_q, n, grid, mode)  # (B, n, h*w)
    w_k = patch_weights(labels_k, n, grid, mode)
    visible = (w_q.sum(dim=2) >= min_area) & (w_k.sum(dim=2) >= min_area) & (w_q.sum(dim=2) > 0) & (w_k.sum(dim=2) > 0)
    scores = torch.rand(visible.shape, generator=generator, device="cpu").to(visible.device)
    scores = torch.where(visible, scores, torch.full_like(scores, -1.0))  # (B, n)
    top = scores.topk(min(max_patches, n), dim=1)  # random P among the visible ones
    keep = top.values >= 0
    b_idx = torch.arange(labels_q.shape[0], device=labels_q.device)[:, None].expand_as(top.indices)
    index = torch.stack([b_idx[keep], top.indices[keep]], dim=1)  # (N, 2)
    return PatchPairs(w_q, w_k, index)


def pooled_patch_vectors(dense: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """dense (B, D, h, w), weights (B, n, h*w), index (N, 2) -> (N, D) L2-normalised patch vectors."""
    pooled, _ = pool_patches(dense, weights)  # (B, n, D)
    return F.normalize(pooled[index[:, 0], index[:, 1]], dim=1)


def total_loss(L_global: torch.Tensor, L_local: torch.Tensor, w_global: float = 1.0, w_local: float = 1.0) -> torch.Tensor:
    """L = w_local * L_local + w_global * L_global (Eq. 7 with both weights 1).

    A zero weight drops its term entirely (Table VI: global only / local only).
    """
    total = L_global.new_zeros(())
    if w_global:
        total = total + w_global * L_global
    if w_local:
        total = total + w_local * L_local
    return total
