"""Episode image transforms: PFENet's test resize (and the way back to the original label), and
the training augmentation (random scale, horizontal flip, random crop).

Images enter as (H, W, 3) uint8 and leave as (3, S, S) float in [0, 1]: every glocon model
normalises inside, so padding with 0 here is black, as in PFENet's ``test_Resize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from glocon.ops import IGNORE_INDEX



@dataclass(frozen=True)
class ResizeInfo:
    """Where the resized image sits in the padded square: rows [0, new_h), columns [0, new_w)."""

    orig_hw: tuple[int, int]
    new_hw: tuple[int, int]
    size: int


def binary_label(mask: np.ndarray, cls: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class ids -> (H, W) uint8: 1 on ``cls``, 255 where ignored, 0 elsewhere (PFENet's
    ``SemData.__getitem__``: every other class, base or novel, is background)."""
    out: np.ndarray = (mask == cls).astype(np.uint8)
    out[mask == ignore_index] = ignore_index
    return out


def resized_hw(h: int, w: int, size: int) -> tuple[int, int]:
    """Longest side -> ``size``, the other scaled alike, both floored to a multiple of 8.

    PFENet's ``transform.Resize`` (``util/transform.py``, used at test time with
    ``resized_val: True`` and ``ori_resize: True``), the ``find_new_hw`` rule.
    """
    if h >= w:
        new_h, new_w = size, int(w * size / h)
    else:
        new_h, new_w = int(h * size / w), size
    new_h = max(8, (new_h // 8) * 8)
    new_w = max(8, (new_w // 8) * 8)
    return new_h, new_w


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected (H, W, 3), got {image.shape}")
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def _resize_image(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float -> (3, h, w); bilinear with half-pixel centres, like cv2.INTER_LINEAR."""
    if tuple(img.shape[-2:]) == hw:
        return img
    return F.interpolate(img[None], size=hw, mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)


def _resize_label(label: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer -> (h, w) with nearest neighbour (no invented class ids)."""
    if tuple(label.shape) == hw:
        return label
    return F.interpolate(label[None, None].float(), size=hw, mode="nearest")[0, 0].to(label.dtype)


def eval_resize(image: np.ndarray, label: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor, ResizeInfo]:
    """PFENet's test resize: longest side to ``size`` (floored to x8), pad to a square at the
    bottom/right with 0 (image) and 255 (label).

    image (H, W, 3) uint8, label (H, W) uint8 -> image (3, S, S) float, label (S, S) long, info.
    """
    h, w = image.shape[:2]
    if label.shape != (h, w):
        raise ValueError(f"label shape {label.shape} != image shape {(h, w)}")
    new_h, new_w = resized_hw(h, w, size)
    img = _resize_image(image_tensor(image), (new_h, new_w))
    lab = _resize_label(torch.from_numpy(label.astype(np.int64)), (new_h, new_w))
    out_img = torch.zeros(3, size, size)
    out_img[:, :new_h, :new_w] = img
    out_lab = torch.full((size, size), IGNORE_INDEX, dtype=torch.long)
    out_lab[:new_h, :new_w] = lab
    return out_img, out_lab, ResizeInfo((h, w), (new_h, new_w), size)


def support_mask(label: torch.Tensor) -> torch.Tensor:
    """(..., S, S) label in {0, 1, 255} -> float {0, 1}: padding and ignore are not the object."""
    return (label == 1).float()


def to_original(x: torch.Tensor, info: ResizeInfo) -> torch.Tensor:
    """Map a model output on the padded square back onto the original label grid.

    x: (B, C, h, w) on the (S, S) square (logits at S, or region maps at feature size). It is
    brought to (S, S), the padding is cut off, and the valid part is resized to (H, W). PFENet
    instead resizes the whole square to (L, L), L the longest side, which is off by up to the
    x8 flooring; cutting first lines the prediction up exactly with the label.
    """
    s = info.size
    if tuple(x.shape[-2:]) != (s, s):
        x = F.interpolate(x.float(), size=(s, s), mode="bilinear", align_corners=False)
    new_h, new_w = info.new_hw
    x = x[..., :new_h, :new_w]
    if (new_h, new_w) != info.orig_hw:
        x = F.interpolate(x.float(), size=info.orig_hw, mode="bilinear", align_corners=False)
    return x


def train_augment(
    image: np.ndarray,
    label: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.9, 1.1),
    flip: bool = True,
    crop_tries: int = 30,
    foreground: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, horizontal flip and random square crop (PFENet's training transforms,
    ``RandScale`` / ``RandomHorizontalFlip`` / ``Crop(crop_type='rand')``, without rotation).

    The image is first brought to longest side ``size`` so that a crop sees most of the object
    whatever the source resolution; the crop is retried (up to ``crop_tries``) until it keeps
    85% of the foreground, as PFENet's ``Crop`` does.

    image (H, W, 3) uint8, label (H, W) uint8 in {0, 1, 255} -> (3, S, S) float, (S, S) long.
    ``foreground(label) -> bool mask`` says what the crop must keep (default: label == 1); a
    class-agnostic view of a whole mask (the fit cache's) keeps every object pixel instead.
    """
    is_fg = foreground or (lambda lab: lab == 1)
    h, w = image.shape[:2]
    f = size / max(h, w) * float(rng.uniform(*scale))
    hw = (max(1, int(round(h * f))), max(1, int(round(w * f))))
    img = _resize_image(image_tensor(image), hw)
    lab = _resize_label(torch.from_numpy(label.astype(np.int64)), hw)
    if flip and rng.random() < 0.5:
        img = img.flip(-1)
        lab = lab.flip(-1)
    ph, pw = max(size - hw[0], 0), max(size - hw[1], 0)
    if ph or pw:
        top, left = ph // 2, pw // 2
        img = F.pad(img, (left, pw - left, top, ph - top), value=0.0)
        lab = F.pad(lab, (left, pw - left, top, ph - top), value=IGNORE_INDEX)
    H, W = lab.shape
    fg = is_fg(lab)
    fg_total = int(fg.sum())
    best: tuple[int, int, int] | None = None  # (fg pixels kept, y, x) of the best crop so far
    for _ in range(max(1, crop_tries)):
        y = int(rng.integers(0, H - size + 1))
        x = int(rng.integers(0, W - size + 1))
        kept = int(fg[y : y + size, x : x + size].sum())
        if best is None or kept > best[0]:
            best = (kept, y, x)
        if kept >= 0.85 * fg_total:
            break
    assert best is not None  # the loop above runs at least once
    _, y, x = best
    return img[:, y : y + size, x : x + size].contiguous(), lab[y : y + size, x : x + size].contiguous()
