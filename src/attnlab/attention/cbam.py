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
* BatchNorm (when ``spatial_norm``) with momentum 0.01 as in the official code.

Observables (explain/capture.py), recorded by CBAM under its own path: 'channel_gate' (N, C, 1, 1)
and 'spatial_gate' (N, 1, H, W). `ChannelAttention` and `SpatialAttention` also work alone (same
names) and are the two halves CBAM is made of; inside CBAM they only compute the gates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._args import check_choice, check_positive_int, reduced_channels
from .base import AttentionModule

CBAM_ORDERS = ("channel_first", "spatial_first", "parallel")


class ChannelAttention(AttentionModule):
    """M_c (Eq. 2): x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), a (N, C, 1, 1) gate."""

    observables = ("channel_gate",)

    def __init__(self, channels: int, reduction: float = 16, min_channels: int = 1, mlp_bias: bool = True):
        super().__init__(channels)
        self.hidden_channels = reduced_channels(type(self).__name__, channels, reduction, min_channels)
        self.fc1 = nn.Linear(channels, self.hidden_channels, bias=mlp_bias)
        self.fc2 = nn.Linear(self.hidden_channels, channels, bias=mlp_bias)

    def extra_repr(self) -> str:
        return f"{self.channels}, hidden={self.hidden_channels}"

    def compute_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_c(x) of shape (N, C, 1, 1)."""
        n = x.shape[0]
        pooled = torch.cat((x.mean((2, 3)), x.amax((2, 3))))  # (2N, C): avg rows, then max rows
        logits = self.fc2(F.relu(self.fc1(pooled)))
        return torch.sigmoid(logits[:n] + logits[n:])[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x * self.observe("channel_gate", self.compute_gate(x))


class SpatialAttention(AttentionModule):
    """M_s (Eq. 3): x * sigmoid(conv_kxk([mean_c(x); max_c(x)])), a (N, 1, H, W) gate."""

    observables = ("spatial_gate",)

    def __init__(self, channels: int, kernel_size: int = 7, norm: bool = False):
        super().__init__(channels)
        owner = type(self).__name__
        check_positive_int(owner, "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"{owner}: kernel_size must be odd (same-size output), got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not norm)
        self.norm = nn.BatchNorm2d(1, momentum=0.01) if norm else nn.Identity()

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"

    def compute_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_s(x) of shape (N, 1, H, W)."""
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)  # (N, 2, H, W)
        return torch.sigmoid(self.norm(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x * self.observe("spatial_gate", self.compute_gate(x))


class CBAM(AttentionModule):
    """Channel attention then spatial attention (Eq. 1); see the module docstring for switches.

    Args:
        channels: C.
        reduction: r of the channel MLP (paper: 16).
        spatial_kernel: the spatial conv's kernel size (paper: 7).
        order: 'channel_first' (paper), 'spatial_first' or 'parallel'.
        spatial_norm: BatchNorm after the spatial conv (official code) instead of none (paper).
        min_channels: the smallest MLP bottleneck width.
        mlp_bias: biases in the channel MLP (official code: yes; timm's CBAM: no, `mlp_bias=False`).
    """

    observables = ("channel_gate", "spatial_gate")

    def __init__(self, channels: int, reduction: float = 16, spatial_kernel: int = 7,
                 order: str = "channel_first", spatial_norm: bool = False, min_channels: int = 1,
                 mlp_bias: bool = True):
        super().__init__(channels)
        self.order = check_choice(type(self).__name__, "order", order, CBAM_ORDERS)
        self.channel = ChannelAttention(channels, reduction, min_channels, mlp_bias)
        self.spatial = SpatialAttention(channels, spatial_kernel, spatial_norm)

    def extra_repr(self) -> str:
        return f"{self.channels}, order={self.order!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.order == "channel_first":
            x = x * self.observe("channel_gate", self.channel.compute_gate(x))
            return x * self.observe("spatial_gate", self.spatial.compute_gate(x))
        if self.order == "spatial_first":
            x = x * self.observe("spatial_gate", self.spatial.compute_gate(x))
            return x * self.observe("channel_gate", self.channel.compute_gate(x))
        channel_gate = self.observe("channel_gate", self.channel.compute_gate(x))
        spatial_gate = self.observe("spatial_gate", self.spatial.compute_gate(x))
        return x * channel_gate * spatial_gate
