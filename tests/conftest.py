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


def pytest_collection_modifyitems(config, items):
    """The modules holding a `slow` test run first, each module's tests together and in their
    order (a module's fixtures are then made once per worker). Under pytest-xdist the long tests
    start early, and the suite does not end on one of them running alone while the other worker
    waits."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)   # stable: the collection order otherwise


def _import_torchvision():
    from attnlab.measure.reference import _define_torchvision_ops

    _define_torchvision_ops()   # the same schema workaround `attnlab bench --reference` uses
    return pytest.importorskip("torchvision")


@pytest.fixture(scope="session")
def torchvision():
    return _import_torchvision()


@pytest.fixture(scope="session")
def timm(torchvision):
    return pytest.importorskip("timm")


@pytest.fixture(scope="session")
def shufflenet_v2_old_keys():
    """A ShuffleNet v2 state dict under the names attnlab used while its unit branches were nested
    conv-norm-act blocks (branch2.1.conv.weight for today's branch2.3.weight)."""
    import re

    flat_to_nested = {"1": {"0": "0.conv", "1": "0.bn", "2": "1.conv", "3": "1.bn"},
                      "2": {"0": "0.conv", "1": "0.bn", "3": "1.conv", "4": "1.bn", "5": "2.conv", "6": "2.bn"}}

    def rename(state: dict) -> dict:
        return {re.sub(r"\.branch([12])\.(\d)\.", lambda m: f".branch{m[1]}.{flat_to_nested[m[1]][m[2]]}.", k): v
                for k, v in state.items()}
    return rename
