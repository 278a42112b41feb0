"""ResNet family: ResNet, pre-activation ResNet, Wide ResNet and ResNeXt, with attention slots.

Papers and what is implemented:

* He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016: y = F(x, {W_i}) + x
  (eq. 1) with a projection W_s x when the shape changes (eq. 2). ImageNet nets (Table 1:
  18/34 basic blocks, 50/101/152 bottlenecks, 7x7/2 stem + 3x3/2 max-pool, 4 stages) and the CIFAR
  nets of section 4.2 (6n+2 layers, 3 stages of 16/32/64 channels, 3x3 stem, option A shortcuts:
  stride-2 sub-sampling and zero-padded extra channels, which gives the published 0.27M for n=3).
* He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016: pre-activation
  units x_{l+1} = x_l + F(BN-ReLU(x_l)) (eq. 3 with identity f); CIFAR 164/1001 with bottlenecks.
* Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016: WRN-d-k = pre-activation basic blocks,
  (d - 4) / 6 per stage, widths 16k/32k/64k, optional dropout between the two convolutions.
* Xie, Girshick, Dollar, Tu, He, "Aggregated Residual Transformations", CVPR 2017 (ResNeXt): the
  bottleneck's 3x3 convolution grouped (cardinality C, width d per group); ImageNet 50 32x4d and
  CIFAR 29 8x64d (3 stages of 3 blocks, 3x3 stem of 64 channels).
* Wide ResNet-50-2 (ImageNet) as torchvision defines it: ResNet-50 with twice the bottleneck width.

Module names equal torchvision's (conv1, bn1, layer1..layer4, blockwise conv1/bn1/.../downsample.0/1),
so a torchvision or timm state dict loads directly; only the classifier differs (`fc` there,
`head.fc` here: see `remap_pretrained`).

Attention (the placement spec, `layers.Placement`): one slot per residual block, at one of the
SE paper's positions (Hu et al., TPAMI 2019, Fig. 5 and Table 14):
  standard  on the residual branch after its last norm, before the addition (SE/CBAM/ECA/timm);
  pre       on the block input before the residual branch (the shortcut takes the unmodified input);
  post      after the addition and its ReLU;
  identity  on the shortcut (after the projection when there is one), in parallel to the branch.
Pre-activation blocks have no norm after their last convolution: `standard` is after the last conv.
Stages are numbered from 1 (ImageNet: 1 = conv2_x/res2 ... 4 = conv5_x/res5; CIFAR: 1..3).
Non-local blocks (Wang et al., CVPR 2018, section 4) are inserted BETWEEN blocks: after every
`nonlocal_every`-th block of each stage in `nonlocal_stages` (their 5-block ResNet-50: stages 2 and 3
= res3 and res4, every 2nd block, i.e. 2 + 3 blocks, as in the official video-nonlocal-net code).

Named variants and their choices:
* `se_*`: SE (r = 16) at `standard` in every stage (SE paper). `cbam_*`, `eca_*`: likewise
  (CBAM and ECA papers place them on the branch after the last BN, every block).
* `gc_resnet50`: GC block after the last 1x1 conv's BN (= `standard`) in stages 2-4 (c3-c5) as in
  the GCNet paper (section 5, "after 1x1", c3+c4+c5) and its official code (plugin after norm3).
* `nl_resnet50`: the paper's 5-block ResNet-50; `nl_resnet20`: our CIFAR analogue (the paper has
  no CIFAR model): one non-local block after the 2nd block of stages 2 and 3.
* `*_cifar` (resnet18_cifar, resnet50_cifar, preact_resnet18_cifar): the ImageNet architecture with
  the small-input stem (`small_input=True`: 3x3 conv, stride 1, no max-pool) for 28-32 px inputs, as
  popular CIFAR re-implementations do. Every ImageNet builder accepts `small_input=True`.

Deviations, each a switch where it matters:
* Option A zero padding appends the new channels after the old ones (the paper does not say where);
  `shortcut="B"` gives 1x1 projection shortcuts instead (option B) for the CIFAR ResNets.
* Pre-activation nets: the stem is a convolution (+ max-pool on ImageNet) without BN-ReLU and the
  network ends with BN-ReLU (as the pre-activation paper's CIFAR code and timm's ResNetV2); a
  projection shortcut takes the pre-activated input (the paper's code does so for the first block
  of a stage) and has no norm. With the position `pre` that pre-activated input has passed
  the attention module.
* `zero_init_last` (default False, torchvision's default): zero the scale of the last BN of each
  residual branch; in pre-activation blocks (no BN there) the last convolution's weight is zeroed.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import nn

from ..attention import create_attention
from .layers import RESIDUAL_POSITIONS, Backbone, ClassifierHead, Placement, Stage, init_conv_weights
from .registry import register_model


def conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, groups=groups, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut of He et al. (section 3.3): sub-sample by `stride`, append zero channels."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"ZeroPadShortcut: out_chs ({out_chs}) must be >= in_chs ({in_chs})")
        self.extra_chs, self.stride = out_chs - in_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_chs))


class ResidualBlock(nn.Module):
    """What every residual block shares: the shortcut, the attention slot at its position, the sum.

    A subclass builds its layers and implements `branch(x) -> (residual, preactivated)`, where
    `preactivated` is BN-ReLU(x) for pre-activation blocks (the projection shortcut's input) and
    None otherwise.
    """

    expansion = 1
    preact = False

    def _init_slots(self, in_chs: int, out_chs: int, downsample: Optional[nn.Module],
                    attention: Optional[Placement], stage: int) -> None:
        """The shortcut and the attention slot; `attention` is a (bound) Placement or None (no
        attention); an unbound placement's position defaults to `standard`."""
        attention = attention if attention is not None else Placement()
        self.downsample = downsample
        self.attention_position = attention.position or RESIDUAL_POSITIONS[0]
        self.attention = attention.make(in_chs if self.attention_position == "pre" else out_chs, stage)
        self.act = nn.Identity() if self.preact else nn.ReLU(inplace=True)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.attention_position
        out, preactivated = self.branch(self.attention(x) if position == "pre" else x)
        if self.downsample is None:
            shortcut = x
        else:
            shortcut = self.downsample(preactivated if self.preact else x)
        if position == "standard":
            out = self.act(self.attention(out) + shortcut)
        else:
            if position == "identity":
                shortcut = self.attention(shortcut)
            out = self.act(out + shortcut)
        if position == "post":
            out = self.attention(out)
        return out

    def zero_init_last(self) -> None:
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU. `groups`/`base_width` kept at 1/64 (paper)."""

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, block_dropout: float = 0.0,
                 attention: Optional[Placement] = None, stage: int = 1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock supports groups=1 and base_width=64 only, got {groups}, {base_width}")
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(block_dropout) if block_dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._init_slots(in_chs, planes, downsample, attention, stage)

    def branch(self, x):
        out = self.drop(self.relu(self.bn1(self.conv1(x))))
        return self.bn2(self.conv2(out)), None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """conv1x1-BN-ReLU-conv3x3(stride, groups)-BN-ReLU-conv1x1-BN (+ shortcut), ReLU.

    Inner width = planes * base_width / 64 * groups (torchvision's formula: ResNet 64/1, ResNeXt
    32x4d = base_width 4, groups 32, Wide ResNet-50-2 = base_width 128); output = 4 * planes.
    The stride sits on the 3x3 convolution (ResNet v1.5, torchvision and timm).
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, block_dropout: float = 0.0,
                 attention: Optional[Placement] = None, stage: int = 1):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out_chs = planes * self.expansion
        self.conv1 = conv1x1(in_chs, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(block_dropout) if block_dropout > 0 else nn.Identity()
        self.conv3 = conv1x1(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self._init_slots(in_chs, out_chs, downsample, attention, stage)

    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.drop(self.relu(self.bn2(self.conv2(out))))
        return self.bn3(self.conv3(out)), None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(ResidualBlock):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 (+ shortcut): pre-activation ResNet and WRN."""

    expansion = 1
    preact = True

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, block_dropout: float = 0.0,
                 attention: Optional[Placement] = None, stage: int = 1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError(f"PreActBasicBlock supports groups=1 and base_width=64 only, got {groups}, {base_width}")
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = conv3x3(in_chs, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = nn.Dropout(block_dropout) if block_dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self._init_slots(in_chs, planes, downsample, attention, stage)

    def branch(self, x):
        preactivated = torch.relu(self.bn1(x))
        out = self.drop(self.relu(self.bn2(self.conv1(preactivated))))
        return self.conv2(out), preactivated

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(ResidualBlock):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1 (+ shortcut)."""

    expansion = 4
    preact = True

    def __init__(self, in_chs: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, block_dropout: float = 0.0,
                 attention: Optional[Placement] = None, stage: int = 1):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out_chs = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = conv1x1(in_chs, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(block_dropout) if block_dropout > 0 else nn.Identity()
        self.conv3 = conv1x1(width, out_chs)
        self.relu = nn.ReLU(inplace=True)
        self._init_slots(in_chs, out_chs, downsample, attention, stage)

    def branch(self, x):
        preactivated = torch.relu(self.bn1(x))
        out = self.relu(self.bn2(self.conv1(preactivated)))
        out = self.drop(self.relu(self.bn3(self.conv2(out))))
        return self.conv3(out), preactivated

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


class ResNet(Backbone):
    """Stem -> stages of residual blocks (with optional non-local blocks between them) -> head.

    Args:
        block: BasicBlock, Bottleneck, PreActBasicBlock or PreActBottleneck.
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        planes: per-stage `planes` (output = planes * block.expansion).
        stem: "imagenet" (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or "small" (3x3/1 conv, BN, ReLU).
        stem_width: channels of the stem convolution.
        groups, base_width: ResNeXt cardinality and per-group width (64 = plain ResNet).
        shortcut: "B" (1x1 projection when the shape changes) or "A" (zero padding, no parameters).
        block_dropout: dropout between the block's convolutions (WRN); drop_rate: before the classifier.
        zero_init_last: zero the last norm scale (or last conv in pre-activation blocks) of each branch.
        attention: the placement spec (a layers.Placement, an attention name, a dict or None).
        nonlocal_stages, nonlocal_every, nonlocal_kwargs: non-local blocks between residual blocks.
        small_input: replace an "imagenet" stem by the "small" one (28-32 px inputs).
    """

    def __init__(self, block: type[ResidualBlock], layers: Sequence[int], planes: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 1000, in_chans: int = 3, stem: str = "imagenet", stem_width: int = 64,
                 groups: int = 1, base_width: int = 64, shortcut: str = "B", block_dropout: float = 0.0,
                 drop_rate: float = 0.0, zero_init_last: bool = False, small_input: bool = False,
                 attention=None, nonlocal_stages=None, nonlocal_every: int = 1, nonlocal_kwargs: Optional[dict] = None,
                 family: str = "resnet"):
        super().__init__()
        self.family = family
        spec = self._setup(num_classes, in_chans, attention, len(layers), RESIDUAL_POSITIONS)
        if len(layers) != len(planes) or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"{family}: layers must be positive ints, one per stage of planes {tuple(planes)}, "
                             f"got {tuple(layers)}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"{family}: stem must be 'imagenet' or 'small', got {stem!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"{family}: shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        if shortcut == "A" and block.preact:
            raise ValueError(f"{family}: shortcut 'A' is defined for post-activation blocks only; use 'B'")
        for name, p in (("drop_rate", drop_rate), ("block_dropout", block_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{family}: {name} must be in [0, 1), got {p!r}")
        num_stages = len(layers)
        nl_stages = self._check_nonlocal(family, num_stages, nonlocal_stages, nonlocal_every, nonlocal_kwargs)
        if small_input:
            stem = "small"

        self.input_size = (in_chans, 224, 224) if stem == "imagenet" else (in_chans, 32, 32)
        # Stem. Pre-activation nets leave BN-ReLU to the first block.
        kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel, stride, padding=kernel // 2, bias=False)
        self.bn1 = nn.Identity() if block.preact else nn.BatchNorm2d(stem_width)
        self.relu = nn.Identity() if block.preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()

        in_chs = stem_width
        reduction = 2 if stem == "imagenet" else 1
        feature_stages = [Stage(("conv1", "bn1", "relu"), stem_width, reduction)]
        reduction *= 2 if stem == "imagenet" else 1  # the max-pool
        for index, (depth, stage_planes) in enumerate(zip(layers, planes)):
            stage = index + 1
            out_chs = stage_planes * block.expansion
            stride = 1 if index == 0 else 2
            modules = OrderedDict()
            for i in range(depth):
                downsample = None
                if i == 0 and (stride != 1 or in_chs != out_chs):
                    downsample = self._shortcut(shortcut, block.preact, in_chs, out_chs, stride)
                modules[str(i)] = block(in_chs, stage_planes, stride if i == 0 else 1, downsample, groups, base_width,
                                        block_dropout, spec, stage)
                in_chs = out_chs
                if stage in nl_stages and (i + 1) % nonlocal_every == 0:
                    modules[f"{i}_nonlocal"] = create_attention("non_local", out_chs, **(nonlocal_kwargs or {}))
            name = f"layer{stage}"
            self.add_module(name, nn.Sequential(modules))
            reduction *= stride
            feature_stages.append(Stage(("maxpool", name) if index == 0 else (name,), out_chs, reduction))
        # Pre-activation nets end with the BN-ReLU their last block did not apply.
        self.final_norm = (nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU(inplace=True)) if block.preact
                           else nn.Identity())
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, drop_rate)
        self._set_stages(feature_stages, final=("final_norm",))

        init_conv_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.zero_init_last()

    @staticmethod
    def _check_nonlocal(family, num_stages, nonlocal_stages, nonlocal_every, nonlocal_kwargs) -> tuple[int, ...]:
        if isinstance(nonlocal_every, bool) or not isinstance(nonlocal_every, int) or nonlocal_every < 1:
            raise ValueError(f"{family}: nonlocal_every must be an int >= 1, got {nonlocal_every!r}")
        if nonlocal_kwargs is not None and not isinstance(nonlocal_kwargs, dict):
            raise TypeError(f"{family}: nonlocal_kwargs must be a dict, got {type(nonlocal_kwargs).__name__}")
        if nonlocal_stages is None:
            return ()
        stages = (nonlocal_stages,) if isinstance(nonlocal_stages, int) else tuple(nonlocal_stages)
        bad = [s for s in stages if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_stages]
        if bad:
            raise ValueError(f"{family}: nonlocal_stages {nonlocal_stages!r} invalid; accepted: stage numbers "
                             f"1..{num_stages}")
        return stages

    @staticmethod
    def _shortcut(kind: str, preact: bool, in_chs: int, out_chs: int, stride: int) -> nn.Module:
        if kind == "A":
            return ZeroPadShortcut(in_chs, out_chs, stride)
        if preact:
            return nn.Sequential(conv1x1(in_chs, out_chs, stride))
        return nn.Sequential(conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs))

    def norms_before_attention(self) -> dict[str, nn.BatchNorm2d]:
        """{attention module name: the BatchNorm whose output feeds only it}, for the identity init of
        `pretrained.py`: the last BN of a post-activation branch (`standard`) or of a projection
        shortcut (`identity`). Pre-activation blocks and the `pre` / `post` positions have none."""
        norms = {}
        for name, block in self.named_modules():
            if not isinstance(block, ResidualBlock) or isinstance(block.attention, nn.Identity) or block.preact:
                continue
            if block.attention_position == "standard":
                norms[f"{name}.attention"] = block.bn3 if isinstance(block, Bottleneck) else block.bn2
            elif block.attention_position == "identity" and isinstance(block.downsample, nn.Sequential):
                norms[f"{name}.attention"] = block.downsample[1]
        return norms

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """torchvision and timm name everything as here except the classifier (`fc`) and, in timm,
        the attention slot (`se`, whose inner names `pretrained.rename_timm_attention` converts)."""
        if source == "attnlab":
            return state_dict
        from .pretrained import rename_timm_attention

        out = {("head." + k if k.startswith("fc.") else k): v for k, v in state_dict.items()}
        if source == "timm":
            out = rename_timm_attention(self, out, foreign_slot="se", own_slot="attention")
        return out


# ---------------------------------------------------------------------------------------- builders
_IMAGENET_PLANES = (64, 128, 256, 512)
_CIFAR_PLANES = (16, 32, 64)


def _resnet(block, layers, **kwargs) -> ResNet:
    kwargs.setdefault("family", "resnet")
    return ResNet(block, layers, **kwargs)


def _cifar_resnet(depth: int, width: int = 16, **kwargs) -> ResNet:
    """He et al. section 4.2: 6n + 2 layers, basic blocks, w/2w/4w channels (w = 16 in the paper),
    option A shortcuts."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet_cifar: depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"resnet_cifar: width must be a positive int (16 = the paper), got {width!r}")
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    kwargs.setdefault("num_classes", 10)
    return _resnet(BasicBlock, (n, n, n), planes=(width, 2 * width, 4 * width), stem="small", stem_width=width,
                   **kwargs)


def _preact_cifar(depth: int, **kwargs) -> ResNet:
    """Pre-activation paper, CIFAR: 9n + 2 layers of bottlenecks, 16/32/64 planes (x4 out)."""
    n = (depth - 2) // 9
    kwargs.setdefault("family", "preact_resnet")
    kwargs.setdefault("num_classes", 10)
    return ResNet(PreActBottleneck, (n, n, n), planes=_CIFAR_PLANES, stem="small", stem_width=16, **kwargs)


def _wrn_cifar(depth: int, widen: int, **kwargs) -> ResNet:
    """WRN-depth-widen: (depth - 4) / 6 pre-activation basic blocks per stage, widths 16k/32k/64k."""
    n = (depth - 4) // 6
    kwargs.setdefault("family", "wide_resnet")
    kwargs.setdefault("num_classes", 10)
    return ResNet(PreActBasicBlock, (n, n, n), planes=tuple(w * widen for w in _CIFAR_PLANES), stem="small",
                  stem_width=16, **kwargs)


@register_model
def resnet18(**kwargs):
    return _resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs):
    return _resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs):
    return _resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnet101(**kwargs):
    return _resnet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model
def resnet152(**kwargs):
    return _resnet(Bottleneck, (3, 8, 36, 3), **kwargs)


@register_model
def resnet18_cifar(**kwargs):
    """ResNet-18 with the small-input stem (3x3/1, no max-pool) for 28-32 px inputs."""
    kwargs.setdefault("num_classes", 10)
    return _resnet(BasicBlock, (2, 2, 2, 2), small_input=True, **kwargs)


@register_model
def resnet50_cifar(**kwargs):
    """ResNet-50 with the small-input stem (3x3/1, no max-pool) for 28-32 px inputs."""
    kwargs.setdefault("num_classes", 10)
    return _resnet(Bottleneck, (3, 4, 6, 3), small_input=True, **kwargs)


@register_model
def resnet_cifar(depth: int = 20, width: int = 16, **kwargs):
    """CIFAR ResNet of any depth 6n + 2 and stage widths (w, 2w, 4w): resnet_cifar(20, 16) is resnet20.
    The depth and width knobs serve small studies (`attnlab compare`'s quick preset trains a
    ResNet-8) and the report's capacity control, which widens the baseline to match an attention
    variant's parameter count (`attnlab.study.match_width`)."""
    kwargs.setdefault("family", "resnet_cifar")
    return _cifar_resnet(depth, width, **kwargs)


@register_model
def resnet20(**kwargs):
    return _cifar_resnet(20, **kwargs)


@register_model
def resnet32(**kwargs):
    return _cifar_resnet(32, **kwargs)


@register_model
def resnet44(**kwargs):
    return _cifar_resnet(44, **kwargs)


@register_model
def resnet56(**kwargs):
    return _cifar_resnet(56, **kwargs)


@register_model
def resnet110(**kwargs):
    return _cifar_resnet(110, **kwargs)


@register_model
def preact_resnet18(**kwargs):
    kwargs.setdefault("family", "preact_resnet")
    return ResNet(PreActBasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def preact_resnet50(**kwargs):
    kwargs.setdefault("family", "preact_resnet")
    return ResNet(PreActBottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def preact_resnet18_cifar(**kwargs):
    """Pre-activation ResNet-18 with the small-input stem (3x3/1 conv, no max-pool)."""
    kwargs.setdefault("num_classes", 10)
    return preact_resnet18(small_input=True, **kwargs)


@register_model
def preact_resnet164(**kwargs):
    return _preact_cifar(164, **kwargs)


@register_model
def preact_resnet1001(**kwargs):
    return _preact_cifar(1001, **kwargs)


@register_model
def wrn16_8(**kwargs):
    return _wrn_cifar(16, 8, **kwargs)


@register_model
def wrn28_10(**kwargs):
    return _wrn_cifar(28, 10, **kwargs)


@register_model
def wide_resnet50_2(**kwargs):
    kwargs.setdefault("family", "wide_resnet")
    return ResNet(Bottleneck, (3, 4, 6, 3), base_width=128, **kwargs)


@register_model
def resnext50_32x4d(**kwargs):
    kwargs.setdefault("family", "resnext")
    return ResNet(Bottleneck, (3, 4, 6, 3), groups=32, base_width=4, **kwargs)


@register_model
def resnext29_8x64d(**kwargs):
    """ResNeXt paper, CIFAR: 3 stages x 3 bottlenecks, cardinality 8, width 64, 3x3 stem of 64."""
    kwargs.setdefault("family", "resnext")
    kwargs.setdefault("num_classes", 10)
    return ResNet(Bottleneck, (3, 3, 3), planes=(64, 128, 256), stem="small", stem_width=64, groups=8,
                  base_width=64, **kwargs)


# --------------------------------------------------------------------- attention variants by paper name
def _with(attention: str, builder, kwargs: dict, **defaults):
    """`builder` with the paper's placement: `attention` and `defaults` (Placement fields) fill
    what the caller's own placement leaves unset."""
    kwargs["attention"] = Placement.coerce(kwargs.get("attention")).with_defaults(name=attention, **defaults)
    return builder(**kwargs)


@register_model
def se_resnet18(**kwargs):
    return _with("se", resnet18, kwargs)


@register_model
def se_resnet34(**kwargs):
    return _with("se", resnet34, kwargs)


@register_model
def se_resnet50(**kwargs):
    return _with("se", resnet50, kwargs)


@register_model
def se_resnet101(**kwargs):
    return _with("se", resnet101, kwargs)


@register_model
def se_resnet152(**kwargs):
    return _with("se", resnet152, kwargs)


@register_model
def se_resnet20(**kwargs):
    return _with("se", resnet20, kwargs)


@register_model
def se_resnet56(**kwargs):
    return _with("se", resnet56, kwargs)


@register_model
def se_resnet110(**kwargs):
    return _with("se", resnet110, kwargs)


@register_model
def se_preact_resnet164(**kwargs):
    return _with("se", preact_resnet164, kwargs)


@register_model
def se_wrn16_8(**kwargs):
    return _with("se", wrn16_8, kwargs)


@register_model
def se_resnext50_32x4d(**kwargs):
    return _with("se", resnext50_32x4d, kwargs)


@register_model
def cbam_resnet18(**kwargs):
    return _with("cbam", resnet18, kwargs)


@register_model
def cbam_resnet50(**kwargs):
    return _with("cbam", resnet50, kwargs)


@register_model
def eca_resnet18(**kwargs):
    return _with("eca", resnet18, kwargs)


@register_model
def eca_resnet50(**kwargs):
    return _with("eca", resnet50, kwargs)


@register_model
def eca_resnet101(**kwargs):
    return _with("eca", resnet101, kwargs)


@register_model
def gc_resnet50(**kwargs):
    """GC blocks after the last 1x1 conv's BN of every block in c3-c5 (stages 2-4), GCNet paper."""
    return _with("gc", resnet50, kwargs, stages=(2, 3, 4))


@register_model
def nl_resnet50(**kwargs):
    """ResNet-50 with 5 non-local blocks: after every 2nd block of res3 and res4 (Wang et al.)."""
    kwargs.setdefault("nonlocal_stages", (2, 3))
    kwargs.setdefault("nonlocal_every", 2)
    return resnet50(**kwargs)


@register_model
def nl_resnet20(**kwargs):
    """CIFAR ResNet-20 with one non-local block after the 2nd block of stages 2 and 3 (our analogue)."""
    kwargs.setdefault("nonlocal_stages", (2, 3))
    kwargs.setdefault("nonlocal_every", 2)
    return resnet20(**kwargs)
