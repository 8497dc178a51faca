"""The momentum twin (key encoder) of MoCo: an EMA copy of the query encoder, never trained by SGD.

theta_k <- m * theta_k + (1 - m) * theta_q, m = 0.999 (MoCo, facebookresearch/moco builder.py,
``_momentum_update_key_encoder``). Only parameters are averaged; buffers (BatchNorm running
statistics) are the twin's own, accumulated by its own forward passes, as in MoCo.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_twin(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model``: same weights, ``requires_grad=False`` everywhere."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def update_momentum(model: nn.Module, twin: nn.Module, m: float = 0.999) -> None:
    """In place: every twin parameter becomes ``m * twin + (1 - m) * model`` (exactly this formula)."""
    q_params = list(model.parameters())
    k_params = list(twin.parameters())
    if len(q_params) != len(k_params):
        raise ValueError(f"momentum update: model has {len(q_params)} parameters, twin has {len(k_params)}")
    for p_q, p_k in zip(q_params, k_params):
        p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)
