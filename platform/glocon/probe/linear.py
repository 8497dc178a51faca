"""The linear probe: a 1x1 convolution on frozen dense features, trained on the train masks with
cross-entropy (255 ignored), scored by mIoU on the val masks at the masks' resolution. The standard
dense-SSL evaluation (DINO's and Leopart's linear segmentation probes).

Training reads each feature-grid cell's class distribution (``retrieval.cell_label_distribution``,
255 pixels left out; a cell with no labelled pixel weighs nothing) and minimises the soft
cross-entropy of the cell's logits against it: the pixel-level loss of the upsampled logits, with
the upsampling moved to the targets. Measured here it is 40x cheaper, and the probe runs for every
prior and seed. Scoring upsamples the logits bilinearly to each mask, as those probes do.

Features are standardised per channel with the train set's statistics first (an affine map the
layer could learn itself; it only makes one learning rate fit every prior). AdamW over seeded
mini-batches with a cosine schedule; the seed decides the init and the batch order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glocon.probe.metrics import confusion, miou
from glocon.probe.retrieval import cell_label_distribution


@dataclass(frozen=True)
class LinearSettings:
    epochs: int = 30
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 32


def standardiser(features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, D, h, w) features, shaped (1, D, 1, 1)."""
    x = torch.from_numpy(features).double()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return mean.float(), std.float()


def cell_targets(masks: list[np.ndarray], grid: tuple[int, int], n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, h*w, C) class distributions and (N, h*w) labelled shares of every train cell."""
    dist, share = zip(*[cell_label_distribution(m, grid, n_classes) for m in masks])
    return torch.from_numpy(np.stack(dist)), torch.from_numpy(np.stack(share)).float()


def train_linear(features: np.ndarray, masks: list[np.ndarray], n_classes: int, seed: int, s: LinearSettings = LinearSettings()) -> tuple[torch.nn.Conv2d, tuple[torch.Tensor, torch.Tensor]]:
    """A 1x1 conv (D -> C) trained on (N, D, h, w) features against their masks."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = standardiser(features)
    x = (torch.from_numpy(features) - mean) / std
    target, weight = cell_targets(masks, tuple(features.shape[-2:]), n_classes)  # (N, hw, C), (N, hw)
    head = torch.nn.Conv2d(x.shape[1], n_classes, kernel_size=1)
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    steps = s.epochs * max(1, -(-len(x) // s.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(s.epochs):
        for idx in torch.randperm(len(x), generator=g).split(s.batch_size):
            w = weight[idx]
            if not (w > 0).any():
                continue  # every pixel ignored: nothing to learn from (and no 0/0)
            logp = F.log_softmax(head(x[idx]).flatten(2).transpose(1, 2), dim=-1)  # (b, hw, C)
            loss = -((target[idx] * logp).sum(-1) * w).sum() / w.sum()
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
    # max(0).indices: argmax over the class dim, first maximum on ties, 3x faster than argmax(0) on CPU
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0].max(0).indices.numpy()


def linear_probe_miou(train_x: np.ndarray, train_masks: list[np.ndarray], val_x: np.ndarray, val_masks: list[np.ndarray], n_classes: int, seed: int, s: LinearSettings = LinearSettings()) -> tuple[float, np.ndarray]:
    """Train on the train set, score on the val set: (mIoU, (C, C) confusion)."""
    head, stats = train_linear(train_x, train_masks, n_classes, seed, s)
    conf = np.zeros((n_classes, n_classes), np.int64)
    for i, m in enumerate(val_masks):
        conf += confusion(predict(head, stats, val_x[i : i + 1], m.shape), m, n_classes)
    return miou(conf), conf
