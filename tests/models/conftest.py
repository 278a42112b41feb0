"""Helpers shared by the model tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters (in place), so that a BN loaded into the wrong
    place, or a scale folded wrongly, changes the logits (fresh BNs are near-identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def randomise_norms_fn():
    return randomise_norms
