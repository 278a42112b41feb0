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
* timm's `GlobalContext` defaults to multiplicative fusion without zero init; here the paper's
  additive fusion is the default. Its LayerNorm has eps 1e-6, the official code's PyTorch's 1e-5
  (the default here): ``norm_eps=1e-6`` reproduces timm's block.

Observables (explain/capture.py): 'context_weights' (N, 1, H, W), the softmax map alpha (attention
pooling only); 'transform' (N, C, 1, 1), the term added at every position ('add'), overridden by 0
to remove the block; or 'gate' (N, C, 1, 1), sigmoid of it ('mul'), overridden by 1.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_positive_number
from ._width import reduced_channels
from .base import upcast, CHANNEL, POOLING, AttentionModule, Signal, is_channels_last, float32_math

GC_FUSIONS = ("add", "mul")
GC_POOLS = ("attention", "avg")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The (N, HW, C) matrix of a channels_last map: a view, no copy."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


class GlobalContextBlock(AttentionModule):
    """GC block: x + transform(attention_pool(x)) (or x * sigmoid(...) with fusion='mul').

    Args:
        channels: C.
        reduction: r, the transform's bottleneck is C / r (paper: 16).
        fusion: 'add' (paper) or 'mul'.
        pool: 'attention' (paper) or 'avg'.
        zero_init: zero the last transform layer (identity at init with 'add').
        min_channels: the smallest bottleneck width.
        norm_eps: the transform's LayerNorm epsilon (official code: 1e-5; timm: 1e-6).
    """

    # Every signal of the block; an instance observes 'context_weights' with attention pooling only,
    # and 'transform' (additive fusion, 0 removes the block) or 'gate' (multiplicative, 1 does).
    signals = {"context_weights": Signal(POOLING), "transform": Signal(CHANNEL, neutral=0.0),
               "gate": Signal(CHANNEL, neutral=1.0)}

    def __init__(self, channels: int, reduction: float = 16, fusion: str = "add", pool: str = "attention",
                 zero_init: bool = True, min_channels: int = 1, norm_eps: float = 1e-5):
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
            norm=nn.LayerNorm(self.hidden_channels, eps=check_positive_number(owner, "norm_eps", norm_eps)),
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
        with float32_math(x):
            weights = torch.softmax(upcast(logits.reshape(n, h * w)), dim=1)
        weights = self.observe("context_weights", weights.view(n, 1, h, w)).to(x.dtype)
        if rows is not None:
            return torch.bmm(weights.reshape(n, 1, h * w), rows).view(n, c)
        return torch.bmm(x.flatten(2), weights.reshape(n, h * w, 1)).view(n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        context = self.context(x)
        with float32_math(x):
            term = self.transform(upcast(context))[:, :, None, None]
            if self.fusion == "add":
                return x + self.observe("transform", term).to(x.dtype)
            return x * self.observe("gate", torch.sigmoid(term)).to(x.dtype)
