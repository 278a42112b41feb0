"""Efficient Channel Attention (ECA).

Paper: Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020.

Equations implemented:
    y = GAP(x) = 1 / (H W) * sum_{i,j} x_{:, i, j}                 (global average pooling)
    w = sigma(C1D_k(y))                                             (Eq. 9 of the paper)
    out = x * w
where C1D_k is a 1-D convolution across the channel axis with kernel size k, zero padding
(k - 1) / 2, no bias and one weight vector shared by all channels (k parameters), and

    k = psi(C) = | log2(C) / gamma + b / gamma |_odd               (Eq. 12), gamma = 2, b = 1,

with |t|_odd the odd number nearest t. As in the paper's own code for the formula,
t = int(abs(log2(C) / gamma + b / gamma)) and k = t if t is odd else t + 1 (`eca_kernel_size`).
Examples: C = 64 -> 3, 256 -> 5, 512 -> 5, 1024 -> 5, 2048 -> 7.

Where the paper, the official code and timm differ (the paper is followed; the others are switches):
* Official code (BangguWu/ECANet): `eca_layer(channel, k_size=3)` takes k directly and the
  `eca_resnet*` builders pass a per-stage `k_size` list (default 3 in every stage) instead of
  computing Eq. 12. Reproduce it with ``kernel_size=3`` (or the per-stage value).
* timm (`EcaModule`) computes the same expression, (log2(C) + b) / gamma, but clamps k to at least
  3 (k = max(k, 3)); the paper's formula gives k = 1 for C <= 7 (e.g. C = 4) where timm uses 3.
  Reproduce timm with ``kernel_size=max(eca_kernel_size(C), 3)``.
* Squeeze by ``x.mean((2, 3))`` (same numbers as AdaptiveAvgPool2d(1), cheaper on CPU), and
  squeeze + scale through `_gating.gate_scale` (one pass for the input gradient instead of two;
  same values and gradients) unless a capture or gate override is active.

Observables (explain/capture.py): 'gate' (N, C, 1, 1) = w. Overriding it by 1 removes the block.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_number, check_positive_int, check_positive_number
from .base import upcast, CHANNEL, AttentionModule, Signal, float32_math
from ._gating import gate_scale, pooled


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size psi(C) = |log2(C) / gamma + b / gamma|_odd (paper Eq. 12)."""
    check_positive_int("eca_kernel_size", "channels", channels)
    check_positive_number("eca_kernel_size", "gamma", gamma)
    check_number("eca_kernel_size", "b", b)
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(AttentionModule):
    """ECA: x * sigmoid(conv1d_k(GAP(x))) with a k-tap channel convolution (k from Eq. 12).

    Args:
        channels: C.
        kernel_size: a fixed odd k (the official code's k_size); None = the paper's adaptive k.
        gamma, b: the constants of the adaptive formula (paper: 2 and 1).
    """

    signals = {"gate": Signal(CHANNEL, neutral=1.0)}     # w of Eq. 9; 1 removes the block

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__(channels)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, b)
        else:
            check_positive_int(type(self).__name__, "kernel_size", kernel_size)
            if kernel_size % 2 == 0:
                raise ValueError(f"{type(self).__name__}: kernel_size must be odd (symmetric channel "
                                 f"neighbourhood), got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.gamma, self.b = gamma, b
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.recorder is None and self.gate_override is None:
            return gate_scale(x, self.excite)
        return x * self.observe("gate", self.excite(pooled(x)[0])).to(x.dtype)

    def excite(self, descriptor: torch.Tensor) -> torch.Tensor:
        """Eq. 9: the gate w (N, C, 1, 1) from the pooled descriptor y (N, C, 1, 1): a k-tap
        convolution along the channels (zero padding), then the sigmoid, in float32."""
        with float32_math(descriptor):
            gate = torch.sigmoid(self.conv(upcast(descriptor.reshape(-1, 1, self.channels))))
        return gate.view(-1, self.channels, 1, 1)
