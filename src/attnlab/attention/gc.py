"""Global Context (GC) block.

Paper: Y. Cao, J. Xu, S. Lin, F. Wei, H. Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019 (extended in TPAMI 2020).

Equation implemented (the paper's global context block, Eq. 4 / Fig. 4d):
    z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j alpha_j x_j)),   alpha_j = exp(W_k x_j) / sum_m exp(W_k x_m)
three steps: (a) context modelling, attention pooling with the weights alpha (a 1x1 conv W_k to one
channel, softmax over all H W positions); (b) transform, a bottleneck W_v1 (C -> C/r), LayerNorm,
ReLU, W_v2 (C/r -> C); (c) fusion, the same (N, C) term added at every position.

Switches (the paper's ablations, Table 2 of the paper):
* ``pool='avg'``: context by global average pooling instead of attention pooling (no W_k);
* ``fusion='mul'``: multiplicative fusion z = x * sigmoid(transform) (SE-like scaling) instead of
  addition;
* ``zero_init``: the last layer W_v2 (weight and bias) starts at zero, as in the official code, so
  that with additive fusion the block is exactly the identity at initialisation. With 'mul' the
  same zero start gives the constant gate sigmoid(0) = 1/2 (the official code does the same).

Deviations from the official code (mmcv `ContextBlock`), and why:
* The transform runs on the pooled (N, C) vector with nn.Linear and LayerNorm(C/r) instead of 1x1
  convolutions and LayerNorm([C/r, 1, 1]) on (N, C, 1, 1): the same numbers and parameter count
  (the weights differ only by trailing singleton dimensions), fewer ops per call.
* Bottleneck width C/r = floor(C / r), at least ``min_channels`` (official: int(C * ratio)).
* W_k has a bias as in the official code (softmax ignores it; it stays in the count:
  parameters = (C + 1) + (C C/r + C/r) + 2 C/r + (C/r C + C) with attention pooling).
* W_k initialised with Kaiming-normal (fan_in) and zero bias, as the official `reset_parameters`.
* Attention pooling as one batched matrix product x (N, C, HW) @ alpha (N, HW, 1), never
  materialising x * alpha. For a channels_last x, W_k and the pooling run on its (N, HW, C) view
  (`F.linear` with the 1x1 conv's own weight, then alpha (N, 1, HW) @ x), so that the input
  gradients come back channels_last too (NCHW gradients summed with channels_last ones were about
  2x slower at 64x64).
* Speed in training (channels_last, additive fusion, attention pooling, no capture or override):
  autograd would write the input gradient as two outer products (alpha x d_context from the
  pooling, d_logits x W_k from the logits) and sum them with the identity path's dy, four passes
  over the map. `_AttentionPool` and `_AddTerm` (below) form dx = dy + alpha (x) d_context +
  d_logits (x) W_k in one `torch.baddbmm` (K = 2) instead; the forward is unchanged. Same numbers
  (a test compares both paths); double backward through this path raises.
* timm's `GlobalContext` defaults to multiplicative fusion without zero init; here the paper's
  additive fusion is the default.

Observables (explain/capture.py): 'context_weights' (N, 1, H, W), the softmax map alpha (attention
pooling only); 'transform' (N, C, 1, 1), the term added at every position ('add'), overridden by 0
to remove the block; or 'gate' (N, C, 1, 1), sigmoid of it ('mul'), overridden by 1.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..checks import check_choice
from ._width import reduced_channels
from ._gating import _GradientLink
from .base import CHANNEL, POOLING, AttentionModule, Signal, is_channels_last

GC_FUSIONS = ("add", "mul")
GC_POOLS = ("attention", "avg")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The (N, HW, C) matrix of a channels_last map: a view, no copy."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


class _AttentionPool(torch.autograd.Function):
    """context = softmax(rows @ w + b) @ rows for rows (N, HW, C); the backward takes dy of the
    block's output from the link (left by `_AddTerm`) and returns dy plus the pooling's input
    gradient, formed in one pass."""

    @staticmethod
    def forward(ctx, rows, weight, bias, link):
        alpha = torch.softmax(torch.matmul(rows, weight) + bias, dim=1)   # (N, HW)
        ctx.save_for_backward(rows, weight, alpha)
        ctx.link = link
        return torch.bmm(alpha.unsqueeze(1), rows).squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_context):
        rows, weight, alpha = ctx.saved_tensors
        grad_out, ctx.link.grad_out = ctx.link.grad_out, None
        grad_alpha = torch.bmm(rows, grad_context.unsqueeze(2)).squeeze(2)
        grad_logits = alpha * (grad_alpha - (alpha * grad_alpha).sum(1, keepdim=True))   # softmax backward
        factors = torch.stack((alpha, grad_logits), 2)                                   # (N, HW, 2)
        vectors = torch.stack((grad_context, weight.expand_as(grad_context)), 1)         # (N, 2, C)
        grad_rows = torch.baddbmm(grad_out, factors, vectors)
        grad_weight = grad_logits.reshape(1, -1).mm(rows.reshape(-1, rows.shape[2])).view(-1)
        return grad_rows, grad_weight, grad_logits.sum().view(1), None


class _AddTerm(torch.autograd.Function):
    """rows + term at every position; the backward leaves dy in the link for `_AttentionPool`."""

    @staticmethod
    def forward(ctx, rows, term, link):
        ctx.link = link
        return rows + term.unsqueeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        ctx.link.grad_out = grad_out
        return None, grad_out.sum(1), None


class GlobalContextBlock(AttentionModule):
    """GC block: x + transform(attention_pool(x)) (or x * sigmoid(...) with fusion='mul').

    Args:
        channels: C.
        reduction: r, the transform's bottleneck is C / r (paper: 16).
        fusion: 'add' (paper) or 'mul'.
        pool: 'attention' (paper) or 'avg'.
        zero_init: zero the last transform layer (identity at init with 'add').
        min_channels: the smallest bottleneck width.
    """

    # Every signal of the block; an instance observes 'context_weights' with attention pooling only,
    # and 'transform' (additive fusion, 0 removes the block) or 'gate' (multiplicative, 1 does).
    signals = {"context_weights": Signal(POOLING), "transform": Signal(CHANNEL, neutral=0.0),
               "gate": Signal(CHANNEL, neutral=1.0)}

    def __init__(self, channels: int, reduction: float = 16, fusion: str = "add", pool: str = "attention",
                 zero_init: bool = True, min_channels: int = 1):
        super().__init__(channels)
        owner = type(self).__name__
        self.fusion = check_choice(owner, "fusion", fusion, GC_FUSIONS)
        self.pool = check_choice(owner, "pool", pool, GC_POOLS)
        self.hidden_channels = reduced_channels(owner, channels, reduction, min_channels)
        observed = (("context_weights",) if pool == "attention" else ()) + (("transform",) if fusion == "add" else ("gate",))
        self.signals = {name: GlobalContextBlock.signals[name] for name in observed}
        self.attention_logits = nn.Conv2d(channels, 1, 1) if pool == "attention" else None
        self.transform = nn.Sequential(OrderedDict(
            fc1=nn.Linear(channels, self.hidden_channels),
            norm=nn.LayerNorm(self.hidden_channels),
            act=nn.ReLU(inplace=True),
            fc2=nn.Linear(self.hidden_channels, channels),
        ))
        self.zero_init = bool(zero_init)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.attention_logits is not None:
            nn.init.kaiming_normal_(self.attention_logits.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.attention_logits.bias)
        if self.zero_init:
            nn.init.zeros_(self.transform.fc2.weight)
            nn.init.zeros_(self.transform.fc2.bias)

    def extra_repr(self) -> str:
        return (f"{self.channels}, hidden={self.hidden_channels}, fusion={self.fusion!r}, "
                f"pool={self.pool!r}")

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """Step (a): the global context vector sum_j alpha_j x_j, shape (N, C)."""
        if self.attention_logits is None:
            return x.mean((2, 3))
        n, c, h, w = x.shape
        if is_channels_last(x):
            rows = _rows(x)
            logits = F.linear(rows, self.attention_logits.weight.view(1, c), self.attention_logits.bias)
        else:
            rows, logits = None, self.attention_logits(x)
        weights = torch.softmax(logits.reshape(n, h * w), dim=1)
        weights = self.observe("context_weights", weights.view(n, 1, h, w))
        if rows is not None:
            return torch.bmm(weights.reshape(n, 1, h * w), rows).view(n, c)
        return torch.bmm(x.flatten(2), weights.reshape(n, h * w, 1)).view(n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if (self.fusion == "add" and self.attention_logits is not None and is_channels_last(x)
                and torch.is_grad_enabled() and x.requires_grad
                and self.recorder is None and self.gate_override is None):
            return self._fused_add(x)
        term = self.transform(self.context(x))[:, :, None, None]
        if self.fusion == "add":
            return x + self.observe("transform", term)
        return x * self.observe("gate", torch.sigmoid(term))

    def _fused_add(self, x: torch.Tensor) -> torch.Tensor:
        """x + transform(context(x)) through `_AttentionPool` / `_AddTerm` (module docstring)."""
        n, c, h, w = x.shape
        rows = _rows(x)
        link = _GradientLink()
        context = _AttentionPool.apply(rows, self.attention_logits.weight.view(c), self.attention_logits.bias, link)
        out = _AddTerm.apply(rows.detach(), self.transform(context), link)
        return out.view(n, h, w, c).permute(0, 3, 1, 2)
