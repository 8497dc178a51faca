"""FEM, the Feature Enrichment Module of PFENet, used by QGNet as its decoder (paper Sec. IV-B).

Structure follows ``dvlab-research/PFENet`` ``model/PFENet.py`` (and the QGNet release, which
only widens ``init_merge`` by one channel for its extra map):

- for each bin b (60, 30, 15, 8 at PFENet's 473 px input, i.e. a 60x60 feature map): adaptive
  average pooling of the query features to b x b, the category guider expanded to b x b and the
  region maps resized to b x b (bilinear; ``glocon.ops.resize`` aligns pixel centres), concatenated and merged by a 1x1
  conv (``init_merge``);
- inter-scale merge, top-down from the finest bin: the previous bin's output is resized to this
  bin, concatenated, and added back through a 1x1 conv (``alpha_conv``), then two 3x3 convs with
  a residual (``beta_conv``);
- an auxiliary classifier per bin (``inner_cls``), whose losses PFENet averages;
- every bin's output is resized to the feature size, concatenated, reduced (``res1``), refined
  with a residual (``res2``) and classified (``cls``).

PFENet's convs have no bias and no BatchNorm here; neither do ours.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glocon.plugin_api import resize

PFENET_BINS = (60, 30, 15, 8)
PFENET_FEATURE_SIZE = 60  # (473 - 1) / 8 + 1: PFENet's bins are absolute at this feature size


def resolve_bins(
    bins: Sequence[float], feat_hw: tuple[int, int], reference: int | None = PFENET_FEATURE_SIZE
) -> list[tuple[int, int]]:
    """Bin sizes (h, w) for a (h, w) feature map.

    A bin <= 1.0 is a fraction of the feature size (PFENet's own convention for relative bins).
    A bin > 1 is absolute at ``reference`` (PFENet: 60) and scaled by feat / reference, so the
    pyramid keeps its shape at other input sizes; ``reference=None`` keeps it absolute, as
    PFENet does. Every bin is at least 1 and at most the feature size.
    """
    h, w = feat_hw
    out: list[tuple[int, int]] = []
    for b in bins:
        if b <= 0:
            raise ValueError(f"bin {b}: expected > 0")
        if b <= 1.0:
            size = (int(h * b), int(w * b))  # PFENet: bin = int(query_feat.shape[2] * tmp_bin)
        elif reference is None:
            size = (int(b), int(b))
        else:
            size = (round(b * h / reference), round(b * w / reference))
        out.append((min(max(size[0], 1), h), min(max(size[1], 1), w)))
    return out


def _conv_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2, bias=False), nn.ReLU(inplace=True)]


def _classifier(dim: int, classes: int, dropout: float = 0.1) -> nn.Sequential:
    # PFENet's cls / inner_cls: 3x3 conv, ReLU, Dropout2d(0.1), 1x1 conv to the classes
    return nn.Sequential(*_conv_relu(dim, dim, 3), nn.Dropout2d(p=dropout), nn.Conv2d(dim, classes, kernel_size=1))


class FEM(nn.Module):
    """forward(query_feat (B, C, h, w), guider (B, C, 1, 1), region_maps (B, M, h', w') | None)
    -> (logits (B, classes, h, w), aux_logits [(B, classes, b_h, b_w) per bin])."""

    def __init__(
        self,
        reduce_dim: int = 256,
        n_maps: int = 2,
        bins: Sequence[float] = PFENET_BINS,
        bins_reference: int | None = PFENET_FEATURE_SIZE,
        classes: int = 2,
        cls_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not bins:
            raise ValueError("FEM needs at least one bin")
        self.reduce_dim = reduce_dim
        self.n_maps = n_maps
        self.bins = tuple(float(b) for b in bins)
        self.bins_reference = bins_reference
        n = len(self.bins)
        self.init_merge = nn.ModuleList(nn.Sequential(*_conv_relu(2 * reduce_dim + n_maps, reduce_dim, 1)) for _ in range(n))
        self.alpha_conv = nn.ModuleList(nn.Sequential(*_conv_relu(2 * reduce_dim, reduce_dim, 1)) for _ in range(n - 1))
        self.beta_conv = nn.ModuleList(
            nn.Sequential(*_conv_relu(reduce_dim, reduce_dim, 3), *_conv_relu(reduce_dim, reduce_dim, 3)) for _ in range(n)
        )
        self.inner_cls = nn.ModuleList(_classifier(reduce_dim, classes, cls_dropout) for _ in range(n))
        self.res1 = nn.Sequential(*_conv_relu(reduce_dim * n, reduce_dim, 1))
        self.res2 = nn.Sequential(*_conv_relu(reduce_dim, reduce_dim, 3), *_conv_relu(reduce_dim, reduce_dim, 3))
        self.cls = _classifier(reduce_dim, classes, cls_dropout)

    def forward(
        self, query_feat: torch.Tensor, guider: torch.Tensor, region_maps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, h, w = query_feat.shape
        if c != self.reduce_dim or guider.shape != (b, c, 1, 1):
            raise ValueError(f"FEM: query {tuple(query_feat.shape)} / guider {tuple(guider.shape)} do not fit reduce_dim={self.reduce_dim}")
        got_maps = 0 if region_maps is None else region_maps.shape[1]
        if got_maps != self.n_maps:
            raise ValueError(f"FEM was built for {self.n_maps} region maps, got {got_maps}")
        pyramid: list[torch.Tensor] = []
        aux: list[torch.Tensor] = []
        for idx, size in enumerate(resolve_bins(self.bins, (h, w), self.bins_reference)):
            parts = [F.adaptive_avg_pool2d(query_feat, size), guider.expand(-1, -1, *size)]
            if region_maps is not None:
                parts.append(resize(region_maps, size))
            merged = self.init_merge[idx](torch.cat(parts, dim=1))
            if idx >= 1:  # inter-scale merge: the coarser bin reads the previous (finer) one
                prev = resize(pyramid[idx - 1], size)
                merged = self.alpha_conv[idx - 1](torch.cat([merged, prev], dim=1)) + merged
            merged = self.beta_conv[idx](merged) + merged
            aux.append(self.inner_cls[idx](merged))
            pyramid.append(resize(merged, (h, w)))
        feat = self.res1(torch.cat(pyramid, dim=1))
        feat = self.res2(feat) + feat
        return self.cls(feat), aux
