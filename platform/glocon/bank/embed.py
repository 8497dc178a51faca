"""Patch embeddings: the one code path shared by the bank build and by queries.

A patch vector is the superpixel average of the prior's dense map (``glocon.pooling``, the same
pooling pretraining uses for L_local, Eq. 6), then L2-normalised, so inner product = cosine.
Superpixels stay at shard resolution; only the prior's input may be resized (``input_size``):
``patch_weights`` maps each pixel onto the feature grid by proportional position.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from glocon.featstore import Slot
from glocon.models.prior import PriorExtractor
from glocon.ops import IGNORE_INDEX
from glocon.pooling import patch_weights, pool_patches

NO_CLASS = -1


def to_input(image: np.ndarray, input_size: int | None, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') float in [0, 1], longest side ``input_size`` when given."""
    x = torch.from_numpy(np.array(image, copy=True)).to(device).permute(2, 0, 1)[None].float() / 255.0
    if input_size:
        h, w = image.shape[:2]
        scale = input_size / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


@torch.no_grad()
def global_vector(model: PriorExtractor, x: torch.Tensor, cached: Slot | None = None) -> torch.Tensor:
    """The prior's global embedding q (MoCo head), (B, 128), L2-normalised."""
    def encode(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"q": model(t)[0]}

    return (cached(encode, x) if cached is not None else encode(x))["q"]


@torch.no_grad()
def embed_patches(
    model: PriorExtractor,
    image: np.ndarray,
    labels: np.ndarray,
    n_patches: int,
    source: str = "prior",
    mode: Literal["area", "majority"] = "area",
    input_size: int | None = None,
    device: torch.device | str = "cpu",
    cached: Slot | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image -> (vectors (n_patches, D) float32 L2-normalised, grid area (n_patches,) in cells).

    labels: (H, W) int, ids in [0, n_patches); other ids (e.g. -1) belong to no patch.
    """
    device = torch.device(device)
    x = to_input(image, input_size, device)
    # (1, D, h, w); from the feature store when ``cached`` is this model's map there
    def encode(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"map": model.dense_map(t, source)}

    feats = (cached(encode, x) if cached is not None else encode(x))["map"].float()
    lab = torch.from_numpy(np.array(labels, dtype=np.int64, copy=True)).to(device).long()[None]
    weights = patch_weights(lab, n_patches, tuple(feats.shape[-2:]), mode)  # (1, P, h*w)
    pooled, area = pool_patches(feats, weights)  # (1, P, D), (1, P)
    vectors = F.normalize(pooled[0], dim=1)
    return vectors.cpu().numpy().astype(np.float32), area[0].cpu().numpy().astype(np.float32)


def patch_table(labels: np.ndarray, mask: np.ndarray | None, n_patches: int | None = None) -> dict[str, np.ndarray]:
    """Per superpixel of a (H, W) label map: bbox (x0, y0, x1, y1; x1/y1 exclusive), pixel area and,
    with a mask, the dominant class (ignore = 255 excluded) and the share of labelled pixels it holds."""
    n = int(labels.max()) + 1 if n_patches is None else n_patches
    area = np.bincount(labels.ravel(), minlength=n)[:n].astype(np.int64)
    boxes = np.zeros((n, 4), np.int32)
    for i, sl in enumerate(ndimage.find_objects(labels + 1, max_label=n)):
        if sl is not None:
            boxes[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    dominant = np.full(n, NO_CLASS, np.int32)
    frac = np.zeros(n, np.float32)
    if mask is not None:
        counts = np.bincount(labels.ravel().astype(np.int64) * 256 + mask.ravel(), minlength=n * 256)
        counts = counts[: n * 256].reshape(n, 256)
        counts[:, IGNORE_INDEX] = 0
        total = counts.sum(1)
        has = total > 0
        dominant[has] = counts[has].argmax(1)
        frac[has] = counts[has].max(1) / total[has]
    return {
        "superpixel": np.arange(n, dtype=np.int32),
        "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
        "area": area,
        "dominant_class": dominant,
        "dominant_frac": frac,
    }
