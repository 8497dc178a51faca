"""Dense-probe metrics as pure functions: a confusion matrix over C classes, mIoU from it, and
the AUROC of a score map for object vs background pixels.

mIoU follows the semantic-segmentation convention (mmsegmentation, open-hummingbird-eval's
``PredsmIoU``): IoU_c = TP / (TP + FP + FN) per class from one confusion matrix summed over every
pixel of every validation image, 255 ignored; the mean runs over the classes whose union is not
empty (a class that is neither present nor predicted says nothing either way).
"""

from __future__ import annotations

import numpy as np

from glocon.ops import IGNORE_INDEX


def confusion(pred: np.ndarray, target: np.ndarray, n_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted; ``ignore_index`` pixels excluded.

    pred, target: integer arrays of one shape; target ids >= n_classes (other than ignore) are an error.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    t = target.reshape(-1).astype(np.int64)
    p = pred.reshape(-1).astype(np.int64)
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.size and (t.max() >= n_classes or t.min() < 0):
        raise ValueError(f"target holds class {int(t.max())}, outside 0..{n_classes - 1}")
    return np.bincount(t * n_classes + np.clip(p, 0, n_classes - 1), minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_iou(conf: np.ndarray) -> np.ndarray:
    """(C,) IoU per class from a confusion matrix; NaN where the union is empty."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def miou(conf: np.ndarray) -> float:
    """Mean IoU over the classes with a non-empty union (Eq. 13-14 over C classes)."""
    iou = class_iou(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` vs the rest (ties count one half).

    The Mann-Whitney form: (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
    with average ranks for ties. 0.5 = no separation; below 0.5 the score is LOWER on positives.
    NaN when either class is empty.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_std(values: list[float]) -> dict[str, float | int | list[float]]:
    """{"mean", "std" (sample, ddof=1; 0 for one value), "n", "values"} of a list of seed results."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v)), "values": [float(x) for x in v]}
