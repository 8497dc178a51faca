"""Tensor ops more than one part of glocon needs, defined once: the ignore label, masked average
pooling and per-image min-max normalisation.

The module imports torch only for annotations, so the data layer can take ``IGNORE_INDEX``
from here without loading torch. Superpixel pooling over a feature grid (``glocon.pooling``) is
another operation: it pools many patches at once by a matrix product of per-cell weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = 255  # the label of pixels no metric or loss counts (VOC's void, COCO's crowd)


def masked_average(feats: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """sum_hw(f * m) / (sum_hw(m) + eps): feats (N, C, h, w), mask (N, 1, h, w) in [0, 1] at the
    features' size -> (N, C). ``eps`` keeps an empty mask finite (its average is 0)."""
    return (feats * mask).sum(dim=(2, 3)) / (mask.sum(dim=(2, 3)) + eps)


def min_max_normalize(s: torch.Tensor, eps: float) -> torch.Tensor:
    """(s - min s) / (max s - min s + eps) per image: s (B, ...) -> the same shape, in [0, 1)."""
    flat = s.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(s)


# Bilinear resizing, defined once. PFENet resizes with align_corners=True, which maps corner to
# corner and is exact only when (in - 1) divides (out - 1) (its 473 px = 8 * 59 + 1 input and
# 60 x 60 maps). At other sizes it shifts borders by up to half a feature cell (issue 23 measured
# proto at 128 px: 29.3 -> 33.5 mIoU with it off). align_corners=False maps pixel centres to
# pixel centres, which is right for any size; every resize of maps, logits and masks goes here.
ALIGN_CORNERS = False


def resize(x: torch.Tensor, size: tuple[int, ...] | list[int] | torch.Size, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, h, w) -> (N, C, *size), pixel centres aligned; a no-op at the same size."""
    import torch.nn.functional as F

    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode in ("nearest", "area"):
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=ALIGN_CORNERS)
