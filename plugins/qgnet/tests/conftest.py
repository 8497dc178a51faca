"""Fixtures for the QGNet plugin tests: a randomly initialised prior export of the real format."""

from __future__ import annotations

import pytest
import torch

from glocon.models.prior import PriorArch, PriorExtractor, save_export


@pytest.fixture(scope="session")
def prior_export(shared_tmp):
    """Path of a resnet18 prior-extractor export (random init), as pretraining writes it."""
    torch.manual_seed(123)
    path = shared_tmp / "qgnet-prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), path, extra={"note": "random init for tests"})
    return path
