"""Region maps and the category guider of QGNet (paper Sec. IV-B, Eq. 9-12): pure tensor functions.

They live in the platform, not in the QGNet plugin, because the platform measures them too: the
dense probe (``glocon.probe``) scores how well a prior's region map separates objects. The plugin
imports them from here (``glocon_qgnet.region_maps`` re-exports them for its users).

Facts taken from the released code (``liuweide01/QGNet-Few-shot-segmentation``,
``model/PFENet_QGNet.py``) and from PFENet (``dvlab-research/PFENet``, ``model/PFENet.py``):

- the cosine adds ``eps = 1e-7`` to the product of norms, so an all-zero (masked-out) feature
  gives a similarity of 0 instead of NaN;
- the maximum is taken over the *other* map's positions (prior positions for the prior map,
  support positions for the guided map), one value per bridge position;
- min-max normalisation is per image, with the same ``eps`` in the denominator (Eq. 12);
- the category guider is PFENet's ``Weighted_GAP``: sum(f * m) / (sum(m) + 0.0005).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from glocon import ops
from glocon.ops import resize

EPS = 1e-7  # paper, after Eq. 12; also the release's ``cosine_eps``
GAP_EPS = 5e-4  # PFENet's Weighted_GAP adds 0.0005 to the mask area


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) or (B, C, N) -> (B, C, N)."""
    if x.dim() == 4:
        return x.flatten(2)
    if x.dim() == 3:
        return x
    raise ValueError(f"expected a (B, C, h, w) or (B, C, N) tensor, got shape {tuple(x.shape)}")


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()  # e.g. the meta device, which has no autocast state


def cosine_similarity_map(x: torch.Tensor, p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. (9) for every pair of positions: cos(x_q, p_q') = x_q^T p_q' / (||x_q|| ||p_q'|| + eps).

    x: (B, C, h, w) bridge features, p: (B, C, h', w') prior (or support) features
    -> (B, h*w, h'*w'), row q holds the similarity of bridge position q to every position q'.
    """
    xf, pf = _flat(x), _flat(p)
    if xf.shape[:2] != pf.shape[:2]:
        raise ValueError(f"cosine_similarity_map: batch/channels differ: {tuple(x.shape)} vs {tuple(p.shape)}")
    # at least float32 and outside autocast: eps = 1e-7 and a max over thousands of near-equal
    # cosines do not survive float16
    dtype = torch.promote_types(torch.promote_types(xf.dtype, pf.dtype), torch.float32)
    with _no_autocast(xf.device):
        xf, pf = xf.to(dtype), pf.to(dtype)
        dots = torch.bmm(xf.transpose(1, 2), pf)  # (B, hw, h'w')
        norms = xf.norm(dim=1).unsqueeze(2) * pf.norm(dim=1).unsqueeze(1)  # (B, hw, 1) * (B, 1, h'w')
        out: torch.Tensor = dots / (norms + eps)
        return out


def min_max_normalize(s: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. (12): S = (S - min S) / (max S - min S + eps), per image. s: (B, N) -> (B, N) in [0, 1)."""
    return ops.min_max_normalize(s, eps)


def prior_region_map(bridge: torch.Tensor, prior: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The prior region map S_Q (Eq. 9-12).

    bridge: (B, C, h, w) query bridge features X_q; prior: (B, C, h', w') prior features P_q of the
    same query (the sizes may differ). For each bridge position q: s_q = max_q' cos(x_q, p_q')
    (Eq. 10), stacked into S_Q (Eq. 11), min-max normalised per image (Eq. 12), reshaped to
    (B, 1, h, w).
    """
    b, _, h, w = bridge.shape
    s = cosine_similarity_map(bridge, prior, eps).max(dim=2).values  # Eq. (10)-(11): (B, hw)
    return min_max_normalize(s, eps).view(b, 1, h, w)  # Eq. (12)


def _fit_mask(mask: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) mask -> (B, 1, *size); bilinear (``glocon.ops.resize``)."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    mask = mask.to(torch.float32) if not mask.is_floating_point() else mask
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = resize(mask, size)
    return mask


def guided_region_map(
    bridge: torch.Tensor, support_feats: torch.Tensor, support_mask: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """The guided region map (Sec. IV-B2): the same steps as Eq. 9-12 against M_s x X_s.

    bridge: (B, C, h, w) query features; support_feats: (B, C, h', w'); support_mask: (B, 1, h', w')
    in [0, 1] (resized bilinearly to the support features if its size differs).
    Background support positions become zero vectors, whose cosine is 0 (thanks to eps), so the
    maximum is decided by the object area only. -> (B, 1, h, w) in [0, 1).
    """
    mask = _fit_mask(support_mask, tuple(support_feats.shape[-2:]))
    return prior_region_map(bridge, support_feats * mask, eps)


def category_guider(support_feats: torch.Tensor, support_mask: torch.Tensor, eps: float = GAP_EPS) -> torch.Tensor:
    """Masked average pooling of the support features (PFENet's Weighted_GAP).

    support_feats: (B, C, h, w); support_mask: (B, 1, h, w) in [0, 1] (resized if needed)
    -> (B, C, 1, 1) = sum_hw(f * m) / (sum_hw(m) + eps).
    """
    mask = _fit_mask(support_mask, tuple(support_feats.shape[-2:]))
    return ops.masked_average(support_feats, mask, eps)[:, :, None, None]


def k_shot_average(per_shot: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """K-shot fusion: the plain mean over shots, as PFENet does for prototypes and prior masks.

    per_shot: (B, K, ...) tensor, or a sequence of K tensors (B, ...) -> (B, ...).
    """
    if isinstance(per_shot, torch.Tensor):
        if per_shot.dim() < 2:
            raise ValueError(f"k_shot_average: expected (B, K, ...), got shape {tuple(per_shot.shape)}")
        return per_shot.mean(dim=1)
    shots = list(per_shot)
    if not shots:
        raise ValueError("k_shot_average: no shots given")
    return torch.stack(shots, dim=1).mean(dim=1)
