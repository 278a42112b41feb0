"""Inception v1 (GoogLeNet) and Inception v3.

* GoogLeNet: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (arXiv:1409.4842).
  Inception module of Fig. 2(b) and the widths of Table 1: four parallel branches (1x1;
  1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1) concatenated along channels.
* Inception v3: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
  CVPR 2016 (arXiv:1512.00567). Modules of Fig. 5 (35x35, 5x5 factorised into two 3x3),
  Fig. 6 (17x17, n x n factorised into 1xn and nx1, n=7), Fig. 7 (8x8, expanded filter bank),
  grid reductions of Fig. 10, the auxiliary classifier of Section 4; in torchvision's module
  layout (Mixed_5b ... Mixed_7c, AuxLogits), so torchvision state dicts load unchanged.

Every block computes y = concat_b(branch_b(x)) over its branches; all convolutions are
conv-BN-ReLU (layers.ConvNormAct with BN eps=0.001, as torchvision).

Attention (placement spec of layers.py): position `post` only, on the concatenated output of
each Inception block. Stages: GoogLeNet 1 = inception3a-b, 2 = 4a-e, 3 = 5a-b; Inception v3
1 = Mixed_5b-d (35x35), 2 = Mixed_6a-e (17x17), 3 = Mixed_7a-c (8x8).

Auxiliary heads: off by default (`aux_logits=False`), so that `forward` returns one tensor as
every attnlab model does; with `aux_logits=True` (torchvision's default) the model in training
mode returns (logits, aux_logits) for v3 and (logits, aux_logits2, aux_logits1) for GoogLeNet,
as torchvision does; in eval mode only the logits. `remap_pretrained` drops the aux keys of a
torchvision file when the model has no aux head.

Small-input variants (`*_small`, for 28-32 px): v3 keeps its layers but gives the stem
convolutions stride 1 and padding 1 and drops the two stem max pools (the Inception blocks then
run at 32, 15 and 7 px); GoogLeNet's stem becomes one 3x3 conv (64) - 1x1 (64) - 3x3 (192) at
stride 1 with no pooling (blocks at 32, 16 and 8 px). Aux heads are not offered there (v3's needs
17x17 maps).

Deviations:
* GoogLeNet: BN after every conv and no LRN (the BN-Inception convention, as torchvision).
  `torchvision_compat=True` reproduces three torchvision departures from the paper, needed to
  load its weights: 3x3 instead of 5x5 kernels in the "5x5" branch, a 2x2 (not 3x3) max pool
  before inception5a, and adaptive 4x4 average pooling (not 5x5/3) in the aux heads.
* Inception v3: torchvision's `transform_input` (re-normalising inputs for Google's weights) is
  not offered; parity holds against torchvision's default for randomly initialised models.
  Weight init is attnlab's (He fan-out), not torchvision's truncated normal.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (PLAIN_POSITIONS, Backbone, ClassifierHead, ConvNormAct, Placement, Stage, init_conv_weights,
                     rename_state_dict_keys)
from .registry import register_model

# torchvision's BasicConv2d: conv (no bias) - BN (eps 0.001) - ReLU.
InceptionConv = functools.partial(ConvNormAct, norm=functools.partial(nn.BatchNorm2d, eps=0.001))


class InceptionOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits: torch.Tensor


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class ConcatBranches(nn.Module):
    """Base of every Inception block: concatenate the branch outputs, then the attention slot.
    A subclass builds its branches, sets `out_chs` and calls `add_attention_slot(spec, stage)`."""

    out_chs: int

    def add_attention_slot(self, spec: Placement, stage: int) -> None:
        self.attn = spec.make(self.out_chs, stage)

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(torch.cat(self.branches(x), 1))


# ---------------------------------------------------------------- GoogLeNet (Inception v1)

class InceptionV1Block(ConcatBranches):
    """Fig. 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | max pool 3x3/1 -> 1x1 (pool projection)."""

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, spec: Placement, stage: int, five_by_five_kernel: int = 5):
        super().__init__()
        self.branch1 = InceptionConv(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(InceptionConv(in_chs, ch3x3red, 1), InceptionConv(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(InceptionConv(in_chs, ch5x5red, 1),
                                     InceptionConv(ch5x5red, ch5x5, five_by_five_kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     InceptionConv(in_chs, pool_proj, 1))
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.add_attention_slot(spec, stage)

    def branches(self, x):
        return [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]


class GoogLeNetAux(nn.Module):
    """Auxiliary classifier (Section 5): avg pool 5x5/3 - 1x1 conv 128 - fc 1024 - ReLU -
    dropout 0.7 - fc."""

    def __init__(self, in_chs: int, num_classes: int, adaptive_pool: bool):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4) if adaptive_pool else nn.AvgPool2d(5, stride=3)
        self.conv = InceptionConv(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


# Table 1 of the GoogLeNet paper: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
GOOGLENET_BLOCKS = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128), "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(Backbone):
    """GoogLeNet (Inception v1) with BN; see the module docstring for the switches."""

    family = "GoogLeNet"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 torchvision_compat: bool = False, small_input: bool = False, drop_rate: float = 0.2,
                 attention=None):
        super().__init__()
        family = self.family
        spec = self._setup(num_classes, in_chans, attention, 3, PLAIN_POSITIONS)
        if aux_logits and small_input:
            raise ValueError(f"{family}: aux_logits=True is only offered at ImageNet size (small_input=False)")
        self.aux_logits = aux_logits
        if small_input:
            self.conv1 = InceptionConv(in_chans, 64, 3)
            self.maxpool1 = self.maxpool2 = nn.Identity()
            # the 3x3/2 pool before inception5a needs a 3x3 map (a 2x2 one in torchvision's variant)
            self.input_size, self.min_size = (in_chans, 32, 32), 2 if torchvision_compat else 4
        else:
            self.conv1 = InceptionConv(in_chans, 64, 7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            # min_size holds for eval and for training without aux heads; the paper's aux pooling
            # (5x5/3) needs the 14x14 map of a 224 px input
            self.input_size, self.min_size = (in_chans, 224, 224), 15 if torchvision_compat else 31
        self.conv2 = InceptionConv(64, 64, 1)
        self.conv3 = InceptionConv(64, 192, 3)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2 if torchvision_compat else 3, stride=2, ceil_mode=True)
        chs = 192
        for name, widths in GOOGLENET_BLOCKS.items():
            stage = {"3": 1, "4": 2, "5": 3}[name[-2]]
            block = InceptionV1Block(chs, *widths, spec, stage, five_by_five_kernel=3 if torchvision_compat else 5)
            setattr(self, name, block)
            chs = block.out_chs
        if aux_logits:
            self.aux1 = GoogLeNetAux(self.inception4a.out_chs, num_classes, adaptive_pool=torchvision_compat)
            self.aux2 = GoogLeNetAux(self.inception4d.out_chs, num_classes, adaptive_pool=torchvision_compat)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        # Stages: conv1, conv2-3, inception 3, 4, 5 (each after its max pool); reductions 2-32
        # (1, 1, 1, 2, 4 with the small-input stem).
        widths = {name: getattr(self, name).out_chs for name in GOOGLENET_BLOCKS}
        r = (1, 1, 1, 2, 4) if small_input else (2, 4, 8, 16, 32)
        self._set_stages([Stage(("conv1",), 64, r[0]), Stage(("maxpool1", "conv2", "conv3"), 192, r[1]),
                          Stage(("maxpool2", "inception3a", "inception3b"), widths["inception3b"], r[2]),
                          Stage(("maxpool3",) + tuple(f"inception4{c}" for c in "abcde"), widths["inception4e"], r[3]),
                          Stage(("maxpool4", "inception5a", "inception5b"), chs, r[4])])
        init_conv_weights(self)

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        if not (self.aux_logits and self.training):
            return self.forward_head(self.forward_features(x))
        taps = {"inception4a": None, "inception4d": None}
        features, _ = self._forward_stages(x, taps=taps)
        return GoogLeNetOutputs(self.forward_head(features), self.aux2(taps["inception4d"]),
                                self.aux1(taps["inception4a"]))

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.aux_logits:
            self.aux1.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()
            self.aux2.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """torchvision: fc -> head.fc; its aux1/aux2 keys are dropped when aux_logits=False."""
        if source != "torchvision":
            return state_dict
        if not self.aux_logits:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("aux1.", "aux2."))}
        return rename_state_dict_keys(state_dict, ((r"^fc\.", "head.fc."),))


# ---------------------------------------------------------------- Inception v3

class InceptionA(ConcatBranches):
    """35x35 module (Fig. 5): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, in_chs: int, pool_features: int, spec: Placement, stage: int):
        super().__init__()
        self.branch1x1 = InceptionConv(in_chs, 64, 1)
        self.branch5x5_1 = InceptionConv(in_chs, 48, 1)
        self.branch5x5_2 = InceptionConv(48, 64, 5)
        self.branch3x3dbl_1 = InceptionConv(in_chs, 64, 1)
        self.branch3x3dbl_2 = InceptionConv(64, 96, 3)
        self.branch3x3dbl_3 = InceptionConv(96, 96, 3)
        self.branch_pool = InceptionConv(in_chs, pool_features, 1)
        self.out_chs = 64 + 64 + 96 + pool_features
        self.add_attention_slot(spec, stage)

    def branches(self, x):
        return [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))]


class InceptionB(ConcatBranches):
    """35 -> 17 grid reduction (Fig. 10): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, in_chs: int, spec: Placement, stage: int):
        super().__init__()
        self.branch3x3 = InceptionConv(in_chs, 384, 3, stride=2, padding=0)
        self.branch3x3dbl_1 = InceptionConv(in_chs, 64, 1)
        self.branch3x3dbl_2 = InceptionConv(64, 96, 3)
        self.branch3x3dbl_3 = InceptionConv(96, 96, 3, stride=2, padding=0)
        self.out_chs = 384 + 96 + in_chs
        self.add_attention_slot(spec, stage)

    def branches(self, x):
        return [self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, stride=2)]


class InceptionC(ConcatBranches):
    """17x17 module (Fig. 6, n=7): 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 |
    avg pool -> 1x1."""

    def __init__(self, in_chs: int, channels_7x7: int, spec: Placement, stage: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = InceptionConv(in_chs, 192, 1)
        self.branch7x7_1 = InceptionConv(in_chs, c7, 1)
        self.branch7x7_2 = InceptionConv(c7, c7, (1, 7))
        self.branch7x7_3 = InceptionConv(c7, 192, (7, 1))
        self.branch7x7dbl_1 = InceptionConv(in_chs, c7, 1)
        self.branch7x7dbl_2 = InceptionConv(c7, c7, (7, 1))
        self.branch7x7dbl_3 = InceptionConv(c7, c7, (1, 7))
        self.branch7x7dbl_4 = InceptionConv(c7, c7, (7, 1))
        self.branch7x7dbl_5 = InceptionConv(c7, 192, (1, 7))
        self.branch_pool = InceptionConv(in_chs, 192, 1)
        self.out_chs = 4 * 192
        self.add_attention_slot(spec, stage)

    def branches(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = conv(d7)
        return [self.branch1x1(x), b7, d7, self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))]


class InceptionD(ConcatBranches):
    """17 -> 8 grid reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, in_chs: int, spec: Placement, stage: int):
        super().__init__()
        self.branch3x3_1 = InceptionConv(in_chs, 192, 1)
        self.branch3x3_2 = InceptionConv(192, 320, 3, stride=2, padding=0)
        self.branch7x7x3_1 = InceptionConv(in_chs, 192, 1)
        self.branch7x7x3_2 = InceptionConv(192, 192, (1, 7))
        self.branch7x7x3_3 = InceptionConv(192, 192, (7, 1))
        self.branch7x7x3_4 = InceptionConv(192, 192, 3, stride=2, padding=0)
        self.out_chs = 320 + 192 + in_chs
        self.add_attention_slot(spec, stage)

    def branches(self, x):
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return [self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)]


class InceptionE(ConcatBranches):
    """8x8 module (Fig. 7): 1x1 | 1x1 -> (1x3 || 3x1) | 1x1 -> 3x3 -> (1x3 || 3x1) | avg pool -> 1x1."""

    def __init__(self, in_chs: int, spec: Placement, stage: int):
        super().__init__()
        self.branch1x1 = InceptionConv(in_chs, 320, 1)
        self.branch3x3_1 = InceptionConv(in_chs, 384, 1)
        self.branch3x3_2a = InceptionConv(384, 384, (1, 3))
        self.branch3x3_2b = InceptionConv(384, 384, (3, 1))
        self.branch3x3dbl_1 = InceptionConv(in_chs, 448, 1)
        self.branch3x3dbl_2 = InceptionConv(448, 384, 3)
        self.branch3x3dbl_3a = InceptionConv(384, 384, (1, 3))
        self.branch3x3dbl_3b = InceptionConv(384, 384, (3, 1))
        self.branch_pool = InceptionConv(in_chs, 192, 1)
        self.out_chs = 320 + 768 + 768 + 192
        self.add_attention_slot(spec, stage)

    def branches(self, x):
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return [self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3),
                self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))]


class InceptionV3Aux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: avg pool 5x5/3 - 1x1 conv 128 - 5x5 conv 768 -
    global pool - fc."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.conv0 = InceptionConv(in_chs, 128, 1)
        self.conv1 = InceptionConv(128, 768, 5, padding=0)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(Backbone):
    """Inception v3 in torchvision's layout; see the module docstring for the switches."""

    family = "InceptionV3"
    data_stats = "inception"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 small_input: bool = False, drop_rate: float = 0.5, attention=None):
        super().__init__()
        family = self.family
        spec = self._setup(num_classes, in_chans, attention, 3, PLAIN_POSITIONS)
        if aux_logits and small_input:
            raise ValueError(f"{family}: aux_logits=True needs 17x17 maps (299 px inputs); "
                             "it is not offered with small_input=True")
        self.aux_logits = aux_logits
        # The stem: valid 3x3 convs and two 3x3/2 max pools at 299 px; stride 1, padding 1 and no
        # pools for small inputs.
        valid = 1 if small_input else 0
        self.Conv2d_1a_3x3 = InceptionConv(in_chans, 32, 3, stride=1 if small_input else 2, padding=valid)
        self.Conv2d_2a_3x3 = InceptionConv(32, 32, 3, padding=valid)
        self.Conv2d_2b_3x3 = InceptionConv(32, 64, 3, padding=1)
        self.maxpool1 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = InceptionConv(64, 80, 1)
        self.Conv2d_4a_3x3 = InceptionConv(80, 192, 3, padding=valid)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2)
        blocks = (("Mixed_5b", 1, InceptionA, (32,)), ("Mixed_5c", 1, InceptionA, (64,)),
                  ("Mixed_5d", 1, InceptionA, (64,)), ("Mixed_6a", 2, InceptionB, ()),
                  ("Mixed_6b", 2, InceptionC, (128,)), ("Mixed_6c", 2, InceptionC, (160,)),
                  ("Mixed_6d", 2, InceptionC, (160,)), ("Mixed_6e", 2, InceptionC, (192,)),
                  ("Mixed_7a", 3, InceptionD, ()), ("Mixed_7b", 3, InceptionE, ()),
                  ("Mixed_7c", 3, InceptionE, ()))
        chs = 192
        for name, stage, block_cls, args in blocks:
            block = block_cls(chs, *args, spec, stage)
            setattr(self, name, block)
            chs = block.out_chs
            if name == "Mixed_6e" and aux_logits:
                self.AuxLogits = InceptionV3Aux(chs, num_classes)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        # Stages as timm's: Conv2d_2b, Conv2d_4a, Mixed_5d, Mixed_6e, Mixed_7c; reductions 2-32
        # (1, 1, 1, 2, 4 with the small-input stem).
        r = (1, 1, 1, 2, 4) if small_input else (2, 4, 8, 16, 32)
        names = [name for name, *_ in blocks]
        self._set_stages([Stage(("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"), 64, r[0]),
                          Stage(("maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"), 192, r[1]),
                          Stage(("maxpool2",) + tuple(names[:3]), self.Mixed_5d.out_chs, r[2]),
                          Stage(tuple(names[3:8]), self.Mixed_6e.out_chs, r[3]),
                          Stage(tuple(names[8:]), chs, r[4])])
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 299, 299)
        # 75 px: Mixed_7a's valid 3x3/2 conv needs a 3x3 map; the aux head needs the 17x17 grid
        # of a 299 px input, but it only runs in training mode.
        self.min_size = 7 if small_input else 75
        init_conv_weights(self)

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        if not (self.aux_logits and self.training):
            return self.forward_head(self.forward_features(x))
        taps = {"Mixed_6e": None}
        features, _ = self._forward_stages(x, taps=taps)
        return InceptionOutputs(self.forward_head(features), self.AuxLogits(taps["Mixed_6e"]))

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.aux_logits:
            self.AuxLogits.fc = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """torchvision: fc -> head.fc; its AuxLogits keys are dropped when aux_logits=False."""
        if source != "torchvision":
            return state_dict
        if not self.aux_logits:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")}
        return rename_state_dict_keys(state_dict, ((r"^fc\.", "head.fc."),))


def _small(kwargs: dict) -> dict:
    kwargs.setdefault("num_classes", 10)
    return dict(kwargs, small_input=True)


@register_model
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet (Inception v1) with BN; `torchvision_compat=True` to load torchvision weights."""
    return GoogLeNet(**kwargs)


@register_model
def googlenet_small(**kwargs) -> GoogLeNet:
    """GoogLeNet with the small-input stem (28-32 px)."""
    return GoogLeNet(**_small(kwargs))


@register_model
def inception_v3(**kwargs) -> InceptionV3:
    """Inception v3 (299 px): 23.83M parameters, 27.16M with `aux_logits=True`."""
    return InceptionV3(**kwargs)


@register_model
def inception_v3_small(**kwargs) -> InceptionV3:
    """Inception v3 with the small-input stem (28-32 px)."""
    return InceptionV3(**_small(kwargs))
