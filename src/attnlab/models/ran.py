"""Residual Attention Network (Wang et al., CVPR 2017, arXiv:1704.06904): stacked attention modules
H = (1 + M) * T between pre-activation bottleneck units; the module and the network in this file,
the soft-mask branch M in attention/soft_mask.py.

Attention module (paper eq. 3, "attention residual learning"):

    H_{i,c}(x) = (1 + M_{i,c}(x)) * T_{i,c}(x)

T is the trunk branch (t residual units), M in [0, 1] the soft mask of the same shape (mixed
attention: one value per channel and position). ``naive=True`` gives the paper's "naive attention
learning" baseline H = M * T (eq. 1). The module is

    x -> p residual units -> { trunk: t units ;  mask: SoftMaskBranch(r units per level) } -> H
      -> p residual units

The residual unit is the pre-activation bottleneck of He et al. 2016 ("Identity Mappings in Deep
Residual Networks"), which the paper names as its basic unit: BN-ReLU-conv1x1, BN-ReLU-conv3x3,
BN-ReLU-conv1x1 with 4x expansion (channels must be divisible by 4). It is the ResNet family's
block, models.resnet.PreActBottleneck, shared (not copied); the soft-mask branch receives it as
its unit. Explainability: the module records 'mask' (N, C, H, W), the soft mask M. With attention
residual learning M = 0 gives H = T (attention removed); with ``naive=True`` M = 1 does.

ImageNet (paper Table 2, official Caffe prototxts of fwang91/residual-attention-network):
7x7/2 conv 64 -> 3x3/2 max-pool -> unit 256 -> stage 1 at 56x56 (mask pooled 3 times) -> unit 512
/2 -> stage 2 at 28x28 (2 poolings) -> unit 1024 /2 -> stage 3 at 14x14 (1 pooling) -> 3 units 2048
(first /2) -> BN-ReLU -> average pool -> FC. Attention modules per stage: Attention-56 (1, 1, 1),
Attention-92 (1, 2, 3). Each module has p=1, t=2, r=1, so it adds 12 layers to the trunk and the
depth is 12 * (modules) + 20 = 36m + 20 with m the mean number of modules per stage.

CIFAR (paper section 4.1 and Table 6): depth 36m + 20 with m attention modules in EACH stage
("m is the number of Attention Module in each stage"): Attention-56/92/128/164/236 have m = 1, 2,
3, 4, 6 and p, t, r = 1, 2, 1; Attention-452 has six modules per stage with p=2, t=4, r=3 (trunk
units per module 2p+t = 8, so 20 + 18 * 24 = 452).

Parameter counts (1000 classes for ImageNet, 10 for CIFAR), measured vs the paper:
* attention56 31.81M vs 31.9M (-0.3%). attention92 52.47M vs 51.3M (+2.3%), which is one
  1024-channel unit (1.12M) more than the paper's figure. The authors' released deploy files
  count exactly as ours: 52,466,344 (Attention-92) and 31,810,728 (Attention-56) learnable
  parameters, with the same convolutions (179 / 110, none with a bias), batch norms and
  classifier, module by module. So the gap is between the paper's table and the authors' own
  network, not in this build.
* CIFAR: the paper gives no CIFAR layer table. This build uses the ImageNet design with the
  pre-activation ResNet-164 CIFAR widths (3x3 conv 16, stages of 64 / 128 / 256 channels at 32 /
  16 / 8 px, the three final units at 256 channels and 8 px, no fourth down-sampling) and the
  ImageNet mask depths (3, 2, 1). Result: Attention-92 1.96M vs 1.9M (+3.2%), Attention-236 5.20M vs
  5.1M (+2.0%), Attention-452 10.30M vs 8.6M (+20%). The ratios between the paper's three figures
  (236/92 = 2.68, 452/236 = 1.69) are what uniform modules per stage (2.65) and r = 2 in
  Attention-452 (8.86M, ratio 1.70) give; with the ImageNet distribution (1, 2, 3) Attention-92
  would have 2.45M. So we keep uniform modules per stage (the paper's wording), keep the paper's
  stated r = 3 for Attention-452 (its count is then 20% above the table; `r=2` reproduces the
  table within 3%), and do not tune widths to hit the figures.
* One pattern fits three of the paper's four Attention-92/236 figures: each is our count less
  exactly one unit of the widest attention stage (ImageNet-92: 52.47M - 1.12M = 51.35M vs 51.3M;
  CIFAR-92: 1.960M - 0.070M = 1.889M vs 1.9M; CIFAR-236: 5.203M - 0.070M = 5.133M vs 5.1M),
  while Attention-56 (ImageNet) matches as built. Dropping a unit would break the depth 36m + 20
  that the paper also states, so the builds keep every unit; tests/models/test_ran_stn.py checks
  the counts both ways.

Placement spec: `attention=` puts another mechanism into the residual units of the trunk path
(stage transition units, the pre / trunk / post units of every attention module, the final
units; not the soft-mask branch) at the SE paper's four positions. Stages: 1-3 the attention
stages (each with its transition unit), 4 the final units.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..checks import check_int
from ..attention.base import SPATIAL, AttentionModule, Signal
from ..attention.soft_mask import SoftMaskBranch
from .layers import RESIDUAL_POSITIONS, Backbone, ClassifierHead, ConvNormAct, Placement, Stage, init_conv_weights
from .registry import register_model
from .resnet import PreActBottleneck, conv1x1

IMAGENET_WIDTHS = (256, 512, 1024, 2048)
CIFAR_WIDTHS = (64, 128, 256, 256)
MASK_DEPTHS = (3, 2, 1)


def residual_unit(channels: int, unit_attention: Optional[Placement] = None, stage: int = 1) -> nn.Module:
    """One pre-activation bottleneck unit channels -> channels (the ResNet family's block), with
    `unit_attention` (a bound Placement, or None for none) in it as stage `stage`."""
    return PreActBottleneck(channels, channels // PreActBottleneck.expansion, attention=unit_attention, stage=stage)


class ResidualAttentionModule(AttentionModule):
    """Attention module H = (1 + M) * T with p pre/post units, t trunk units, r mask units.

    unit_attention: optional Placement that puts another attention (SE, CBAM, ...) into every
    trunk-path residual unit (the p pre, t trunk and p post units; not the mask branch) at the
    placement's position, as stage `stage`. ResidualAttentionNet passes its placement spec here.
    """

    signals = {"mask": Signal(SPATIAL, neutral=0.0)}   # M = 0: H = (1 + M) T = T, the mask removed

    def __init__(self, channels: int, p: int = 1, t: int = 2, r: int = 1, naive: bool = False,
                 mask_depth: int = 3, mask_activation: str = "mixed", unit_attention: Optional[Placement] = None,
                 stage: int = 1):
        super().__init__(channels)
        if channels % 4:
            raise ValueError(f"ResidualAttentionModule: channels must be divisible by 4 (bottleneck units with 4x "
                             f"expansion), got {channels}")
        check_int("ResidualAttentionModule", "p", p, 0)
        check_int("ResidualAttentionModule", "t", t)
        check_int("ResidualAttentionModule", "r", r)
        if not isinstance(naive, bool):
            raise TypeError(f"ResidualAttentionModule: naive must be a bool, got {naive!r}")
        self.p, self.t, self.r, self.naive = p, t, r, naive
        if naive:   # H = M T: the mask is removed at M = 1, not 0
            self.signals = {"mask": Signal(SPATIAL, neutral=1.0)}

        def units(n: int) -> nn.Sequential:
            return nn.Sequential(*[residual_unit(channels, unit_attention, stage) for _ in range(n)])

        self.pre = units(p)
        self.trunk = units(t)
        self.mask_branch = SoftMaskBranch(channels, depth=mask_depth, r=r, mask_activation=mask_activation,
                                          unit=residual_unit)
        self.post = units(p)
        for part in (self.pre, self.trunk, self.post):
            init_conv_weights(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.pre(x)
        trunk = self.trunk(x)
        mask = self.observe("mask", self.mask_branch(x))
        out = trunk * mask if self.naive else trunk * (1 + mask)
        return self.post(out)


class ResidualAttentionNet(Backbone):
    """Stem -> three stages of (transition unit + attention modules) -> final units -> head.

    stage_modules: attention modules in stages 1-3. widths: output channels of stages 1-3 and of
    the final units. mask_depths: max-pool down-samplings of the soft mask in stages 1-3.
    small_input: 3x3/1 convolution stem (CIFAR) instead of 7x7/2 conv + 3x3/2 max-pool.
    """

    family = "ran"

    def __init__(self, stage_modules: Sequence[int] = (1, 1, 1), widths: Sequence[int] = IMAGENET_WIDTHS,
                 mask_depths: Sequence[int] = MASK_DEPTHS, p: int = 1, t: int = 2, r: int = 1,
                 naive: bool = False, mask_activation: str = "mixed", small_input: bool = False,
                 stem_width: Optional[int] = None, final_units: int = 3, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.0, attention=None):
        super().__init__()
        spec = self._setup(num_classes, in_chans, attention, 4, RESIDUAL_POSITIONS)
        stage_modules, widths, mask_depths = tuple(stage_modules), tuple(widths), tuple(mask_depths)
        if len(stage_modules) != 3 or any(isinstance(m, bool) or not isinstance(m, int) or m < 0
                                          for m in stage_modules):
            raise ValueError(f"{self.family}: stage_modules must be three ints >= 0, got {stage_modules!r}")
        if len(widths) != 4 or any(not isinstance(w, int) or w < 4 or w % 4 for w in widths):
            raise ValueError(f"{self.family}: widths must be four multiples of 4 (stages 1-3, final units), "
                             f"got {widths!r}")
        if len(mask_depths) != 3:
            raise ValueError(f"{self.family}: mask_depths must be three ints, got {mask_depths!r}")
        if isinstance(final_units, bool) or not isinstance(final_units, int) or final_units < 1:
            raise ValueError(f"{self.family}: final_units must be an int >= 1, got {final_units!r}")
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 224, 224)
        stem_width = stem_width or (16 if small_input else 64)
        if small_input:  # pre-activation CIFAR stem: the first unit starts with BN-ReLU
            self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(ConvNormAct(in_chans, stem_width, 7, stride=2),
                                      nn.MaxPool2d(3, stride=2, padding=1))

        def unit(in_chs: int, out_chs: int, stride: int, stage: int) -> nn.Module:
            downsample = conv1x1(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else None
            return PreActBottleneck(in_chs, out_chs // PreActBottleneck.expansion, stride, downsample,
                                    attention=spec, stage=stage)

        stages = []
        prev = stem_width
        for index, (modules, width, depth) in enumerate(zip(stage_modules, widths, mask_depths)):
            stage = index + 1
            blocks = [unit(prev, width, 1 if stage == 1 else 2, stage)]
            blocks += [ResidualAttentionModule(width, p=p, t=t, r=r, naive=naive, mask_depth=depth,
                                               mask_activation=mask_activation,
                                               unit_attention=spec if spec.enabled(stage) else None, stage=stage)
                       for _ in range(modules)]
            stages.append(nn.Sequential(*blocks))
            prev = width
        final_stride = 2 if widths[3] != prev else 1
        stages.append(nn.Sequential(*[unit(prev if i == 0 else widths[3], widths[3], final_stride if i == 0 else 1, 4)
                                      for i in range(final_units)]))
        self.stages = nn.Sequential(*stages)
        self.final_act = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True))
        # Feature stages: the stem conv, then stages 1-3 and the final units (the ImageNet stem's
        # max pool opens stage 1).
        if small_input:
            feature_stages, entry, r = [Stage(("stem",), stem_width, 1)], (), 1
        else:
            feature_stages, entry, r = [Stage(("stem.0",), stem_width, 2)], ("stem.1",), 4
        for index, width in enumerate(widths):
            r *= 1 if index == 0 else (final_stride if index == 3 else 2)
            feature_stages.append(Stage(entry + (f"stages.{index}",), width, r))
            entry = ()
        self._set_stages(feature_stages, final=("final_act",))
        self.num_features = widths[3]
        self.head = ClassifierHead(widths[3], num_classes, drop_rate)
        init_conv_weights(self)


def _ran_imagenet(stage_modules: Sequence[int], **kwargs) -> ResidualAttentionNet:
    kwargs.setdefault("stage_modules", stage_modules)
    return ResidualAttentionNet(**kwargs)


def _ran_cifar(modules_per_stage: int, **kwargs) -> ResidualAttentionNet:
    kwargs.setdefault("stage_modules", (modules_per_stage,) * 3)
    kwargs.setdefault("widths", CIFAR_WIDTHS)
    kwargs.setdefault("small_input", True)
    kwargs.setdefault("num_classes", 10)
    return ResidualAttentionNet(**kwargs)


@register_model
def attention56(**kwargs):
    """Attention-56, ImageNet (paper Table 2): modules (1, 1, 1); 31.8M parameters."""
    return _ran_imagenet((1, 1, 1), **kwargs)


@register_model
def attention92(**kwargs):
    """Attention-92, ImageNet (paper Table 2): modules (1, 2, 3); 52.5M parameters."""
    return _ran_imagenet((1, 2, 3), **kwargs)


@register_model
def attention56_cifar(**kwargs):
    """Attention-56 for 32 px inputs: one module per stage."""
    return _ran_cifar(1, **kwargs)


@register_model
def attention92_cifar(**kwargs):
    """Attention-92 for 32 px inputs: two modules per stage (`stage_modules=(1, 2, 3)` for the
    ImageNet distribution)."""
    return _ran_cifar(2, **kwargs)


@register_model
def attention128_cifar(**kwargs):
    """Attention-128 for 32 px inputs: three modules per stage."""
    return _ran_cifar(3, **kwargs)


@register_model
def attention164_cifar(**kwargs):
    """Attention-164 for 32 px inputs: four modules per stage."""
    return _ran_cifar(4, **kwargs)


@register_model
def attention236_cifar(**kwargs):
    """Attention-236 for 32 px inputs: six modules per stage."""
    return _ran_cifar(6, **kwargs)


@register_model
def attention452_cifar(**kwargs):
    """Attention-452 for 32 px inputs: six modules per stage with p=2, t=4, r=3 (paper section 4.2)."""
    for key, value in (("p", 2), ("t", 4), ("r", 3)):
        kwargs.setdefault(key, value)
    return _ran_cifar(6, **kwargs)
