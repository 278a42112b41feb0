"""The soft-mask branch of the residual attention network (Wang et al. 2017).

Paper: F. Wang, M. Jiang, C. Qian, S. Yang, C. Li, H. Zhang, X. Wang, X. Tang, "Residual Attention
Network for Image Classification", CVPR 2017 (arXiv:1704.06904). Official code: the Caffe
prototxts of github.com/fwang91/residual-attention-network (Attention-56/92 deploy files).

The branch computes the soft mask M in [0, 1] (one value per channel and position, the paper's
mixed attention) that the network's attention module applies to its trunk, H = (1 + M) * T
(paper eq. 3). That module, its trunk and the network live with their family in models/ran.py;
this file holds only the mask, which takes the residual unit it repeats as an argument (`unit`:
channels -> a module mapping (N, C, H, W) to the same shape), so that it depends on no backbone.

Layout (paper section 3.2 and Fig. 2; the layer order is read off the official prototxt):
bottom-up, ``depth`` times {3x3/2 max pooling, r residual units}; top-down, at every level {r
residual units, bilinear up-sampling to the size of the level above, + skip}; each skip
connection carries one residual unit applied to the bottom-up feature of that level (there is
none at the input level); then BN-ReLU-conv1x1, BN-ReLU-conv1x1 and a sigmoid. The lowest level
therefore holds 2r units (r on the way down, r on the way up), as in the official network. The
paper's unit is the pre-activation bottleneck of He et al. 2016, which models/ran.py passes in.

Where this code deviates, and why:

* Any input size, one fixed structure: the branch always does its ``depth`` poolings, as the paper
  fixes them per stage (3 / 2 / 1 in stages 1 / 2 / 3, lowest resolution 7x7 at 224 px), whatever
  the map's size. A map already 1 pixel high or wide stays so under the padded 3x3/2 pooling (its
  maximum is the pixel itself), so a small map simply runs the deeper levels at 1 pixel. The
  computation thus never depends on the input's size, and a torch.fx or torch.export graph,
  which is traced without sizes, computes exactly what eager mode computes at every size.
* Max pooling is kernel 3, stride 2, padding 1 (floor mode); Caffe's pooling in the official
  files is kernel 3, stride 2, no padding, ceil mode. Both halve even sizes identically (56 -> 28).
* Up-sampling uses F.interpolate(mode="bilinear", align_corners=False) to the exact size of the
  skip feature; Caffe's Interp layer aligns the corner pixels. Same role, sub-pixel difference.
* Popular PyTorch re-implementations also add the trunk output and the bottom-up feature to the
  up-sampled mask; the official prototxt passes those blobs to Interp only as size references.
  We follow the paper and the official file: no such additions.
* The mask's 1x1 convolutions have no bias, as in the official file (the first is followed by BN).
* The official Attention-92 file ends the mask of its last stage-3 module with TanH instead of a
  sigmoid; the paper and every other module use the sigmoid, and so do we.
* Mask activation: the paper's default mixed attention (sigmoid per channel and position).
  ``mask_activation="spatial"`` gives the paper's spatial-attention ablation (eq. f3: sigmoid of
  the logits standardised per channel over the positions, (x - mean_c) / std_c; std_c is floored
  at 1e-5 so a 1x1 map gives 0.5), "channel" its channel-attention ablation (eq. f2: L2
  normalisation over the channels at each position; not bounded to [0, 1] like a sigmoid).

The branch records nothing itself (no `signals`): the attention module that applies the mask
observes it as 'mask'.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int
from .base import AttentionModule, init_conv_weights

MASK_ACTIVATIONS = ("mixed", "spatial", "channel")


class SoftMaskBranch(AttentionModule):
    """Bottom-up / top-down soft mask: (N, C, H, W) -> M in [0, 1] of the same shape.

    unit: builds one residual unit for `channels` channels (called as unit(channels)); the unit
    must keep the shape (N, C, H, W). depth: number of max-pool down-samplings (the paper uses 3,
    2, 1 in stages 1, 2, 3 at 224 px), done at every input size (a 1-pixel side stays 1). r: residual
    units between adjacent poolings. Every convolution and norm, the units' included, gets
    `init_conv_weights` (attention modules nested in a unit keep their own initialisation).
    """

    def __init__(self, channels: int, depth: int = 3, r: int = 1, mask_activation: str = "mixed", *,
                 unit: Callable[[int], nn.Module]):
        super().__init__(channels)
        check_int("SoftMaskBranch", "depth", depth, 0)
        check_int("SoftMaskBranch", "r", r)
        if not callable(unit):
            raise TypeError(f"SoftMaskBranch: unit must be a callable that builds a residual unit from a "
                            f"channel count, got {type(unit).__name__} {unit!r}")
        check_choice("SoftMaskBranch", "mask_activation", mask_activation, MASK_ACTIVATIONS)
        self.depth, self.r, self.mask_activation = depth, r, mask_activation

        def units(n: int) -> nn.Sequential:
            return nn.Sequential(*[unit(channels) for _ in range(n)])

        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.down = nn.ModuleList(units(r) for _ in range(depth))   # level i+1, after pooling i+1
        self.up = nn.ModuleList(units(r) for _ in range(depth))     # level i+1, before up-sampling
        self.skip = nn.ModuleList(units(1) for _ in range(max(depth - 1, 0)))  # levels 1 .. depth-1
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
        )
        init_conv_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = []
        h = x
        for i in range(self.depth):
            h = self.down[i](self.pool(h))
            features.append(h)
        for i in reversed(range(self.depth)):
            h = self.up[i](h)
            above = features[i - 1] if i > 0 else x
            h = F.interpolate(h, size=above.shape[-2:], mode="bilinear", align_corners=False)
            if i > 0:
                h = h + self.skip[i - 1](above)
        logits = self.head(h)
        if self.mask_activation == "mixed":
            return torch.sigmoid(logits)
        if self.mask_activation == "spatial":
            mean = logits.mean(dim=(2, 3), keepdim=True)
            std = logits.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(1e-5)
            return torch.sigmoid((logits - mean) / std)
        return F.normalize(logits, p=2, dim=1)
