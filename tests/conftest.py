"""Shared test fixtures.

`torchvision` and `timm` (reference implementations for the parity tests; never imported by the
library). The installed torchvision is a CUDA build whose compiled operators fail to load with the
CPU torch, and its import then dies registering fake kernels for `torchvision::nms`. Defining the
operator schemas first (no kernels: nothing here calls them) lets the import through. timm imports
torchvision, so it goes through the same fixture. Both skip when the package is absent.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start

import pytest
import torch

# One intra-op thread per test process: the tests' tensors are small, where a second OpenMP thread
# only adds synchronisation (and on a busy machine, spin-waits of seconds per op). The suite runs
# as two pytest-xdist workers instead (README's test command: -n 2), one per core.
torch.set_num_threads(1)

_torchvision_ops_library = None  # kept alive for the whole session: dropping it removes the schemas


def _import_torchvision():
    global _torchvision_ops_library
    try:
        torch.ops.torchvision.nms  # noqa: B018  (present when torchvision's own ops loaded)
    except (AttributeError, RuntimeError):
        if _torchvision_ops_library is None:
            _torchvision_ops_library = torch.library.Library("torchvision", "DEF")
            for name in ("nms", "qnms"):
                _torchvision_ops_library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return pytest.importorskip("torchvision")


@pytest.fixture(scope="session")
def torchvision():
    return _import_torchvision()


@pytest.fixture(scope="session")
def timm(torchvision):
    return pytest.importorskip("timm")
