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

Training seeds: one fit is one draw of initial weights and episode order, and two fits of the same
recipe can differ by more than the episode interval of either (QGNet's prior ablation flipped sign
between fits on the embedded fold 0). With several fits per row (``*_over_fits``) each resample
also draws the fits with replacement (a two-level bootstrap), so the interval covers both spreads;
with few fits (3) the percentile interval over fits is narrower than the truth, which is why each
fit's own difference is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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
        out: np.ndarray = iou.mean(axis=1)
        return out

    def weights_fb_iou(self, w: np.ndarray) -> np.ndarray:
        inter, union = w @ self.inter, w @ self.union  # (R, 2)
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        out: np.ndarray = iou.mean(axis=1)
        return out

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
    return mean_over_fits([groups], reps, seed, metric)


def mean_over_fits(fits: Sequence[Sequence[Sequence[EpisodeTable]]], reps: int, seed: int, metric: str = "miou") -> tuple[float, np.ndarray]:
    """fits[i][f][s]: the tables of training seed i (fold f, episode seed s), all on the same
    episodes. -> (the mean over fits of the statistic, its bootstrap values): each resample draws
    the episodes (one draw shared by every fit, as they are the same episodes) and then, when there
    are several, the fits with replacement -- a two-level bootstrap, so the interval carries the
    fit-to-fit spread as well as the episode-to-episode one."""
    rng = np.random.default_rng(seed)
    per_fit = np.zeros((len(fits), reps))
    for f, fold in enumerate(fits[0]):
        for s, t in enumerate(fold):
            w = resample_weights(len(t.cls), reps, rng)
            for i, groups in enumerate(fits):
                per_fit[i] += getattr(groups[f][s], f"weights_{metric}")(w) / (len(fold) * len(fits[0]))
    point = float(np.mean([np.mean([np.mean([getattr(t, metric)() for t in fold]) for fold in groups]) for groups in fits]))
    return point, _resample_fits(per_fit, rng)


def _resample_fits(per_fit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_fits, reps) bootstrap values -> (reps,): the mean over n fits drawn with replacement (the
    mean over the one fit when there is one)."""
    n, reps = per_fit.shape
    if n == 1:
        first: np.ndarray = per_fit[0]
        return first
    pick = rng.integers(0, n, size=(reps, n))
    out: np.ndarray = per_fit[pick, np.arange(reps)[:, None]].mean(axis=1)
    return out


def interval(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(a: Sequence[Sequence[EpisodeTable]], b: Sequence[Sequence[EpisodeTable]], reps: int, seed: int, metric: str = "miou") -> dict[str, float]:
    """Statistic(a) - statistic(b) on the same episodes, with its paired-bootstrap 95% interval and
    the share of resamples where a does not beat b (a one-sided bootstrap p-value)."""
    return paired_difference_over_fits([a], [b], reps, seed, metric)


def paired_difference_over_fits(
    a: Sequence[Sequence[Sequence[EpisodeTable]]], b: Sequence[Sequence[Sequence[EpisodeTable]]], reps: int, seed: int, metric: str = "miou"
) -> dict[str, Any]:
    """a[i][f][s], b[j][f][s]: the tables of A's training seed i and B's seed j on the same
    episodes. A training-free B has one "fit"; otherwise fit i of A is paired with fit i of B (the
    same training seed, so equal counts). The difference is the mean over fits of A minus that of B;
    each resample draws the episodes once for every model, then the fit pairs with replacement, so
    the interval holds both the episode and the training-seed spread. ``per_fit`` lists each pair's
    own difference."""
    if len(b) not in (1, len(a)):
        raise ValueError(f"paired comparison: {len(a)} fits of A against {len(b)} of B (expected 1 or {len(a)})")
    rng = np.random.default_rng(seed)
    per_fit, points = np.zeros((len(a), reps)), np.zeros(len(a))
    n_folds = len(a[0])
    for f in range(n_folds):
        n_seeds = len(a[0][f])
        for s in range(n_seeds):
            tas, tbs = [ga[f][s] for ga in a], [gb[f][s] for gb in b]
            if any(not (np.array_equal(t.cls, tbs[0].cls) and t.classes == tbs[0].classes) for t in tas + tbs):
                raise ValueError("paired comparison: the two results were not scored on the same episodes")
            w = resample_weights(len(tbs[0].cls), reps, rng)  # one episode draw for every model
            b_boot, b_point = [getattr(t, f"weights_{metric}")(w) for t in tbs], [getattr(t, metric)() for t in tbs]  # B once, also when it is one training-free row
            for i, ta in enumerate(tas):
                j = i if len(b) > 1 else 0
                per_fit[i] += (getattr(ta, f"weights_{metric}")(w) - b_boot[j]) / (n_seeds * n_folds)
                points[i] += (getattr(ta, metric)() - b_point[j]) / (n_seeds * n_folds)
    boot = _resample_fits(per_fit, rng)
    lo, hi = interval(boot)
    out: dict[str, Any] = {"difference": float(points.mean()), "ci_low": lo, "ci_high": hi, "p_not_better": float(np.mean(boot <= 0)), "resamples": reps}
    if len(a) > 1:
        out["fits"] = len(a)
        out["per_fit"] = [float(x) for x in points]
    return out
