"""The FEM decoder: PFENet's bins, one auxiliary output per bin, top-down inter-scale merge."""

from __future__ import annotations

import pytest
import torch

from glocon_qgnet.fem import FEM, resolve_bins


def test_bins_are_pfenets_at_its_60x60_features_and_scale_with_the_feature_size():
    assert resolve_bins((60, 30, 15, 8), (60, 60)) == [(60, 60), (30, 30), (15, 15), (8, 8)]
    assert resolve_bins((60, 30, 15, 8), (16, 16)) == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert resolve_bins((60, 30, 15, 8), (30, 45)) == [(30, 45), (15, 22), (8, 11), (4, 6)]
    # PFENet's own relative bins (<= 1.0 is a fraction) and its absolute bins (reference=None)
    assert resolve_bins((1.0, 0.5, 0.25), (16, 16)) == [(16, 16), (8, 8), (4, 4)]
    assert resolve_bins((60, 8), (60, 60), reference=None) == [(60, 60), (8, 8)]
    assert resolve_bins((60, 1.5), (4, 4)) == [(4, 4), (1, 1)]  # clipped to [1, feature size]


@pytest.fixture(scope="module")
def fem() -> FEM:
    torch.manual_seed(0)
    return FEM(reduce_dim=16, n_maps=2, bins=(60, 30, 15, 8)).eval()


def _inputs(b: int = 2, c: int = 16, h: int = 12, w: int = 12):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, c, h, w, generator=g), torch.rand(b, c, 1, 1, generator=g), torch.rand(b, 2, h, w, generator=g)


def test_fem_returns_logits_at_feature_size_and_one_aux_output_per_bin(fem):
    q, g, maps = _inputs()
    logits, aux = fem(q, g, maps)
    assert logits.shape == (2, 2, 12, 12)
    assert [tuple(a.shape) for a in aux] == [(2, 2, 12, 12), (2, 2, 6, 6), (2, 2, 3, 3), (2, 2, 2, 2)]


def test_fem_reads_the_region_maps_and_the_category_guider(fem):
    q, g, maps = _inputs()
    with torch.no_grad():
        base = fem(q, g, maps)[0]
        assert not torch.allclose(base, fem(q, g, maps.flip(-1))[0])
        assert not torch.allclose(base, fem(q, g * 3, maps)[0])


def test_fem_refuses_a_different_number_of_region_maps(fem):
    q, g, maps = _inputs()
    with pytest.raises(ValueError, match="2 region maps, got 1"):
        fem(q, g, maps[:, :1])
    with pytest.raises(ValueError, match="got 0"):
        fem(q, g, None)


def test_inter_scale_merge_runs_top_down_from_the_finest_bin(fem):
    q, g, maps = _inputs()
    with torch.no_grad():
        _, aux = fem(q, g, maps)
        saved = fem.init_merge[0][0].weight.clone()
        fem.init_merge[0][0].weight.mul_(-2.0)  # change only the finest bin's merge
        try:
            _, aux2 = fem(q, g, maps)
        finally:
            fem.init_merge[0][0].weight.copy_(saved)
        # every coarser bin reads the finer one through alpha_conv, so all outputs change
        assert all(not torch.allclose(a, b) for a, b in zip(aux, aux2))
        saved = fem.init_merge[3][0].weight.clone()
        fem.init_merge[3][0].weight.mul_(-2.0)  # the coarsest bin feeds nothing above it
        try:
            _, aux3 = fem(q, g, maps)
        finally:
            fem.init_merge[3][0].weight.copy_(saved)
        assert all(torch.equal(a, b) for a, b in zip(aux[:3], aux3[:3]))
        assert not torch.allclose(aux[3], aux3[3])


def test_fem_without_region_maps_is_plain_pfenet_width():
    torch.manual_seed(0)
    fem0 = FEM(reduce_dim=8, n_maps=0, bins=(4, 2))
    assert fem0.init_merge[0][0].in_channels == 16
    logits, aux = fem0(torch.rand(1, 8, 5, 5), torch.rand(1, 8, 1, 1), None)
    assert logits.shape == (1, 2, 5, 5) and len(aux) == 2
