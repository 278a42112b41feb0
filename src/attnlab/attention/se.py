"""Squeeze-and-Excitation block.

Paper: J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (TPAMI 2019).

Equations implemented (paper numbering):
    squeeze     z_c = F_sq(u_c) = 1 / (H W) * sum_{i,j} u_c(i, j)                     (Eq. 2)
    excitation  s = F_ex(z, W) = sigma(W_2 delta(W_1 z)),  W_1: C/r x C,  W_2: C x C/r    (Eq. 3)
    scale       x~_c = F_scale(u_c, s_c) = s_c * u_c                                     (Eq. 4)
with delta = ReLU and sigma = sigmoid. Defaults are the paper's: r = 16, average squeeze, sigmoid.

Switches for the paper's ablations (Sec. 6.1-6.3, Tables 10-12):
* ``pool='max'``: squeeze by global max pooling instead of average pooling;
* ``gate='tanh'`` or ``gate='relu'``: the excitation non-linearity sigma replaced as in Table 12
  (the gate is then in (-1, 1), resp. [0, inf), exactly as the paper's substitution).

Deviations and choices, and why:
* Biases. Eq. 3 omits them "to simplify notation"; the official Caffe models and every port use
  fully connected layers with bias, and the published SE-ResNet-50 count (28.09M) includes them, so
  both layers have a bias: parameters = 2 C (C/r) + C/r + C.
* Bottleneck width C/r = floor(C / r), at least ``min_channels`` (default 1); a reduction larger
  than C (less than one hidden unit) is refused with a ValueError. The paper only uses C >= 64
  (C/r >= 4); a CIFAR stage of 16 channels with r = 16 gets one unit. timm
  instead rounds C/r up to a multiple of 8 (64 channels -> 8 units, not 4); use ``reduction`` or
  ``min_channels`` to reproduce that.
* The two FC layers are ``nn.Linear`` applied to the pooled (N, C) vector (the paper's FCs), not
  1x1 convolutions on (N, C, 1, 1) as in timm; the state dicts differ only by the two trailing
  singleton dimensions of the weights (models/pretrained.py reshapes them).
* Speed (aimed at SE adding at most 8% to a CPU training step of a CIFAR ResNet-20). The squeeze is a sum over
  (H, W) divided by H W rather than AdaptiveAvgPool2d, the max squeeze adaptive_max_pool2d, and
  with average squeeze and no capture or gate override active, squeeze and scale go through
  `_gating.gate_scale` (shared with ECA and CBAM): the backward forms the input gradient
  ``dy * s + dz / (H W)`` in one pass instead of autograd's two or three. Same Eqs. 2-4, same
  numbers; the plain path (max squeeze, capture, gate override, ``fused=False``) is ordinary
  autograd, and a test checks that both paths agree in value and gradient. Double backward
  through the fused path raises (use ``fused=False``).

Observables (explain/capture.py): 'gate' (N, C, 1, 1) = s. Overriding it by 1 removes the block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice
from ._width import reduced_channels
from ._gating import gate_scale, pooled
from .base import upcast, CHANNEL, AttentionModule, Signal, float32_math

SQUEEZE_POOLS = ("avg", "max")
EXCITATION_GATES = ("sigmoid", "tanh", "relu")
_GATE_FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu}


class SqueezeExcite(AttentionModule):
    """SE block: x * gate(W_2 ReLU(W_1 pool(x))), a per-channel gate of shape (N, C, 1, 1).

    Args:
        channels: C, the input (and output) channels.
        reduction: r, the bottleneck is C / r units (paper: 16).
        pool: 'avg' (paper) or 'max' squeeze.
        gate: 'sigmoid' (paper), 'tanh' or 'relu' excitation non-linearity.
        min_channels: the smallest bottleneck width (floor(C / r) is raised to it).
        fused: use the one-node forward/backward for the default settings (same values, faster).
    """

    signals = {"gate": Signal(CHANNEL, neutral=1.0)}     # s of Eq. 3; 1 removes the block

    def __init__(self, channels: int, reduction: float = 16, pool: str = "avg", gate: str = "sigmoid",
                 min_channels: int = 1, fused: bool = True):
        super().__init__(channels)
        owner = type(self).__name__
        self.pool = check_choice(owner, "pool", pool, SQUEEZE_POOLS)
        self.gate = check_choice(owner, "gate", gate, EXCITATION_GATES)
        self.reduction = reduction
        self.hidden_channels = reduced_channels(owner, channels, reduction, min_channels)
        self.fused = bool(fused)
        self.fc1 = nn.Linear(channels, self.hidden_channels)
        self.fc2 = nn.Linear(self.hidden_channels, channels)

    def extra_repr(self) -> str:
        return (f"{self.channels}, hidden={self.hidden_channels}, pool={self.pool!r}, gate={self.gate!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.pool == "max":
            return x * self.observe("gate", self.excite(pooled(x, with_max=True)[1])).to(x.dtype)
        if self.fused and self.recorder is None and self.gate_override is None:
            return gate_scale(x, self.excite)
        return x * self.observe("gate", self.excite(pooled(x)[0])).to(x.dtype)

    def excite(self, squeezed: torch.Tensor) -> torch.Tensor:
        """Eq. 3: the gate s (N, C, 1, 1) from the squeezed descriptor z (N, C, 1, 1)."""
        with float32_math(squeezed):
            gate = _GATE_FUNCTIONS[self.gate](self.fc2(F.relu(self.fc1(upcast(squeezed.flatten(1))))))
        return gate[:, :, None, None]
