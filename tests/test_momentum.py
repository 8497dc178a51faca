"""The momentum twin: EMA with m = 0.999, exact, no gradient."""

import torch
from torch import nn

from glocon.train.momentum import momentum_twin, update_momentum


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_momentum_update_is_exactly_m_twin_plus_one_minus_m_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    twin = momentum_twin(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # the model moved on; the twin did not
    before = [p.clone().double() for p in twin.parameters()]
    update_momentum(model, twin, 0.999)
    for p_k, k0, p_q in zip(twin.parameters(), before, model.parameters()):
        expected = 0.999 * k0 + (1 - 0.999) * p_q.double()
        assert torch.allclose(p_k.double(), expected, atol=1e-7, rtol=0)
        assert not torch.equal(p_k, p_q)


def test_momentum_twin_has_no_gradient_and_keeps_its_own_bn_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    twin = momentum_twin(model)
    assert all(not p.requires_grad for p in twin.parameters())
    model(torch.randn(2, 3, 8, 8))  # only the model's BN running stats move
    update_momentum(model, twin, 0.5)
    assert torch.equal(twin[1].running_mean, torch.zeros(4))
    assert not torch.equal(model[1].running_mean, torch.zeros(4))


def test_m_equal_one_freezes_the_twin_and_m_zero_copies_the_model():
    model = nn.Linear(4, 4)
    twin = momentum_twin(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    frozen = twin.weight.clone()
    update_momentum(model, twin, 1.0)
    assert torch.equal(twin.weight, frozen)
    update_momentum(model, twin, 0.0)
    assert torch.equal(twin.weight, model.weight)
