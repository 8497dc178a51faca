"""Eq. 9-12, the guided region map, the category guider and K-shot fusion against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from glocon_qgnet.region_maps import (
    EPS,
    category_guider,
    cosine_similarity_map,
    guided_region_map,
    k_shot_average,
    min_max_normalize,
    prior_region_map,
)


def _cos(a: list[float], b: list[float], eps: float = EPS) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) + eps)


def _feat(vectors: list[list[float]], h: int, w: int) -> torch.Tensor:
    """positions (row-major) x channels -> (1, C, h, w) float64."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, -1, h, w)


# bridge: 2 channels at 1x3 positions; prior: 2 channels at 2x1 positions (sizes differ on purpose)
BRIDGE = [[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]
PRIOR = [[3.0, 1.0], [-1.0, 2.0]]


def test_cosine_similarity_map_is_eq9_for_every_pair_of_positions():
    sim = cosine_similarity_map(_feat(BRIDGE, 1, 3), _feat(PRIOR, 2, 1))
    assert sim.shape == (1, 3, 2)
    for q, x in enumerate(BRIDGE):
        for qp, p in enumerate(PRIOR):
            assert sim[0, q, qp].item() == pytest.approx(_cos(x, p), abs=1e-12)


def test_prior_region_map_is_max_over_prior_positions_then_min_max_eq10_to_12():
    out = prior_region_map(_feat(BRIDGE, 1, 3), _feat(PRIOR, 2, 1))
    s = [max(_cos(x, p) for p in PRIOR) for x in BRIDGE]  # Eq. (10)-(11)
    lo, hi = min(s), max(s)
    expected = [(v - lo) / (hi - lo + 1e-7) for v in s]  # Eq. (12), eps = 1e-7
    assert out.shape == (1, 1, 1, 3)  # the bridge's size, whatever the prior's size
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-12)


def test_min_max_normalisation_is_per_image_and_constant_maps_stay_finite():
    s = torch.tensor([[1.0, 2.0, 3.0], [10.0, 50.0, 30.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    out = min_max_normalize(s)
    assert out[0].tolist() == pytest.approx([0.0, 1 / (2 + 1e-7), 2 / (2 + 1e-7)])
    assert out[1].tolist() == pytest.approx([0.0, 40 / (40 + 1e-7), 20 / (40 + 1e-7)])
    assert out[2].tolist() == [0.0, 0.0, 0.0]  # eps: no division by zero


def test_zero_vectors_have_zero_cosine_not_nan():
    sim = cosine_similarity_map(torch.zeros(1, 4, 2, 2), torch.randn(1, 4, 3, 3))
    assert torch.equal(sim, torch.zeros_like(sim))


def test_guided_region_map_only_sees_support_features_under_the_mask():
    query = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # 1x3
    support = [[0.0, 5.0], [2.0, 0.5], [1.0, 0.0], [3.0, 3.0]]  # 2x2
    mask = [1.0, 0.0, 1.0, 0.0]  # positions 0 and 2 are object
    out = guided_region_map(_feat(query, 1, 3), _feat(support, 2, 2), torch.tensor(mask, dtype=torch.float64).view(1, 1, 2, 2))
    # masked support = M_s x X_s: background positions become zero vectors (cosine 0)
    masked = [[m * v for v in vec] for vec, m in zip(support, mask)]
    s = [max(_cos(x, p) if any(p) else 0.0 for p in masked) for x in query]
    lo, hi = min(s), max(s)
    assert out.flatten().tolist() == pytest.approx([(v - lo) / (hi - lo + 1e-7) for v in s], abs=1e-12)
    # an unmasked support would have let position 3 ([3, 3]) match query [1, 1] perfectly
    unmasked = guided_region_map(_feat(query, 1, 3), _feat(support, 2, 2), torch.ones(1, 1, 2, 2, dtype=torch.float64))
    assert not torch.allclose(out, unmasked)


def test_guided_region_map_resizes_a_full_size_mask_to_the_support_features():
    torch.manual_seed(0)
    q, s = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 5, 5)
    full = torch.ones(2, 1, 40, 40)
    assert torch.allclose(guided_region_map(q, s, full), guided_region_map(q, s, torch.ones(2, 1, 5, 5)))


def test_category_guider_is_masked_average_pooling_as_weighted_gap():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [5.0, 2.0]]]], dtype=torch.float64)  # (1, 2, 2, 2)
    m = torch.tensor([[[[1.0, 0.0], [1.0, 0.5]]]], dtype=torch.float64)
    out = category_guider(f, m)
    area = 1 + 0 + 1 + 0.5 + 0.0005  # PFENet's Weighted_GAP adds 0.0005
    assert out.shape == (1, 2, 1, 1)
    assert out.flatten().tolist() == pytest.approx([(1 + 3 + 0.5 * 4) / area, (-1 + 5 + 0.5 * 2) / area])


def test_category_guider_of_an_empty_mask_is_zero_not_nan():
    out = category_guider(torch.randn(3, 4, 5, 5), torch.zeros(3, 1, 5, 5))
    assert torch.equal(out, torch.zeros(3, 4, 1, 1))


def test_k_shot_average_is_the_mean_over_shots_for_tensors_and_lists():
    shots = [torch.full((2, 1, 3, 3), float(v)) for v in (1, 2, 6)]
    assert torch.equal(k_shot_average(shots), torch.full((2, 1, 3, 3), 3.0))
    stacked = torch.stack(shots, dim=1)  # (B, K, 1, 3, 3)
    assert torch.equal(k_shot_average(stacked), k_shot_average(shots))
    assert torch.equal(k_shot_average(stacked[:, :1]), shots[0])  # 1-shot is the identity


def test_prior_region_map_passes_gradients_to_both_inputs():
    # the release learns a 3x3 conv on both sides before Eq. 9, so gradients must flow through max + min-max
    x = torch.randn(2, 6, 4, 4, requires_grad=True)
    p = torch.randn(2, 6, 3, 3, requires_grad=True)
    prior_region_map(x, p).square().sum().backward()
    assert x.grad is not None and p.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_region_maps_are_computed_in_float32_even_from_half_inputs():
    torch.manual_seed(0)
    x, p = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 3, 3)
    half = prior_region_map(x.half(), p.half())
    assert half.dtype == torch.float32
    assert torch.allclose(half, prior_region_map(x.half().float(), p.half().float()))
