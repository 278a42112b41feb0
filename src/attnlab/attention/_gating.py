"""y = x * gate(pool(x)) with a lean backward: the shared core of SE, ECA and CBAM (not a mechanism).

The gating modules pool x (average, and for CBAM also max) over the spatial positions (SE, ECA,
CBAM channel attention) or over the channels (CBAM spatial attention), compute a small gate from
the pooled values, and multiply. Plain autograd then makes several passes over the full map in
the backward: the product's input gradient dy * s, the pooling gradients (a divided broadcast copy
for the mean, a mask built by comparison for amax) and their sums. `gate_scale` forms the whole
input gradient in one pass, dx = dy * s + d_avg / count (`torch.addcmul`), plus a scatter of
d_max at the arg-max positions, and computes the gate gradient sum(dy * x) a few samples at a
time so that the product stays in cache. Values and gradients are those of the plain expression
(a test checks both paths); only the tie rule of the max differs (the gradient goes to one
arg-max, as in max pooling, instead of being shared among equal maxima).

How the two autograd functions cooperate: `_PoolForGate(x)` gives the pooled tensors, the gate
network runs on them under ordinary autograd, and `_ScaleByGate(x.detach(), gate)` multiplies.
In the backward the scale node runs first (the gate depends on the pooled values), leaves dy and
the gate in a shared `_GradientLink`, and returns only the gate's gradient; the pool node then
builds dx. The gate must depend on the pooled values (callers use the plain expression when a
gate override replaces it by a constant). Double backward raises.

Whether it pays: a whole SE-ResNet-20 training step (fp32 eager, 32x32, batch 128) is about 19%
faster than with plain autograd, a CBAM one about 9% and an ECA one about 4%
(benchmarks/speed_hacks.py; benchmarks/RESULTS.md). Under torch.compile the plain expression is
traced instead: the compiler fuses the passes itself, and the two nodes' shared link would break
its graph.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .base import is_traced


class _GradientLink:
    """What `_ScaleByGate.backward` hands to `_PoolForGate.backward`: dy and the gate."""

    __slots__ = ("grad_out", "gate")

    def __init__(self):
        self.grad_out = self.gate = None


def _pools(x: torch.Tensor, over_channels: bool, with_max: bool, need_index: bool = False):
    """(average,) or (average, maximum[, index]) over dim 1 or over (2, 3), dims kept."""
    if over_channels:
        average = x.sum(1, keepdim=True) / x.shape[1]
        if not with_max:
            return (average,)
        if need_index:
            maximum, index = x.max(1, keepdim=True)
            return average, maximum, index
        return average, x.amax(1, keepdim=True)
    average = x.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3])
    if not with_max:
        return (average,)
    if need_index:
        maximum, index = F.adaptive_max_pool2d(x, 1, return_indices=True)
        return average, maximum, index
    return average, F.adaptive_max_pool2d(x, 1)  # 7x faster than amax on channels_last maps


def _product_sum(a: torch.Tensor, b: torch.Tensor, over_channels: bool,
                 chunk_elements: int = 1 << 17) -> torch.Tensor:
    """sum of a * b over dim 1 or over (2, 3), dims kept; a few samples at a time so that the
    product (the only temporary) stays in cache instead of a round trip through memory."""
    dims = (1,) if over_channels else (2, 3)
    step = max(1, chunk_elements // max(a[0].numel(), 1))
    if step >= a.shape[0]:
        return (a * b).sum(dims, keepdim=True)
    return torch.cat([(pa * pb).sum(dims, keepdim=True) for pa, pb in zip(a.split(step), b.split(step))])


class _PoolForGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, link, over_channels, with_max):
        ctx.link, ctx.over_channels, ctx.with_max = link, over_channels, with_max
        ctx.count = x.shape[1] if over_channels else x.shape[2] * x.shape[3]
        pooled = _pools(x, over_channels, with_max, need_index=with_max)
        if with_max:
            ctx.save_for_backward(pooled[2])
            return pooled[0], pooled[1]
        return pooled[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_average, grad_maximum=None):
        link = ctx.link
        grad_out, gate = link.grad_out, link.gate
        link.grad_out = link.gate = None
        grad_x = torch.addcmul(grad_average / ctx.count, grad_out, gate)
        if ctx.with_max:
            (index,) = ctx.saved_tensors
            if ctx.over_channels:
                grad_x.scatter_add_(1, index, grad_maximum)
            else:
                n, c = grad_x.shape[:2]
                grad_x.view(n, c, -1).scatter_add_(2, index.view(n, c, 1), grad_maximum.reshape(n, c, 1))
        return grad_x, None, None, None


class _ScaleByGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, link, over_channels):
        ctx.link, ctx.over_channels = link, over_channels
        ctx.save_for_backward(x, gate)
        return x * gate

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, gate = ctx.saved_tensors
        ctx.link.grad_out, ctx.link.gate = grad_out, gate
        return None, _product_sum(grad_out, x, ctx.over_channels), None, None


def gate_scale(x: torch.Tensor, excite: Callable[..., torch.Tensor], over_channels: bool = False,
               with_max: bool = False) -> torch.Tensor:
    """x * excite(*pooled): pooled = (average,) or (average, maximum) of x over the positions
    (N, C, 1, 1) or, with `over_channels`, over the channels (N, 1, H, W); `excite` returns a
    gate broadcastable to x that depends on its inputs. One-pass input gradient (module docstring)."""
    if is_traced(x) or not torch.is_grad_enabled() or not x.requires_grad or torch.compiler.is_compiling():
        # plain autograd: no gradient wanted, torch.fx tracing, or torch.compile, which fuses the
        # passes itself and cannot trace the two nodes' shared link without breaking the graph
        return x * excite(*_pools(x, over_channels, with_max)).to(x.dtype)
    link = _GradientLink()
    pooled = _PoolForGate.apply(x, link, over_channels, with_max)
    gate = (excite(*pooled) if with_max else excite(pooled)).to(x.dtype)
    return _ScaleByGate.apply(x.detach(), gate, link, over_channels)


def pooled(x: torch.Tensor, over_channels: bool = False, with_max: bool = False):
    """The pooled tensors `gate_scale` hands to `excite` (for the plain, observable path)."""
    return _pools(x, over_channels, with_max)
