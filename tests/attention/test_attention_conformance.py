"""Every registered attention mechanism, alone, compiles as one graph in training (torch.compile
with fullgraph=True, forward and backward), traces with torch.jit.trace and exports with
torch.export in eval mode, each giving the eager module's output. Parametrised over
`list_attention()`, so a newly registered mechanism is covered without editing this file (and
fails here until it conforms). The backbones with their attention slots are checked in
tests/models/test_conformance.py and tests/train/test_compile.py.

Small on purpose: 16 channels, 8x8 maps, batch 2; the compile backend is "eager" (only the
tracing into one graph is under test, not code generation).
"""
from __future__ import annotations

import pytest
import torch

from attnlab.attention import create_attention, list_attention

CHANNELS = 16
SMALL = {"se": {"reduction": 4}, "cbam": {"reduction": 4}, "gc": {"reduction": 4}}


def _module(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    module = create_attention(name, CHANNELS, **SMALL.get(name, {}))
    # start away from the identity (zero-initialised last layers) so that the outputs are informative
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return module


def _input(requires_grad: bool = False) -> torch.Tensor:
    x = torch.randn(2, CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("name", list_attention())
def test_compiles_as_one_graph_in_training(name):
    module = _module(name).train()
    x = _input(requires_grad=True)
    expected = module(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch._dynamo.reset()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")   # the input checks, constant in a trace
@pytest.mark.parametrize("name", list_attention())
def test_traces_and_exports_in_eval_mode(name):
    module = _module(name).eval()
    x = _input()
    with torch.no_grad():
        expected = module(x)
        traced = torch.jit.trace(module, (x,), check_trace=False)
        torch.testing.assert_close(traced(x), expected)
    program = torch.export.export(module, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), expected)
