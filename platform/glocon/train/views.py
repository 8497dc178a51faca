"""Two augmented views per image, with the superpixel map carried along (paper Sec. V-A: "Following
MoCo-v2, we apply blur augmentation, color distortion, random crop, and random flip").

MoCo v2's recipe, from facebookresearch/moco ``main_moco.py`` (``--aug-plus``):
RandomResizedCrop(224, scale=(0.2, 1.)), RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
RandomGrayscale(p=0.2), RandomApply([GaussianBlur([.1, 2.])], p=0.5), RandomHorizontalFlip().

Built with torchvision transforms v2 and applied jointly to the image (``tv_tensors.Image``) and
its superpixel map (``tv_tensors.Mask``): v2 routes the geometric ops (crop, resize with nearest
neighbour for masks, flip) to both and the photometric ones (jitter, grayscale, blur) to the
image only. Superpixel id s in view 1 and view 2 is therefore the same region of the source
image, which is what the local loss (Eq. 6) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from glocon.config import GloconModel


class ViewConfig(GloconModel):
    """MoCo v2 defaults (facebookresearch/moco, main_moco.py, aug_plus)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    flip_p: float = 0.5


def blur_kernel_size(size: int) -> int:
    """Odd kernel of about 10% of the crop (SimCLR's choice; MoCo uses PIL's radius = sigma)."""
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 == 1 else k + 1


def moco_v2_transform(size: int, cfg: ViewConfig | None = None) -> v2.Compose:
    """The per-view transform: (Image uint8 (3, H, W), Mask, ...) -> (Image float [0, 1] (3, S, S), Mask, ...)."""
    cfg = cfg or ViewConfig()
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True),
            v2.RandomApply([v2.ColorJitter(*cfg.jitter)], p=cfg.jitter_p),
            v2.RandomGrayscale(p=cfg.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=cfg.blur_sigma)], p=cfg.blur_p),
            v2.RandomHorizontalFlip(p=cfg.flip_p),
            v2.ToDtype(torch.float32, scale=True),  # images only; masks keep their integer ids
        ]
    )


@dataclass
class ViewPair:
    """image_q/image_k: (3, S, S) float in [0, 1]; labels_q/labels_k: (S, S) long superpixel ids."""

    image_q: torch.Tensor
    labels_q: torch.Tensor
    image_k: torch.Tensor
    labels_k: torch.Tensor


class TwoViews:
    """Callable: (image (H, W, 3) uint8, labels (H, W) int, *extra (H, W) int maps) -> two views.

    ``extra`` maps ride along like the superpixel map (tests use a map of source pixel indices).
    Randomness comes from torch's global RNG, which the training loop seeds and checkpoints.
    """

    def __init__(self, size: int, cfg: ViewConfig | None = None) -> None:
        self.size = size
        self.transform = moco_v2_transform(size, cfg)

    def view(self, image: np.ndarray | torch.Tensor, *maps: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
        img = torch.from_numpy(np.array(image, copy=True)) if isinstance(image, np.ndarray) else image
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"image: expected (H, W, 3), got {tuple(img.shape)}")
        img = tv_tensors.Image(img.permute(2, 0, 1).contiguous())
        masks = [tv_tensors.Mask(torch.as_tensor(np.asarray(m, dtype=np.int64) if isinstance(m, np.ndarray) else m.long())) for m in maps]
        for m in masks:
            if tuple(m.shape) != tuple(img.shape[-2:]):
                raise ValueError(f"label map shape {tuple(m.shape)} differs from the image's {tuple(img.shape[-2:])}")
        out = self.transform(img, *masks)
        return tuple(torch.Tensor(t).as_subclass(torch.Tensor) for t in out)

    def __call__(self, image: np.ndarray, labels: np.ndarray) -> ViewPair:
        img_q, lab_q = self.view(image, labels)
        img_k, lab_k = self.view(image, labels)
        return ViewPair(img_q, lab_q.long(), img_k, lab_k.long())


def collate_pairs(pairs: list[ViewPair]) -> dict[str, torch.Tensor]:
    """A list of ViewPairs -> {image_q, image_k: (B, 3, S, S), labels_q, labels_k: (B, S, S)}."""
    return {
        "image_q": torch.stack([p.image_q for p in pairs]),
        "labels_q": torch.stack([p.labels_q for p in pairs]),
        "image_k": torch.stack([p.image_k for p in pairs]),
        "labels_k": torch.stack([p.labels_k for p in pairs]),
    }
