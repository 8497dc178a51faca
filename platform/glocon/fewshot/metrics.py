"""Few-shot segmentation metrics (paper Eq. 13-16), as pure functions of tensors.

Every prediction is binary (0 = background, 1 = the episode's class) and every label is
0 / 1 / 255, where 255 marks pixels that count for nothing (the padding border, crowd regions).

Class mIoU follows PFENet (``dvlab-research/PFENet``, ``test.py``: ``class_intersection_meter``)
and HSNet (``juhongm999/hsnet``, ``common/logger.py``: ``AverageMeter.compute_iou``): the
foreground intersection and union are summed per class over *all* episodes, the IoU is taken per
class, and the mean runs over the fold's classes. It is not the mean of per-episode IoUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from glocon.ops import IGNORE_INDEX, resize

RECALL_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # Table VII


def intersection_union(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class pixel counts of one episode (or a stack of them), ignore pixels excluded.

    pred: (..., H, W) with values in {0, 1}; target: (..., H, W) in {0, 1, ignore_index}.
    Returns (intersection (2,), union (2,)) as float64, index 0 = background, 1 = foreground.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    valid = target != ignore_index
    pred = pred.long()
    target = target.long()
    inter = torch.empty(2, dtype=torch.float64)
    union = torch.empty(2, dtype=torch.float64)
    for c in (0, 1):
        p = (pred == c) & valid
        t = (target == c) & valid
        inter[c] = (p & t).sum().double()
        union[c] = (p | t).sum().double()
    return inter, union


def episode_iou(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> float:
    """Foreground IoU of one episode: TP / (TP + FP + FN)  # Eq. (13). 0 when the union is empty."""
    inter, union = intersection_union(pred, target, ignore_index)
    return float(inter[1] / union[1]) if union[1] > 0 else 0.0


def fb_iou(inter_sum: torch.Tensor, union_sum: torch.Tensor) -> float:
    """FB-IoU = (IoU_bg + IoU_fg) / 2 over summed counts  # Eq. (15).

    inter_sum, union_sum: (2,) summed over every episode (index 0 background, 1 foreground).
    An empty union contributes 0, as PFENet's ``/ (union + 1e-10)`` does.
    """
    ious = [float(inter_sum[c] / union_sum[c]) if union_sum[c] > 0 else 0.0 for c in (0, 1)]
    return 0.5 * (ious[0] + ious[1])


@dataclass
class ClassIoUAccumulator:
    """ΣI / ΣU per class over all episodes, then the mean over the fold's classes  # Eq. (14).

    ``class_ids`` are the classes the mean runs over (the fold's novel classes). A class in that
    list that no episode visited scores 0, as in PFENet and HSNet; the episode builder only lists
    classes it can draw episodes for, so that does not happen in glocon's own runs.
    """

    class_ids: Sequence[int]
    intersection: dict[int, float] = field(default_factory=dict)
    union: dict[int, float] = field(default_factory=dict)
    episodes: dict[int, int] = field(default_factory=dict)
    fb_intersection: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    fb_union: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))

    def __post_init__(self) -> None:
        self.class_ids = [int(c) for c in self.class_ids]
        for c in self.class_ids:
            self.intersection.setdefault(c, 0.0)
            self.union.setdefault(c, 0.0)
            self.episodes.setdefault(c, 0)

    def update(self, class_id: int, pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> float:
        """Add one episode; returns its own IoU (Eq. 13) for logging."""
        inter, union = intersection_union(pred, target, ignore_index)
        self.add_counts(class_id, inter, union)
        return float(inter[1] / union[1]) if union[1] > 0 else 0.0

    def add_counts(self, class_id: int, inter: torch.Tensor, union: torch.Tensor) -> None:
        class_id = int(class_id)
        if class_id not in self.intersection:
            raise KeyError(f"class {class_id} is not one of this accumulator's classes {list(self.class_ids)}")
        self.intersection[class_id] += float(inter[1])
        self.union[class_id] += float(union[1])
        self.episodes[class_id] += 1
        self.fb_intersection += inter.double()
        self.fb_union += union.double()

    def class_iou(self) -> dict[int, float]:
        return {c: (self.intersection[c] / self.union[c] if self.union[c] > 0 else 0.0) for c in self.class_ids}

    def miou(self) -> float:
        ious = self.class_iou()
        return sum(ious.values()) / len(ious) if ious else 0.0

    def fb_iou(self) -> float:
        return fb_iou(self.fb_intersection, self.fb_union)


def _map_to(region_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) or (h, w) -> (B, H, W) at the label's size (bilinear, as the maps are continuous)."""
    m = region_map
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    m = m.float()
    if tuple(m.shape[-2:]) != tuple(size):
        m = resize(m, size)
    return m[:, 0]


def _labels(gt: torch.Tensor) -> torch.Tensor:
    return gt if gt.dim() == 3 else gt[None]


def region_recall_counts(
    region_map: torch.Tensor,
    gt: torch.Tensor,
    thresholds: Iterable[float] = RECALL_THRESHOLDS,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, float]:
    """|R_α ∩ R_GT| per threshold and |R_GT|, with R_α = [V > α]  # Eq. (16).

    region_map: (B, 1, h, w) normalised to [0, 1] (resized to the label); gt: (B, H, W) in {0, 1, 255}.
    Returns (hits (T,) float64, gt_pixels).
    """
    gt = _labels(gt)
    v = _map_to(region_map, (gt.shape[-2], gt.shape[-1]))
    obj = gt == 1
    n_gt = float(obj.sum())
    hits = torch.tensor([float(((v > a) & obj).sum()) for a in thresholds], dtype=torch.float64)
    return hits, n_gt


def region_recall(
    region_map: torch.Tensor,
    gt: torch.Tensor,
    thresholds: Iterable[float] = RECALL_THRESHOLDS,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Recall = |R ∩ R_GT| / |R_GT| per threshold α  # Eq. (16), Table VII. (T,) float64; 0 if no object."""
    hits, n_gt = region_recall_counts(region_map, gt, thresholds, ignore_index)
    return hits / n_gt if n_gt > 0 else torch.zeros_like(hits)


def region_map_sums(region_map: torch.Tensor, gt: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[float, float, float, float]:
    """(Σ map on object, #object px, Σ map on background, #background px); 255 pixels excluded."""
    gt = _labels(gt)
    v = _map_to(region_map, (gt.shape[-2], gt.shape[-1])).double()
    obj = gt == 1
    bg = gt == 0
    return float(v[obj].sum()), float(obj.sum()), float(v[bg].sum()), float(bg.sum())


def region_map_means(region_map: torch.Tensor, gt: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[float, float]:
    """Mean map value on object pixels and on background pixels (paper Sec. IV-C: the prior map
    is *low* on objects). NaN for a side with no pixels."""
    so, no, sb, nb = region_map_sums(region_map, gt, ignore_index)
    return (so / no if no else float("nan")), (sb / nb if nb else float("nan"))


@dataclass
class RegionMapAccumulator:
    """Pools Eq. (16) recall and the object/background means over many episodes.

    Recall is pooled over pixels (Σ hits / Σ object pixels), the same pooling as the class IoU.
    """

    thresholds: Sequence[float] = RECALL_THRESHOLDS
    hits: torch.Tensor | None = None
    gt_pixels: float = 0.0
    obj_sum: float = 0.0
    obj_pixels: float = 0.0
    bg_sum: float = 0.0
    bg_pixels: float = 0.0
    episodes: int = 0

    def update(self, region_map: torch.Tensor, gt: torch.Tensor) -> None:
        hits, n_gt = region_recall_counts(region_map, gt, self.thresholds)
        self.hits = hits if self.hits is None else self.hits + hits
        self.gt_pixels += n_gt
        so, no, sb, nb = region_map_sums(region_map, gt)
        self.obj_sum += so
        self.obj_pixels += no
        self.bg_sum += sb
        self.bg_pixels += nb
        self.episodes += 1

    def recall(self) -> dict[str, float]:
        if self.hits is None or self.gt_pixels == 0:
            return {f"{a:.1f}": 0.0 for a in self.thresholds}
        return {f"{a:.1f}": float(h / self.gt_pixels) for a, h in zip(self.thresholds, self.hits)}

    def means(self) -> dict[str, float]:
        return {
            "object_mean": self.obj_sum / self.obj_pixels if self.obj_pixels else float("nan"),
            "background_mean": self.bg_sum / self.bg_pixels if self.bg_pixels else float("nan"),
        }

    def summary(self) -> dict[str, object]:
        return {"episodes": self.episodes, "recall": self.recall(), **self.means()}
