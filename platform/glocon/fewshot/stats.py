"""Few-shot statistics: class mIoU and FB-IoU from per-episode counts, their spread over seeds,
a 95% bootstrap interval, and a paired comparison of two models on the same episodes.

The metric is PFENet's / HSNet's (``glocon.fewshot.metrics``): per class, the foreground
intersection and union summed over episodes, IoU per class, mean over the fold's classes (a class
no episode drew counts 0). An *episode table* holds, per episode, its class and its (background,
foreground) intersection and union, so the metric can be recomputed on any resample.

Bootstrap: episodes are resampled with replacement inside each (fold, seed) group, the statistic
(mean over folds of the mean over seeds) is recomputed, and the 2.5 / 97.5 percentiles bound it
(Efron's percentile interval). For two models scored on the same episode files the resample is
shared (the paired bootstrap), so the interval of the difference leaves out the episode-to-episode
variance both models share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class EpisodeTable:
    """One (fold, seed) group: cls (E,), inter (E, 2), union (E, 2) (index 0 background, 1 foreground)."""

    classes: list[int]  # the classes the mean runs over
    cls: np.ndarray
    inter: np.ndarray
    union: np.ndarray

    @staticmethod
    def from_rows(classes: Sequence[int], rows: Sequence[Sequence[float]]) -> "EpisodeTable":
        """rows: [class, I_bg, U_bg, I_fg, U_fg] per episode (as results.json stores them)."""
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return EpisodeTable([int(c) for c in classes], a[:, 0].astype(np.int64), a[:, [1, 3]], a[:, [2, 4]])

    def weights_miou(self, w: np.ndarray) -> np.ndarray:
        """Class mIoU under episode weights w (R, E) (counts of each episode in R resamples) -> (R,)."""
        onehot = (self.cls[:, None] == np.asarray(self.classes)[None, :]).astype(np.float64)  # (E, C)
        inter = w @ (onehot * self.inter[:, 1:2])  # (R, C)
        union = w @ (onehot * self.union[:, 1:2])
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        return iou.mean(axis=1)

    def weights_fb_iou(self, w: np.ndarray) -> np.ndarray:
        inter, union = w @ self.inter, w @ self.union  # (R, 2)
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        return iou.mean(axis=1)

    def miou(self) -> float:
        return float(self.weights_miou(np.ones((1, len(self.cls))))[0])

    def fb_iou(self) -> float:
        return float(self.weights_fb_iou(np.ones((1, len(self.cls))))[0])


def resample_weights(n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, n) counts: how often each of n episodes is drawn in each resample of size n."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)


def mean_over_groups(groups: Sequence[Sequence[EpisodeTable]], reps: int, seed: int, metric: str = "miou") -> tuple[float, np.ndarray]:
    """groups[f][s]: the table of fold f, seed s. -> (the statistic, its ``reps`` bootstrap values):
    the mean over folds of the mean over seeds."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([np.mean([getattr(t, metric)() for t in fold]) for fold in groups]))
    boot = np.zeros(reps)
    for fold in groups:
        per_seed = [getattr(t, f"weights_{metric}")(resample_weights(len(t.cls), reps, rng)) for t in fold]
        boot += np.mean(per_seed, axis=0)
    return point, boot / len(groups)


def interval(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(a: Sequence[Sequence[EpisodeTable]], b: Sequence[Sequence[EpisodeTable]], reps: int, seed: int, metric: str = "miou") -> dict[str, float]:
    """Statistic(a) - statistic(b) on the same episodes, with its paired-bootstrap 95% interval and
    the share of resamples where a does not beat b (a one-sided bootstrap p-value)."""
    rng = np.random.default_rng(seed)
    diff, boot = 0.0, np.zeros(reps)
    for fa, fb in zip(a, b, strict=True):
        da, db = [], []
        for ta, tb in zip(fa, fb, strict=True):
            if not (np.array_equal(ta.cls, tb.cls) and ta.classes == tb.classes):
                raise ValueError("paired comparison: the two results were not scored on the same episodes")
            w = resample_weights(len(ta.cls), reps, rng)
            da.append(getattr(ta, f"weights_{metric}")(w))
            db.append(getattr(tb, f"weights_{metric}")(w))
            diff += (getattr(ta, metric)() - getattr(tb, metric)()) / (len(fa) * len(a))
        boot += np.mean(da, axis=0) - np.mean(db, axis=0)
    boot /= len(a)
    lo, hi = interval(boot)
    return {"difference": float(diff), "ci_low": lo, "ci_high": hi, "p_not_better": float(np.mean(boot <= 0)), "resamples": reps}
