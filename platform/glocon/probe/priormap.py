"""Prior-map separability: does the prior region map (Eq. 9-12) between a frozen feature
extractor F and the prior F_p tell objects from background, and in which direction?

For each val image: X_q = F(I_q), P_q = F_p(I_q) (Eq. 8); S_Q = prior_region_map(X_q, P_q)
(``glocon.regionmaps``, the function QGNet uses), upsampled bilinearly to the mask. Over every
labelled pixel of every val image, AUROC of S_Q for "object" (any class but 0) against
"background" (0); 255 is left out. The paper (Sec. IV-C) reports the map LOW on objects, which
shows here as an AUROC under 0.5; ``separability`` = max(AUROC, 1 - AUROC) is the direction-free
figure.

Eq. 9 compares F's channels with F_p's one for one. That means something only when the two maps
live in one space (a prior initialised from F's weights); a prior trained from scratch has
channels unrelated to F's, and often another width. The QGNet release bridges the two with
learned convolutions. The probe stays training-free and label-free instead: with ``align="lstsq"``
(the default) P_q is first mapped into F's space by the least-squares linear map fitted on the
*train* images' cells (P W ~ X), so the map asks "where does the prior hold what F's features
cannot linearly explain?". ``align="none"`` is the literal Eq. 9 and needs equal widths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glocon.ops import IGNORE_INDEX
from glocon.probe.metrics import auroc
from glocon.regionmaps import prior_region_map


def region_map_scores(bridge: np.ndarray, prior: np.ndarray, masks: list[np.ndarray], max_pixels: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Pixel scores and object flags over all images. bridge (N, C, h, w), prior (N, C, h', w').

    Each mask is first reduced (nearest) so that it holds at most ``max_pixels`` pixels: the
    AUROC of a bilinear upsampling is the same at any resolution up to interpolation detail.
    """
    scores, objects = [], []
    for i, m in enumerate(masks):
        s = prior_region_map(torch.from_numpy(bridge[i : i + 1]), torch.from_numpy(prior[i : i + 1]))  # (1, 1, h, w)
        H, W = m.shape
        f = min(1.0, (max_pixels / float(H * W)) ** 0.5)
        size = (max(1, round(H * f)), max(1, round(W * f)))
        if size != (H, W):
            m = F.interpolate(torch.from_numpy(np.ascontiguousarray(m))[None, None].float(), size=size, mode="nearest")[0, 0].numpy().astype(np.uint8)
        up = F.interpolate(s, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
        keep = m != IGNORE_INDEX
        scores.append(up[keep])
        objects.append(m[keep] != 0)
    return np.concatenate(scores), np.concatenate(objects)


def fit_alignment(prior: np.ndarray, bridge: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """(D_p + 1, D_f) least-squares map (with a bias row) from prior cells to F's cells of the
    same images. prior (N, D_p, h', w') and bridge (N, D_f, h, w): the prior is resampled to F's grid
    first. A small ridge (relative to the mean feature energy) keeps it stable."""
    p = torch.from_numpy(prior)
    if p.shape[-2:] != bridge.shape[-2:]:
        p = F.interpolate(p, size=bridge.shape[-2:], mode="bilinear", align_corners=False)
    P = p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]).double()
    X = torch.from_numpy(bridge).permute(0, 2, 3, 1).reshape(-1, bridge.shape[1]).double()
    P = torch.cat([P, torch.ones(len(P), 1, dtype=P.dtype)], dim=1)
    gram = P.T @ P
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram, P.T @ X).float().numpy()


def apply_alignment(prior: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, D_p, h, w) -> (N, D_f, h, w) through ``fit_alignment``'s map."""
    n, d, h, wd = prior.shape
    flat = prior.transpose(0, 2, 3, 1).reshape(-1, d)
    out = flat @ w[:-1] + w[-1]
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2).copy()


def separability(bridge: np.ndarray, prior: np.ndarray, masks: list[np.ndarray]) -> dict[str, Any]:
    """{"auroc", "separability", "direction", "mean_object", "mean_background"} or why not."""
    if bridge.shape[1] != prior.shape[1]:
        return {"auroc": None, "reason": f"F gives {bridge.shape[1]} channels and the prior {prior.shape[1]}: Eq. 9's cosine needs the same width (align the prior: prior_map.align=lstsq)"}
    s, obj = region_map_scores(bridge, prior, masks)
    a = auroc(s, obj)
    if not np.isfinite(a):
        return {"auroc": None, "reason": "the val masks hold no object pixel or no background pixel"}
    return {
        "auroc": a,
        "separability": max(a, 1.0 - a),
        "direction": "low on objects" if a < 0.5 else "high on objects",
        "mean_object": float(s[obj].mean()),
        "mean_background": float(s[~obj].mean()),
        "pixels": int(len(s)),
    }
