"""The linear probe: a 1x1 convolution on frozen dense features, trained on the train masks with
cross-entropy (255 ignored), scored by mIoU on the val masks. The standard dense-SSL evaluation
(DINO's and Leopart's linear segmentation probes).

Features are standardised per channel with the train set's statistics first (an affine map the
layer could learn itself; it only makes one learning rate fit every prior). Logits are upsampled
bilinearly to the label grid before the loss, as those probes do. Training is full-data AdamW
over seeded mini-batches; the seed decides the init and the batch order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glocon.data.record import IGNORE_INDEX
from glocon.probe.metrics import confusion, miou


@dataclass(frozen=True)
class LinearSettings:
    epochs: int = 30
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 32
    label_size: int = 64  # train masks are resized (nearest) to this square grid for the loss


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 -> (size, size) by nearest neighbour (labels must not be blended)."""
    t = torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].to(torch.uint8).numpy()


def standardiser(features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, D, h, w) features, shaped (1, D, 1, 1)."""
    x = torch.from_numpy(features).double()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return mean.float(), std.float()


def train_linear(features: np.ndarray, masks: list[np.ndarray], n_classes: int, seed: int, s: LinearSettings = LinearSettings()) -> tuple[torch.nn.Conv2d, tuple[torch.Tensor, torch.Tensor]]:
    """A 1x1 conv (D -> C) trained on (N, D, h, w) features against their masks."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = standardiser(features)
    x = (torch.from_numpy(features) - mean) / std
    y = torch.from_numpy(np.stack([resize_mask(m, s.label_size) for m in masks]).astype(np.int64))
    head = torch.nn.Conv2d(x.shape[1], n_classes, kernel_size=1)
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    steps = s.epochs * max(1, -(-len(x) // s.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(s.epochs):
        for idx in torch.randperm(len(x), generator=g).split(s.batch_size):
            if not (y[idx] != IGNORE_INDEX).any():
                continue  # every pixel ignored: cross-entropy would be 0/0 (NaN) and poison the head
            logits = F.interpolate(head(x[idx]), size=(s.label_size, s.label_size), mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y[idx], ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head, (mean, std)


@torch.no_grad()
def predict(head: torch.nn.Conv2d, stats: tuple[torch.Tensor, torch.Tensor], features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One image's (1, D, h, w) features -> (H, W) int predicted class at the mask's size."""
    mean, std = stats
    logits = head((torch.from_numpy(features) - mean) / std)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


def linear_probe_miou(train_x: np.ndarray, train_masks: list[np.ndarray], val_x: np.ndarray, val_masks: list[np.ndarray], n_classes: int, seed: int, s: LinearSettings = LinearSettings()) -> tuple[float, np.ndarray]:
    """Train on the train set, score on the val set: (mIoU, (C, C) confusion)."""
    head, stats = train_linear(train_x, train_masks, n_classes, seed, s)
    conf = np.zeros((n_classes, n_classes), np.int64)
    for i, m in enumerate(val_masks):
        conf += confusion(predict(head, stats, val_x[i : i + 1], m.shape), m, n_classes)
    return miou(conf), conf
