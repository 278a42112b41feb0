"""ShuffleNet v1 and v2.

* v1: Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
  Mobile Devices", CVPR 2018 (arXiv:1707.01083). Unit of Fig. 2(b, c): 1x1 group conv (g groups)
  - BN - ReLU - channel shuffle - 3x3 depthwise conv (stride s) - BN - 1x1 group conv - BN, then
  for s=1 `relu(x + F(x))` and for s=2 `relu(concat(avgpool3x3/2(x), F(x)))`; bottleneck width
  = 1/4 of the unit's output channels; the stage widths of Table 1 at 1.0x.
* v2: Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
  Design", ECCV 2018 (arXiv:1807.11164). Unit of Fig. 3(c, d): channel split in two halves, one
  half through 1x1 conv - BN - ReLU - 3x3 depthwise - BN - 1x1 conv - BN - ReLU, concatenated with
  the untouched half, then a channel shuffle with 2 groups; the stride-2 unit feeds the whole
  input to both branches (the left one: 3x3 depthwise/2 - BN - 1x1 conv - BN - ReLU). Widths of
  Table 5 (0.5x, 1.0x, 1.5x, 2.0x), torchvision's module layout (weights load through
  `remap_pretrained`).

Channel shuffle (Section 3.1 of v1): reshape the C channels to (groups, C/groups), transpose,
flatten: every group of the next group conv receives channels from every group of this one.

Attention (placement spec of layers.py): position `post` only, after each unit (after the
shuffle in v2, after the final ReLU in v1). v1's stride-1 unit has an identity shortcut, but its
stride-2 unit concatenates, so the residual positions are not offered. Stages are the paper's
Stage2-Stage4, numbered 1-3.

Small-input variants (`*_small`, or `small_input=True` for any width): the stem conv has
stride 1 and the max pool is dropped, for 28-32 px inputs (the stages then run at 16, 8, 4 px).

Deviations:
* v1: the stem conv is followed by BN and ReLU (Table 1 lists only the conv; every public
  implementation adds them). The first 1x1 conv of Stage2 is not grouped (as the paper says: only
  24 input channels), and no shuffle follows it (it already mixes every channel).
* v2: none from torchvision; the 1x1 conv5 before pooling is Table 5's Conv5.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..attention.base import is_channels_last, is_traced
from .layers import (PLAIN_POSITIONS, Backbone, ClassifierHead, ConvNormAct, Stage, init_conv_weights,
                     rename_state_dict_keys)
from .registry import register_model


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` groups: (N, g*c, H, W) -> (N, c*g, H, W).

    The result keeps x's memory format: a channels_last map is shuffled in its NHWC view. (The
    usual view-transpose-reshape returns a contiguous NCHW copy, and the next convolution of a
    channels_last network then runs about 2x slower on the CPU.)"""
    n, chs, h, w = x.shape
    if not is_traced(x) and chs % groups:
        raise ValueError(f"channel_shuffle: {chs} channels do not split into {groups} groups")
    if is_channels_last(x):
        nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, chs // groups)
        return nhwc.transpose(3, 4).reshape(n, h, w, chs).permute(0, 3, 1, 2)
    return x.view(n, groups, chs // groups, h, w).transpose(1, 2).reshape(n, chs, h, w)


def concat_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """channel_shuffle(cat((a, b), 1), 2) in one copy: channels a0, b0, a1, b1, ... (memory
    format of `a` kept)."""
    n, c, h, w = a.shape
    if is_channels_last(a) or is_channels_last(b):
        pairs = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=4)
        return pairs.view(n, h, w, 2 * c).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).view(n, 2 * c, h, w)


def _check_positive(family: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{family}: {name} must be a positive int, got {value!r}")


class ShuffleUnitV1(nn.Module):
    """One ShuffleNet v1 unit (Fig. 2b for stride 1, Fig. 2c for stride 2)."""

    def __init__(self, in_chs: int, out_chs: int, groups: int, stride: int, group_first_conv: bool,
                 attn: nn.Module):
        super().__init__()
        self.stride = stride
        branch_out = out_chs - in_chs if stride == 2 else out_chs
        mid = out_chs // 4
        first_groups = groups if group_first_conv else 1
        self.shuffle_groups = first_groups
        self.compress = ConvNormAct(in_chs, mid, 1, groups=first_groups)
        self.depthwise = ConvNormAct(mid, mid, 3, stride=stride, groups=mid, act=None)
        self.expand = ConvNormAct(mid, branch_out, 1, groups=groups, act=None)
        self.shortcut_pool = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None
        self.act = nn.ReLU(inplace=True)
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compress(x)
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        out = self.expand(self.depthwise(out))
        if self.stride == 2:
            out = torch.cat((self.shortcut_pool(x), out), 1)
        else:
            out = out + x
        return self.attn(self.act(out))


class ShuffleUnitV2(nn.Module):
    """One ShuffleNet v2 unit (Fig. 3c for stride 1, Fig. 3d for stride 2)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, attn: nn.Module):
        super().__init__()
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"ShuffleNetV2: a stride-1 unit keeps its width, got {in_chs} -> {out_chs}")
        self.stride = stride
        half = out_chs // 2
        # Each branch is one flat Sequential of its layers (conv, bn[, relu], ...): a unit at batch
        # 1 is dominated by per-module call overhead, and nested ConvNormAct wrappers cost ~3% there.
        if stride == 2:
            self.branch1 = nn.Sequential(*ConvNormAct(in_chs, in_chs, 3, stride=2, groups=in_chs, act=None),
                                         *ConvNormAct(in_chs, half, 1))
        self.branch2 = nn.Sequential(*ConvNormAct(in_chs if stride == 2 else half, half, 1),
                                     *ConvNormAct(half, half, 3, stride=stride, groups=half, act=None),
                                     *ConvNormAct(half, half, 1))
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            return self.attn(concat_shuffle(kept, self.branch2(transformed)))
        return self.attn(concat_shuffle(self.branch1(x), self.branch2(x)))


class _ShuffleNet(Backbone):
    """Shared skeleton: stem, three stages of units, optional 1x1 conv5, classifier head."""

    def _build_stem(self, in_chans: int, stem_chs: int, small_input: bool) -> None:
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=1 if small_input else 2)
        self.stem_pool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self.input_size = (self.in_chans, 32, 32) if small_input else (self.in_chans, 224, 224)
        self.min_size = 1

    def _set_shuffle_stages(self, stage_channels: Sequence[int], small_input: bool) -> None:
        """Feature stages: the stem conv, then Stage2-4 (each opens with a stride-2 unit); conv5
        (an identity in v1) follows them."""
        r = 1 if small_input else 2
        stages = [Stage(("stem",), self.stem.conv.out_channels, r)]
        r *= 2 if small_input else 4  # the stem pool, then Stage2's stride
        for k, chs in enumerate(stage_channels[:3]):
            stages.append(Stage((("stem_pool",) if k == 0 else ()) + (f"stage{k + 2}",), chs, r * 2 ** k))
        self._set_stages(stages, final=("conv5",))


class ShuffleNetV1(_ShuffleNet):
    """ShuffleNet v1 with `groups` groups; `stage_channels` the output widths of Stage2-4."""

    family = "ShuffleNetV1"

    def __init__(self, groups: int, stage_channels: Sequence[int], stage_repeats: Sequence[int] = (4, 8, 4),
                 stem_chs: int = 24, small_input: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 attention=None):
        super().__init__()
        family = self.family
        spec = self._setup(num_classes, in_chans, attention, 3, PLAIN_POSITIONS)
        _check_positive(family, "groups", groups)
        if len(stage_channels) != 3 or len(stage_repeats) != 3:
            raise ValueError(f"{family}: need 3 stage widths and 3 repeat counts, got "
                             f"{stage_channels!r} and {stage_repeats!r}")
        for chs in stage_channels:
            if chs % 4 or (chs // 4) % groups:
                raise ValueError(f"{family}: stage width {chs} needs a bottleneck (width/4) divisible by "
                                 f"groups={groups}")
        self._build_stem(in_chans, stem_chs, small_input)
        chs = stem_chs
        for stage, (out_chs, repeats) in enumerate(zip(stage_channels, stage_repeats), start=1):
            units = []
            for i in range(repeats):
                units.append(ShuffleUnitV1(chs if i == 0 else out_chs, out_chs, groups, 2 if i == 0 else 1,
                                           group_first_conv=not (stage == 1 and i == 0),
                                           attn=spec.make(out_chs, stage)))
            setattr(self, f"stage{stage + 1}", nn.Sequential(*units))
            chs = out_chs
        self.conv5 = nn.Identity()
        self._set_shuffle_stages(stage_channels, small_input)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes)
        init_conv_weights(self)


class ShuffleNetV2(_ShuffleNet):
    """ShuffleNet v2; `stage_channels` = (stage2, stage3, stage4, conv5) output widths."""

    family = "ShuffleNetV2"

    def __init__(self, stage_channels: Sequence[int], stage_repeats: Sequence[int] = (4, 8, 4),
                 stem_chs: int = 24, small_input: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 attention=None):
        super().__init__()
        family = self.family
        spec = self._setup(num_classes, in_chans, attention, 3, PLAIN_POSITIONS)
        if len(stage_channels) != 4 or len(stage_repeats) != 3:
            raise ValueError(f"{family}: need 4 widths (stage2-4, conv5) and 3 repeat counts, got "
                             f"{stage_channels!r} and {stage_repeats!r}")
        if any(chs % 2 for chs in stage_channels[:3]):
            raise ValueError(f"{family}: stage widths must be even (channel split), got {stage_channels!r}")
        self._build_stem(in_chans, stem_chs, small_input)
        chs = stem_chs
        for stage, (out_chs, repeats) in enumerate(zip(stage_channels[:3], stage_repeats), start=1):
            units = [ShuffleUnitV2(chs if i == 0 else out_chs, out_chs, 2 if i == 0 else 1,
                                   spec.make(out_chs, stage)) for i in range(repeats)]
            setattr(self, f"stage{stage + 1}", nn.Sequential(*units))
            chs = out_chs
        self.conv5 = ConvNormAct(chs, stage_channels[3], 1)
        self._set_shuffle_stages(stage_channels, small_input)
        self.num_features = stage_channels[3]
        self.head = ClassifierHead(stage_channels[3], num_classes)
        init_conv_weights(self)

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """torchvision's stem, conv5 and classifier keys (conv1.0, conv5.1, fc) renamed to this
        file's; the unit branches have the same flat layer indices in both (branch2.3 ...).
        attnlab checkpoints written while the branches were nested conv-norm-act blocks
        (branch2.1.conv ...) get the flat indices."""
        if source == "attnlab":
            return rename_state_dict_keys(state_dict, ((
                r"\.branch([12])\.(\d\.(?:conv|bn))\.",
                lambda m: f".branch{m[1]}.{_NESTED_BRANCH_INDEX[m[1]][m[2]]}."),))
        if source != "torchvision":
            return state_dict
        return rename_state_dict_keys(state_dict, (
            (r"^conv1\.0\.", "stem.conv."), (r"^conv1\.1\.", "stem.bn."),
            (r"^conv5\.0\.", "conv5.conv."), (r"^conv5\.1\.", "conv5.bn."),
            (r"^fc\.", "head.fc.")))


# Old nested branch keys -> flat layer index: branch1 = dw conv, bn | conv, bn, relu; branch2 =
# conv, bn, relu | dw conv, bn | conv, bn, relu.
_NESTED_BRANCH_INDEX = {"1": {"0.conv": "0", "0.bn": "1", "1.conv": "2", "1.bn": "3"},
                        "2": {"0.conv": "0", "0.bn": "1", "1.conv": "3", "1.bn": "4", "2.conv": "5", "2.bn": "6"}}

# Stage widths at 1.0x, ShuffleNet v1 Table 1 (stage2, stage3, stage4) per group count.
V1_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
# ShuffleNet v2 Table 5: (stage2, stage3, stage4, conv5) per width multiplier.
V2_WIDTHS = {"0_5": (48, 96, 192, 1024), "1_0": (116, 232, 464, 1024), "1_5": (176, 352, 704, 1024),
             "2_0": (244, 488, 976, 2048)}


def _v1(groups: int, small_input: bool, kwargs: dict) -> ShuffleNetV1:
    kwargs = {"small_input": small_input, **kwargs}
    if small_input:  # the *_small builders default to CIFAR-10's classes
        kwargs.setdefault("num_classes", 10)
    return ShuffleNetV1(groups, V1_WIDTHS[groups], **kwargs)


def _v2(width: str, small_input: bool, kwargs: dict) -> ShuffleNetV2:
    kwargs = {"small_input": small_input, **kwargs}
    if small_input:  # the *_small builders default to CIFAR-10's classes
        kwargs.setdefault("num_classes", 10)
    return ShuffleNetV2(V2_WIDTHS[width], **kwargs)


@register_model
def shufflenet_v1_g1(**kwargs):
    """ShuffleNet v1 1.0x, 1 group (Table 1)."""
    return _v1(1, False, kwargs)


@register_model
def shufflenet_v1_g2(**kwargs):
    """ShuffleNet v1 1.0x, 2 groups (Table 1)."""
    return _v1(2, False, kwargs)


@register_model
def shufflenet_v1_g3(**kwargs):
    """ShuffleNet v1 1.0x, 3 groups (Table 1)."""
    return _v1(3, False, kwargs)


@register_model
def shufflenet_v1_g4(**kwargs):
    """ShuffleNet v1 1.0x, 4 groups (Table 1)."""
    return _v1(4, False, kwargs)


@register_model
def shufflenet_v1_g8(**kwargs):
    """ShuffleNet v1 1.0x, 8 groups (Table 1)."""
    return _v1(8, False, kwargs)


@register_model
def shufflenet_v1_g3_small(**kwargs):
    """ShuffleNet v1 1.0x g=3 with the small-input stem (28-32 px)."""
    return _v1(3, True, kwargs)


@register_model
def shufflenet_v2_x0_5(**kwargs):
    """ShuffleNet v2 0.5x (Table 5)."""
    return _v2("0_5", False, kwargs)


@register_model
def shufflenet_v2_x1_0(**kwargs):
    """ShuffleNet v2 1.0x (Table 5), 2.28M parameters."""
    return _v2("1_0", False, kwargs)


@register_model
def shufflenet_v2_x1_5(**kwargs):
    """ShuffleNet v2 1.5x (Table 5)."""
    return _v2("1_5", False, kwargs)


@register_model
def shufflenet_v2_x2_0(**kwargs):
    """ShuffleNet v2 2.0x (Table 5)."""
    return _v2("2_0", False, kwargs)


@register_model
def shufflenet_v2_x0_5_small(**kwargs):
    """ShuffleNet v2 0.5x with the small-input stem (28-32 px)."""
    return _v2("0_5", True, kwargs)


@register_model
def shufflenet_v2_x1_0_small(**kwargs):
    """ShuffleNet v2 1.0x with the small-input stem (28-32 px)."""
    return _v2("1_0", True, kwargs)
