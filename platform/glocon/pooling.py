"""Mask-average pooling of a dense feature map over superpixels (patches).

DetCon (google-deepmind/detcon) maps each precomputed mask onto the feature grid and pools by a
matrix product; glocon does the same with scatter-add so memory stays O(H x W), not
O(patches x H x W). Used by the local loss (Eq. 6), by the bank and by the plugins.
"""

from __future__ import annotations

from typing import Literal

import torch


def cell_index(height: int, width: int, grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """(H, W) long: the feature-grid cell (row-major over ``grid`` = (h, w)) each pixel falls in."""
    h, w = grid
    ys = torch.arange(height, device=device) * h // height
    xs = torch.arange(width, device=device) * w // width
    return ys[:, None] * w + xs[None, :]


def patch_weights(
    labels: torch.Tensor, n_patches: int, grid: tuple[int, int], mode: Literal["area", "majority"] = "area"
) -> torch.Tensor:
    """Superpixel map -> per-patch weights on the feature grid.

    labels: (B, H, W) long, ids in [0, n_patches); other ids (e.g. -1) are ignored.
    Returns (B, n_patches, h * w): for ``area``, the fraction of each cell a patch covers
    (columns sum to <= 1); for ``majority``, 1 where the patch holds most of the cell.
    """
    b, height, width = labels.shape
    h, w = grid
    cells = cell_index(height, width, grid, labels.device)  # (H, W)
    valid = (labels >= 0) & (labels < n_patches)
    idx = labels.clamp(0, n_patches - 1) * (h * w) + cells  # (B, H, W)
    counts = torch.zeros(b, n_patches * h * w, device=labels.device, dtype=torch.float32)
    counts.scatter_add_(1, idx.reshape(b, -1), valid.reshape(b, -1).float())
    counts = counts.view(b, n_patches, h * w)
    per_cell = torch.bincount(cells.reshape(-1), minlength=h * w).clamp_min(1).to(counts)  # (h*w,)
    weights = counts / per_cell
    if mode == "majority":
        top = weights.argmax(dim=1, keepdim=True)  # (B, 1, h*w)
        has_any = weights.sum(dim=1, keepdim=True) > 0
        weights = torch.zeros_like(weights).scatter_(1, top, 1.0) * has_any
    elif mode != "area":
        raise ValueError(f"patch pooling mode {mode!r}: expected 'area' or 'majority'")
    return weights


def pool_patches(features: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted average of features per patch.

    features: (B, D, h, w); weights: (B, P, h * w) from ``patch_weights``.
    Returns pooled (B, P, D) and area (B, P) in grid cells (0 for a patch absent from the grid).
    """
    b, d, h, w = features.shape
    flat = features.reshape(b, d, h * w).transpose(1, 2)  # (B, h*w, D)
    area = weights.sum(dim=2)  # (B, P)
    pooled = torch.bmm(weights.to(flat.dtype), flat) / area.clamp_min(eps).unsqueeze(-1).to(flat.dtype)
    return pooled, area
