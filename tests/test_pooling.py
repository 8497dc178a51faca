import torch

from glocon.pooling import patch_weights, pool_patches


def test_pool_patches_is_exact_on_a_hand_made_superpixel_map():
    # 4x4 image, 2x2 grid: patch 0 = left half, patch 1 = top-right cell, patch 2 = bottom-right cell.
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 2]]).unsqueeze(0)
    feats = torch.arange(2 * 4, dtype=torch.float32).view(1, 2, 2, 2)  # D=2, cells row-major
    w = patch_weights(labels, 3, (2, 2))
    pooled, area = pool_patches(feats, w)
    cells = feats.view(2, 4).T  # (4 cells, D)
    assert torch.allclose(pooled[0, 0], (cells[0] + cells[2]) / 2)
    assert torch.allclose(pooled[0, 1], cells[1])
    assert torch.allclose(pooled[0, 2], cells[3])
    assert torch.allclose(area[0], torch.tensor([2.0, 1.0, 1.0]))


def test_area_weights_split_a_cell_between_patches_and_majority_picks_one():
    labels = torch.tensor([[0, 1], [1, 1]]).unsqueeze(0)  # one 1x1 cell over a 2x2 image
    area = patch_weights(labels, 2, (1, 1), "area")
    assert torch.allclose(area[0, :, 0], torch.tensor([0.25, 0.75]))
    major = patch_weights(labels, 2, (1, 1), "majority")
    assert major[0, :, 0].tolist() == [0.0, 1.0]


def test_ignored_ids_get_no_weight():
    labels = torch.full((1, 2, 2), -1)
    labels[0, 0, 0] = 0
    w = patch_weights(labels, 1, (1, 1))
    assert torch.allclose(w, torch.tensor([[[0.25]]]))
