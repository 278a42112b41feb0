"""Xception: F. Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions",
CVPR 2017 (arXiv:1610.02357).

The architecture of the paper's Fig. 5: 36 convolutional layers in 14 modules, all but the first
and last with linear residual connections. Every block computes

    y = shortcut(x) + branch(x),   branch = [ReLU - SeparableConv3x3 - BN] x 2 or 3 (- MaxPool 3x3/2)

with shortcut = 1x1 conv/2 - BN where the block changes width or resolution (entry flow: blocks
1-3, 64 -> 128 -> 256 -> 728; exit flow: block 12, 728 -> 1024) and the identity in the middle
flow (blocks 4-11, 728 channels, three units each). Then SeparableConv 1536 - BN - ReLU -
SeparableConv 2048 - BN - ReLU, global average pooling and the classifier. A separable conv is
a depthwise 3x3 followed by a pointwise 1x1 with no non-linearity in between (Section 4.7).
22,855,952 parameters with the 1000-class head (the paper's Table 3; timm's legacy_xception).

Attention (placement spec of layers.py): the blocks are residual, so the SE paper's four
positions are offered: `standard` (end of the residual branch, before the addition; in the
downsampling blocks after the max pool, at the output resolution), `pre` (on the branch input;
the shortcut keeps the raw input), `post` (after the addition; Xception has no activation
there) and `identity` (on the shortcut, after its 1x1 conv where there is one). Stages are the
paper's three flows: 1 = entry (blocks 1-3), 2 = middle (4-11), 3 = exit (12).

Small-input variant (`xception_small`, 28-32 px): the two stem convolutions get stride 1 and
padding 1 (the blocks then run at 16, 8, 4, 4 and 2 px).

Deviations: none in the architecture. As in timm, the first block does not start with a ReLU
(its input has just been through conv2's ReLU), and that ReLU before the branch is never
in-place, so the shortcut sees the unrectified input. Weights of timm's `legacy_xception` load
through `remap_pretrained(..., "timm")`; with `attention=` added, `norms_before_attention` lets
the loader start the `standard` and `identity` slots as exact identities.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from .layers import (RESIDUAL_POSITIONS, Backbone, ClassifierHead, ConvNormAct, Placement, SeparableConv2d, Stage,
                     init_conv_weights, rename_state_dict_keys)
from .registry import register_model


def separable_unit(in_chs: int, out_chs: int, leading_relu: bool, inplace: bool = False) -> nn.Sequential:
    """ReLU - SeparableConv 3x3 - BN, the unit every Xception block repeats. `inplace`: the ReLU
    may overwrite its input (not for a block's first unit, whose input the shortcut reads too)."""
    return nn.Sequential(OrderedDict(act=nn.ReLU(inplace) if leading_relu else nn.Identity(),
                                     conv=SeparableConv2d(in_chs, out_chs, 3), bn=nn.BatchNorm2d(out_chs)))


class XceptionBlock(nn.Module):
    """`reps` separable units (+ max pool 3x3/2 when stride=2) with a residual shortcut.

    grow_first: the first unit changes the width (entry flow); otherwise the last one (exit flow).
    """

    def __init__(self, in_chs: int, out_chs: int, reps: int, stride: int, start_with_relu: bool,
                 grow_first: bool, spec: Placement, stage: int):
        super().__init__()
        widths = [in_chs] + [out_chs] * reps if grow_first else [in_chs] * reps + [out_chs]
        units = [separable_unit(widths[i], widths[i + 1], leading_relu=start_with_relu or i > 0, inplace=i > 0)
                 for i in range(reps)]
        if stride == 2:
            units.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.branch = nn.Sequential(*units)
        if in_chs != out_chs or stride != 1:
            self.shortcut = ConvNormAct(in_chs, out_chs, 1, stride=stride, act=None)
        else:
            self.shortcut = nn.Identity()
        self.position = spec.position
        self.attn = spec.make(in_chs if spec.position == "pre" else out_chs, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.position == "pre":
            return self.branch(self.attn(x)) + self.shortcut(x)
        if self.position == "standard":
            return self.attn(self.branch(x)) + self.shortcut(x)
        if self.position == "identity":
            return self.branch(x) + self.attn(self.shortcut(x))
        return self.attn(self.branch(x) + self.shortcut(x))


class Xception(Backbone):
    """Xception (Fig. 5 of the paper); `small_input=True` for 28-32 px inputs."""

    family = "Xception"
    data_stats, crop_pct = "inception", 0.8975  # the reference implementation's preprocessing

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 drop_rate: float = 0.0, attention=None):
        super().__init__()
        spec = self._setup(num_classes, in_chans, attention, 3, RESIDUAL_POSITIONS)
        pad = 1 if small_input else 0
        self.conv1 = ConvNormAct(in_chans, 32, 3, stride=1 if small_input else 2, padding=pad)
        self.conv2 = ConvNormAct(32, 64, 3, padding=pad)
        # (in, out, units, stride, start_with_relu, grow_first, stage)
        blocks = [(64, 128, 2, 2, False, True, 1), (128, 256, 2, 2, True, True, 1),
                  (256, 728, 2, 2, True, True, 1)]
        blocks += [(728, 728, 3, 1, True, True, 2)] * 8
        blocks += [(728, 1024, 2, 2, True, False, 3)]
        for i, (cin, cout, reps, stride, relu_first, grow_first, stage) in enumerate(blocks, start=1):
            setattr(self, f"block{i}", XceptionBlock(cin, cout, reps, stride, relu_first, grow_first, spec, stage))
        self.num_blocks = len(blocks)
        self.conv3 = nn.Sequential(OrderedDict(conv=SeparableConv2d(1024, 1536, 3), bn=nn.BatchNorm2d(1536),
                                               act=nn.ReLU(inplace=True)))
        self.conv4 = nn.Sequential(OrderedDict(conv=SeparableConv2d(1536, 2048, 3), bn=nn.BatchNorm2d(2048),
                                               act=nn.ReLU(inplace=True)))
        self.num_features = 2048
        # Stages: the stem, blocks 1 and 2, block 3 with the middle flow, the exit flow.
        r = 1 if small_input else 2
        self._set_stages([Stage(("conv1", "conv2"), 64, r), Stage(("block1",), 128, 2 * r),
                          Stage(("block2",), 256, 4 * r),
                          Stage(tuple(f"block{i}" for i in range(3, self.num_blocks)), 728, 8 * r),
                          Stage((f"block{self.num_blocks}", "conv3", "conv4"), 2048, 16 * r)])
        self.head = ClassifierHead(2048, num_classes, drop_rate=drop_rate)
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 299, 299)
        self.min_size = 1 if small_input else 7  # two valid 3x3 convs, the first with stride 2
        init_conv_weights(self)

    def norms_before_attention(self) -> dict[str, nn.BatchNorm2d]:
        """{attention module name: the BatchNorm that alone feeds it}, for the identity init of
        `pretrained.py`: the branch's last BN at `standard` (through the max pool in downsampling
        blocks: max pooling commutes with a positive scale) and the shortcut's BN at `identity`."""
        norms = {}
        for i in range(1, self.num_blocks + 1):
            block = getattr(self, f"block{i}")
            if isinstance(block.attn, nn.Identity):
                continue
            if block.position == "standard":
                last_unit = [m for m in block.branch if isinstance(m, nn.Sequential)][-1]
                norms[f"block{i}.attn"] = last_unit.bn
            elif block.position == "identity" and isinstance(block.shortcut, ConvNormAct):
                norms[f"block{i}.attn"] = block.shortcut.bn
        return norms

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """timm's legacy_xception names: conv1/bn1, block<i>.skip/skipbn, a flat block<i>.rep list
        ([ReLU,] SeparableConv2d(conv1=depthwise, pointwise), BN, ... MaxPool), conv3/bn3, fc."""
        if source != "timm":
            return state_dict

        def rep_index(match: re.Match) -> str:
            block, index, rest = int(match[1]), int(match[2]), match[3]
            offset = 0 if block == 1 else 1  # block1's rep has no leading ReLU
            unit, slot = divmod(index - offset, 3)
            rest = {"conv1.": "depthwise.", "pointwise.": "pointwise."}.get(rest, rest)
            return f"block{block}.branch.{unit}." + ("conv." + rest if slot == 0 else "bn." + rest)

        return rename_state_dict_keys(state_dict, (
            (r"^conv([12])\.weight$", r"conv\1.conv.weight"), (r"^bn([12])\.", r"conv\1.bn."),
            (r"^block(\d+)\.skip\.", r"block\1.shortcut.conv."), (r"^block(\d+)\.skipbn\.", r"block\1.shortcut.bn."),
            (r"^block(\d+)\.rep\.(\d+)\.(conv1\.|pointwise\.|)", rep_index),
            (r"^conv([34])\.conv1\.", r"conv\1.conv.depthwise."),
            (r"^conv([34])\.pointwise\.", r"conv\1.conv.pointwise."),
            (r"^bn([34])\.", r"conv\1.bn."), (r"^fc\.", "head.fc.")))


@register_model
def xception(**kwargs) -> Xception:
    """Xception (299 px), 22.86M parameters."""
    return Xception(**kwargs)


@register_model
def xception_small(**kwargs) -> Xception:
    """Xception with stride-1 stem convolutions (28-32 px)."""
    kwargs.setdefault("num_classes", 10)
    return Xception(small_input=True, **kwargs)
