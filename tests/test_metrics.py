"""Few-shot metrics: Eq. 13-16 against hand computations, and class mIoU / FB-IoU against PFENet's
formula re-derived here independently (numpy histograms, as in its util.intersectionAndUnion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glocon.fewshot.metrics import (
    ClassIoUAccumulator,
    RegionMapAccumulator,
    episode_iou,
    fb_iou,
    intersection_union,
    region_map_means,
    region_recall,
)


def test_episode_iou_is_tp_over_tp_fp_fn_with_ignored_pixels_dropped():
    pred = torch.tensor([[1, 1, 0], [0, 1, 0]])
    gt = torch.tensor([[1, 0, 0], [1, 255, 0]])
    # TP=1 (0,0); FP=1 (0,1); FN=1 (1,0); (1,1) is ignored though predicted 1
    assert episode_iou(pred, gt) == pytest.approx(1 / 3)


def test_episode_iou_is_zero_when_nothing_is_predicted_or_present():
    z = torch.zeros(4, 4, dtype=torch.long)
    assert episode_iou(z, z) == 0.0


def test_intersection_union_counts_background_and_foreground():
    pred = torch.tensor([[1, 1, 0, 0]])
    gt = torch.tensor([[1, 0, 0, 255]])
    inter, union = intersection_union(pred, gt)
    # background: pred {2,3} minus ignored 3 -> {2}; gt {1,2} -> I={2}=1, U={1,2}=2
    assert inter.tolist() == [1.0, 1.0]
    assert union.tolist() == [2.0, 2.0]


def test_fb_iou_is_the_mean_of_background_and_foreground_iou():
    # Eq. (15) by hand: IoU_bg = 6/8, IoU_fg = 2/4
    assert fb_iou(torch.tensor([6.0, 2.0]), torch.tensor([8.0, 4.0])) == pytest.approx(0.5 * (0.75 + 0.5))


def test_class_miou_sums_intersection_and_union_per_class_before_dividing():
    acc = ClassIoUAccumulator([3, 7])
    one = torch.ones(2, 2, dtype=torch.long)
    # class 3: episode A: I=1,U=4 ; episode B: I=4,U=4 -> 5/8 (mean of episode IoUs would be 0.625 too,
    # so make B bigger to tell them apart)
    a_pred = torch.tensor([[1, 0], [0, 0]])
    acc.update(3, a_pred, one)  # I=1, U=4
    acc.update(3, torch.ones(4, 4, dtype=torch.long), torch.ones(4, 4, dtype=torch.long))  # I=16, U=16
    acc.update(7, torch.zeros(2, 2, dtype=torch.long), one)  # I=0, U=4
    assert acc.class_iou() == {3: pytest.approx(17 / 20), 7: 0.0}
    assert acc.miou() == pytest.approx((17 / 20 + 0.0) / 2)  # Eq. (14): mean over the fold's classes


def test_class_never_visited_counts_as_zero_like_pfenet():
    acc = ClassIoUAccumulator([1, 2])
    acc.update(1, torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long))
    assert acc.miou() == pytest.approx(0.5)


def test_unknown_class_is_refused():
    acc = ClassIoUAccumulator([1])
    with pytest.raises(KeyError):
        acc.update(9, torch.ones(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long))


def _pfenet_reference(episodes, classes):
    """PFENet's test.py + util.intersectionAndUnion, re-derived with numpy (independent of glocon).

    For each episode: output[target == 255] = 255; intersection = output[output == target];
    histograms over 2 bins; class meters add the foreground bin; FB-IoU averages bins over all."""
    cls_i = {c: 0.0 for c in classes}
    cls_u = {c: 0.0 for c in classes}
    tot_i = np.zeros(2)
    tot_u = np.zeros(2)
    for c, pred, gt in episodes:
        out = pred.reshape(-1).copy()
        tgt = gt.reshape(-1)
        out[tgt == 255] = 255
        inter = out[out == tgt]
        a_i, _ = np.histogram(inter, bins=np.arange(3))
        a_o, _ = np.histogram(out, bins=np.arange(3))
        a_t, _ = np.histogram(tgt, bins=np.arange(3))
        a_u = a_o + a_t - a_i
        tot_i += a_i
        tot_u += a_u
        cls_i[c] += a_i[1]
        cls_u[c] += a_u[1]
    miou = np.mean([cls_i[c] / (cls_u[c] + 1e-10) for c in classes])
    fb = np.mean(tot_i / (tot_u + 1e-10))
    return miou, fb


def test_class_miou_and_fb_iou_equal_pfenets_formula_on_random_predictions_with_ignore():
    rng = np.random.default_rng(0)
    classes = [2, 5, 11]
    episodes = []
    acc = ClassIoUAccumulator(classes)
    for _ in range(60):
        c = int(rng.choice(classes))
        h, w = rng.integers(5, 20, size=2)
        gt = (rng.random((h, w)) < rng.random()).astype(np.int64)
        gt[rng.random((h, w)) < 0.15] = 255
        pred = (rng.random((h, w)) < rng.random()).astype(np.int64)
        episodes.append((c, pred, gt))
        acc.update(c, torch.from_numpy(pred), torch.from_numpy(gt))
    ref_miou, ref_fb = _pfenet_reference(episodes, classes)
    assert acc.miou() == pytest.approx(ref_miou, abs=1e-9)
    assert acc.fb_iou() == pytest.approx(ref_fb, abs=1e-9)
    # and it is not the mean of the episode IoUs
    mean_ep = np.mean([episode_iou(torch.from_numpy(p), torch.from_numpy(g)) for _, p, g in episodes])
    assert abs(mean_ep - acc.miou()) > 1e-6


def test_region_recall_counts_object_pixels_above_each_threshold():
    v = torch.tensor([[0.05, 0.35], [0.65, 0.95]])[None, None]  # (1, 1, 2, 2)
    gt = torch.tensor([[1, 1], [1, 0]])[None]
    rec = region_recall(v, gt, thresholds=(0.1, 0.3, 0.5, 0.9))
    # object pixels hold 0.05, 0.35, 0.65: above 0.1 -> 2/3, 0.3 -> 2/3, 0.5 -> 1/3, 0.9 -> 0
    assert rec.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0.0])


def test_region_recall_upsamples_the_map_to_the_label():
    v = torch.tensor([[1.0, 0.0]])[None, None]  # (1, 1, 1, 2): left bright
    gt = torch.zeros(1, 4, 8, dtype=torch.long)
    gt[:, :, 0] = 1  # left column only
    assert region_recall(v, gt, thresholds=(0.5,)).tolist() == [1.0]


def test_region_map_means_split_object_and_background_and_skip_ignore():
    v = torch.tensor([[0.2, 0.4], [0.9, 0.7]])[None, None]
    gt = torch.tensor([[1, 1], [0, 255]])[None]
    obj, bg = region_map_means(v, gt)
    assert obj == pytest.approx(0.3)
    assert bg == pytest.approx(0.9)


def test_region_accumulator_pools_pixels_over_episodes():
    acc = RegionMapAccumulator(thresholds=(0.5,))
    acc.update(torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2, dtype=torch.long))  # 4 of 4 object px hit
    acc.update(torch.zeros(1, 1, 2, 2), torch.tensor([[[1, 0], [0, 0]]]))  # 0 of 1
    assert acc.recall() == {"0.5": pytest.approx(4 / 5)}
    assert acc.means()["object_mean"] == pytest.approx(4 / 5)
    assert acc.means()["background_mean"] == pytest.approx(0.0)
