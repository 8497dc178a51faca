"""Eq. (1), (6), (7) and patch sampling, on tiny tensors computed by hand."""

import math

import torch
import torch.nn.functional as F

from glocon.losses import info_nce, local_patch_pairs, pooled_patch_vectors, total_loss
from glocon.models.prior import PriorArch, PriorExtractor
from glocon.train.momentum import momentum_twin
from glocon.train.queues import KeyQueue
from glocon.train.step import forward_losses


def _hand_info_nce(q, k_pos, queue, tau):
    """-log(exp(q.k+/tau) / (exp(q.k+/tau) + sum_i exp(q.k_i/tau))), one query at a time, in float64."""
    losses = []
    for qi, ki in zip(q.tolist(), k_pos.tolist()):
        pos = math.exp(sum(a * b for a, b in zip(qi, ki)) / tau)
        neg = sum(math.exp(sum(a * b for a, b in zip(qi, kj)) / tau) for kj in queue.tolist())
        losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


def test_global_info_nce_equals_eq1_by_hand():
    q = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]), dim=1)
    k = F.normalize(torch.tensor([[0.8, 0.6, 0.0], [0.0, 1.0, 0.0]]), dim=1)
    queue = F.normalize(torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -0.6, 0.8]]), dim=1)
    got = info_nce(q, k, queue, tau=0.2)
    assert abs(got.item() - _hand_info_nce(q, k, queue, 0.2)) < 1e-5


def test_local_info_nce_on_pooled_patches_equals_eq6_by_hand():
    # One image, 2x2 feature grid, 4x4 label map: patch 0 = left half, patch 1 = right half.
    labels = torch.tensor([[0, 0, 1, 1]] * 4).unsqueeze(0)
    dense_q = torch.tensor([[[1.0, 3.0], [1.0, 3.0]], [[0.0, 4.0], [2.0, 0.0]]]).unsqueeze(0)  # (1, D=2, 2, 2)
    dense_k = torch.tensor([[[2.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 2.0]]]).unsqueeze(0)
    pairs = local_patch_pairs(labels, labels, (2, 2), max_patches=2, min_area=1.0)
    order = pairs.index[:, 1].argsort()
    q_p = pooled_patch_vectors(dense_q, pairs.weights_q, pairs.index)[order]
    k_p = pooled_patch_vectors(dense_k, pairs.weights_k, pairs.index)[order]
    # By hand: mean over each half's two cells, then L2-normalise.
    q_hand = F.normalize(torch.tensor([[1.0, 1.0], [3.0, 2.0]]), dim=1)
    k_hand = F.normalize(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), dim=1)
    assert torch.allclose(q_p, q_hand) and torch.allclose(k_p, k_hand)
    queue = F.normalize(torch.tensor([[1.0, -1.0], [0.0, 1.0]]), dim=1)
    got = info_nce(q_p, k_p, queue, tau=0.5)
    assert abs(got.item() - _hand_info_nce(q_hand, k_hand, queue, 0.5)) < 1e-5


def test_info_nce_is_low_for_aligned_positives_and_high_for_aligned_negatives():
    q = F.normalize(torch.randn(4, 8), dim=1)
    queue = F.normalize(torch.randn(16, 8), dim=1)
    good = info_nce(q, q, queue, 0.2)
    bad = info_nce(q, -q, torch.cat([q, queue]), 0.2)
    assert good < bad


def test_patch_pairs_keep_only_patches_visible_in_both_views_above_min_area():
    # 4x4 maps on a 2x2 grid (4 pixels per cell). View q shows patches 0, 1, 2; view k lacks 2, and
    # patch 1 is tiny (2 pixels = half a cell) in view k.
    lab_q = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 1, 1], [2, 2, 1, 1]]).unsqueeze(0)
    lab_k = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]).unsqueeze(0)
    pairs = local_patch_pairs(lab_q, lab_k, (2, 2), max_patches=8, min_area=0.5)
    assert sorted(pairs.index[:, 1].tolist()) == [0, 1]
    pairs = local_patch_pairs(lab_q, lab_k, (2, 2), max_patches=8, min_area=0.75)
    assert pairs.index[:, 1].tolist() == [0]


def test_patch_pairs_sample_at_most_p_per_image_and_the_draw_is_seeded():
    labels = torch.arange(64).view(8, 8).repeat_interleave(2, 0).repeat_interleave(2, 1).unsqueeze(0).repeat(3, 1, 1)  # 64 patches
    a = local_patch_pairs(labels, labels, (16, 16), 5, 1.0, generator=torch.Generator().manual_seed(1))
    b = local_patch_pairs(labels, labels, (16, 16), 5, 1.0, generator=torch.Generator().manual_seed(1))
    c = local_patch_pairs(labels, labels, (16, 16), 5, 1.0, generator=torch.Generator().manual_seed(2))
    assert torch.bincount(a.index[:, 0]).tolist() == [5, 5, 5]
    assert torch.equal(a.index, b.index) and not torch.equal(a.index, c.index)


def test_total_loss_weights_select_the_table_vi_ablations():
    g, l = torch.tensor(2.0), torch.tensor(3.0)
    assert total_loss(g, l).item() == 5.0  # Eq. (7)
    assert total_loss(g, l, w_local=0).item() == 2.0  # global only
    assert total_loss(g, l, w_global=0).item() == 3.0  # local only


def test_gradients_reach_the_query_encoder_only():
    torch.manual_seed(0)
    model = PriorExtractor(PriorArch(backbone="resnet18", hidden_dim=32))
    twin = momentum_twin(model)
    # MoCo's random initial negatives: a fresh empty queue has none, and a loss with no negative has no gradient
    qg, ql = KeyQueue(16, 128, seed=1, start="random"), KeyQueue(32, 128, seed=2, start="random")
    labels = torch.arange(16).view(4, 4).repeat_interleave(16, 0).repeat_interleave(16, 1)  # 16 blocks of 16x16
    batch = {
        "image_q": torch.rand(2, 3, 64, 64),
        "image_k": torch.rand(2, 3, 64, 64),
        "labels_q": labels.expand(2, 64, 64).clone(),
        "labels_k": labels.expand(2, 64, 64).clone(),
    }
    queue_before = (qg.keys.clone(), ql.keys.clone())
    parts = forward_losses(model, twin, batch, qg, ql, tau=0.2, w_global=1.0, w_local=1.0, max_patches=4, min_patch_area=0.1)
    assert parts.n_patches > 0 and parts.L_local > 0 and parts.L_global > 0
    parts.total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.global_head[0].weight.grad.abs().sum() > 0 and model.local_head[0].weight.grad.abs().sum() > 0
    assert model.backbone.stages["stem"][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in twin.parameters())
    assert not parts.keys_global.requires_grad and not parts.keys_local.requires_grad
    assert not qg.keys.requires_grad and torch.equal(qg.keys, queue_before[0]) and torch.equal(ql.keys, queue_before[1])
