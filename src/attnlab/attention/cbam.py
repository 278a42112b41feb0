"""Convolutional Block Attention Module (CBAM): channel attention, then spatial attention.

Paper: S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional Block Attention Module",
ECCV 2018.

Equations implemented (paper numbering):
    F'  = M_c(F) (x) F,   F'' = M_s(F') (x) F'                                           (Eq. 1)
    M_c(F) = sigma(MLP(AvgPool(F)) + MLP(MaxPool(F)))
           = sigma(W_1(W_0(F^c_avg)) + W_1(W_0(F^c_max))),  W_0: C/r x C, W_1: C x C/r      (Eq. 2)
    M_s(F) = sigma(f^{7x7}([AvgPool(F); MaxPool(F)]))                                    (Eq. 3)
with one MLP shared by both pooled vectors and a ReLU after W_0; in Eq. 3 the two poolings run
along the channel axis, giving a 2-channel (N, 2, H, W) map for the 7x7 convolution.

Switches:
* ``order``: 'channel_first' (Eq. 1, the paper's best), 'spatial_first' (M_s then M_c), or
  'parallel' (both maps computed from F: F'' = M_c(F) (x) M_s(F) (x) F). The paper compares the
  three arrangements (Sec. 4.1, "Arrangement of the channel and spatial attention") but does not
  write how the parallel maps are combined; the element-wise product is our reading, consistent
  with Eq. 1.
* ``spatial_norm``: the official code (Jongchan/attention-module) puts a BatchNorm between the
  7x7 conv and the sigmoid (and drops the conv bias); the paper has no normalisation there, so the
  default is False and the 7x7 conv then has a bias.
* ``spatial_kernel``: 7 (paper; Table 2 compares 3 and 7).

Deviations from the official code, and why:
* MLP with biases, as nn.Linear on the pooled (N, C) vectors (the official code uses nn.Linear with
  bias; timm's CBAM uses 1x1 convs without bias, `mlp_bias=False`). Both pooled vectors go
  through the MLP in one batched call (2N rows), which is the same shared MLP of Eq. 2.
* Channel pooling order in Eq. 3: the paper writes [AvgPool; MaxPool], the official ChannelPool
  concatenates [max; mean]. We follow the paper; loading official weights needs the two input
  channels of the 7x7 kernel swapped.
* BatchNorm (when ``spatial_norm``) with momentum 0.01 as in the official code;
  ``spatial_norm_momentum=0.1`` gives timm's CBAM (PyTorch's default momentum), whose running
  statistics otherwise drift apart from these in training.
* Speed: the channel max pooling by adaptive_max_pool2d (7x faster than amax on channels_last
  maps) and, with no capture or gate override active, each half through `_gating.gate_scale`:
  the input gradient in one pass plus a scatter at the arg-max positions. Same values; at tied
  maxima the gradient goes to one arg-max (as in max pooling) instead of being shared.

Observables (explain/capture.py), recorded by CBAM under its own path: 'channel_gate' (N, C, 1, 1)
and 'spatial_gate' (N, 1, H, W). `ChannelAttention` and `SpatialAttention` also work alone (same
names) and are the two halves CBAM is made of; inside CBAM they only compute the gates.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_number, check_positive_int
from ._width import reduced_channels
from ._gating import gate_scale, pooled
from .base import upcast, CHANNEL, SPATIAL, AttentionModule, Signal, float32_math

CBAM_ORDERS = ("channel_first", "spatial_first", "parallel")


class ChannelAttention(AttentionModule):
    """M_c (Eq. 2): x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), a (N, C, 1, 1) gate."""

    signals = {"channel_gate": Signal(CHANNEL, neutral=1.0)}

    def __init__(self, channels: int, reduction: float = 16, min_channels: int = 1, mlp_bias: bool = True):
        super().__init__(channels)
        self.hidden_channels = reduced_channels(type(self).__name__, channels, reduction, min_channels)
        self.fc1 = nn.Linear(channels, self.hidden_channels, bias=mlp_bias)
        self.fc2 = nn.Linear(self.hidden_channels, channels, bias=mlp_bias)

    def extra_repr(self) -> str:
        return f"{self.channels}, hidden={self.hidden_channels}"

    def excite(self, average: torch.Tensor, maximum: torch.Tensor) -> torch.Tensor:
        """Eq. 2 from the pooled (N, C, 1, 1) vectors: one MLP call on both (2N rows), summed."""
        n = average.shape[0]
        with float32_math(average):
            logits = self.fc2(F.relu(self.fc1(upcast(torch.cat((average.flatten(1), maximum.flatten(1)))))))
            return torch.sigmoid(logits[:n] + logits[n:])[:, :, None, None]

    def compute_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_c(x) of shape (N, C, 1, 1)."""
        return self.excite(*pooled(x, with_max=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return _apply_half(self, self, x, "channel_gate")


class SpatialAttention(AttentionModule):
    """M_s (Eq. 3): x * sigmoid(conv_kxk([mean_c(x); max_c(x)])), a (N, 1, H, W) gate."""

    signals = {"spatial_gate": Signal(SPATIAL, neutral=1.0)}

    def __init__(self, channels: int, kernel_size: int = 7, norm: bool = False, norm_momentum: float = 0.01):
        super().__init__(channels)
        owner = type(self).__name__
        check_positive_int(owner, "kernel_size", kernel_size)
        norm_momentum = check_number(owner, "norm_momentum", norm_momentum, 0, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"{owner}: kernel_size must be odd (same-size output), got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not norm)
        self.norm = nn.BatchNorm2d(1, momentum=norm_momentum) if norm else nn.Identity()

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def excite(self, average: torch.Tensor, maximum: torch.Tensor) -> torch.Tensor:
        """Eq. 3 from the channel-pooled (N, 1, H, W) maps."""
        with float32_math(average):
            return torch.sigmoid(self.norm(self.conv(upcast(torch.cat((average, maximum), 1)))))

    def compute_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_s(x) of shape (N, 1, H, W)."""
        return self.excite(*pooled(x, over_channels=True, with_max=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return _apply_half(self, self, x, "spatial_gate")


def _apply_half(owner: AttentionModule, half, x: torch.Tensor, name: str) -> torch.Tensor:
    """x * gate of one half (ChannelAttention or SpatialAttention), observed by `owner` under
    `name`; through `gate_scale` (lean backward) when no capture or override is active."""
    over_channels = isinstance(half, SpatialAttention)
    if owner.recorder is None and owner.gate_override is None:
        return gate_scale(x, half.excite, over_channels=over_channels, with_max=True)
    return x * owner.observe(name, half.compute_gate(x)).to(x.dtype)


class CBAM(AttentionModule):
    """Channel attention then spatial attention (Eq. 1); see the module docstring for switches.

    Args:
        channels: C.
        reduction: r of the channel MLP (paper: 16).
        spatial_kernel: the spatial conv's kernel size (paper: 7).
        order: 'channel_first' (paper), 'spatial_first' or 'parallel'.
        spatial_norm: BatchNorm after the spatial conv (official code) instead of none (paper).
        spatial_norm_momentum: that BatchNorm's momentum (official code: 0.01; timm: 0.1).
        min_channels: the smallest MLP bottleneck width.
        mlp_bias: biases in the channel MLP (official code: yes; timm's CBAM: no, `mlp_bias=False`).
    """

    signals = {**ChannelAttention.signals, **SpatialAttention.signals}   # both gates at 1 remove it

    def __init__(self, channels: int, reduction: float = 16, spatial_kernel: int = 7,
                 order: str = "channel_first", spatial_norm: bool = False, min_channels: int = 1,
                 mlp_bias: bool = True, spatial_norm_momentum: float = 0.01):
        super().__init__(channels)
        self.order = check_choice(type(self).__name__, "order", order, CBAM_ORDERS)
        self.channel = ChannelAttention(channels, reduction, min_channels, mlp_bias)
        self.spatial = SpatialAttention(channels, spatial_kernel, spatial_norm, spatial_norm_momentum)

    def extra_repr(self) -> str:
        return f"{self.channels}, order={self.order!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.order == "channel_first":
            x = _apply_half(self, self.channel, x, "channel_gate")
            return _apply_half(self, self.spatial, x, "spatial_gate")
        if self.order == "spatial_first":
            x = _apply_half(self, self.spatial, x, "spatial_gate")
            return _apply_half(self, self.channel, x, "channel_gate")
        channel_gate = self.observe("channel_gate", self.channel.compute_gate(x))
        spatial_gate = self.observe("spatial_gate", self.spatial.compute_gate(x))
        return x * (channel_gate * spatial_gate).to(x.dtype)
