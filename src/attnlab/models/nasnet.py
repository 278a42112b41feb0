"""NASNet-A: Zoph, Vasudevan, Shlens, Le, "Learning Transferable Architectures for Scalable Image
Recognition", CVPR 2018 (arXiv:1707.07012).

A cell takes the two previous cell outputs h_i and h_{i-1} and builds five blocks; block b picks
two hidden states from {h_i, h_{i-1}, outputs of earlier blocks}, applies one operation to each
and adds them (Section 3, Fig. 3):

    s_b = op_left(s[in_left]) + op_right(s[in_right]),   output = concat(unused states)

The NASNet-A normal and reduction cells (Fig. 4) are written below as data (`NORMAL_CELL`,
`REDUCTION_CELL`); one `NASNetCell` class builds either. State 0 is h_i after ReLU - 1x1 conv -
BN to the cell's width C, state 1 is h_{i-1} matched to h_i's size and width. In a reduction cell
the operations on states 0 and 1 have stride 2. Operations: `sepKxK` = (ReLU - separable conv -
BN) twice, `avg3x3` / `max3x3` pooling, `identity`. The network: stem, then three stacks of N
normal cells separated by reduction cells, the width doubling at each reduction; "N @ P" names a
model by N and the penultimate width P = 6 * final C.

* nasnet_a_mobile: NASNet-A (4 @ 1056), ImageNet 224 px: stem 3x3/2 conv (32) and two reduction
  cells (C = 11, 22) before the stacks (C = 44, 88, 176); 5.3M parameters (the paper's table of
  mobile-size ImageNet models).
* nasnet_a_cifar: NASNet-A (6 @ 768), CIFAR 32 px: stem 3x3 conv (96), no stem cells, stacks of
  6 cells (C = 32, 64, 128); 3.3M parameters in the paper's CIFAR-10 table (Table 1).

The wiring that the paper leaves to its code follows the official TF-slim implementation
(nasnet.py / nasnet_utils.py): h_{i-1} of the first cell is the raw input; a larger h_{i-1} is
reduced by "factorized reduction" (two 1x1 convs on the even and the odd pixel grid,
concatenated, BN); a pooling or identity op whose input has another width gets a 1x1 conv - BN;
average pooling excludes padding.

Attention (placement spec of layers.py): position `post` only, on the output of each cell of
the three stacks (reduction cells between stacks included, the two stem cells of the mobile
model excluded). Stages are the stacks, numbered 1-3; a reduction cell belongs to the stack it
opens.

Deviations (none changes the parameter count):
* Stride-2 convolutions and pools pad symmetrically (k // 2); TF's 'SAME' pads one more pixel at
  the bottom/right for even inputs.
* Training-time extras are not built: ScheduledDropPath and the auxiliary head. The final dropout
  is kept (keep probability 0.5 in the mobile model, none in the CIFAR model).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (PLAIN_POSITIONS, Backbone, ClassifierHead, ConvNormAct, SeparableConv2d, Stage,
                     init_conv_weights)
from .registry import register_model


class CellGenotype(NamedTuple):
    """Five blocks of ((op, input state), (op, input state)) and the states concatenated."""

    blocks: tuple
    concat: tuple


# Fig. 4 (left) / NasNetANormalCell: states 0 = h_i, 1 = h_{i-1}, 2.. = block outputs.
NORMAL_CELL = CellGenotype(
    blocks=((("sep5x5", 0), ("sep3x3", 1)),
            (("sep5x5", 1), ("sep3x3", 1)),
            (("avg3x3", 0), ("identity", 1)),
            (("avg3x3", 1), ("avg3x3", 1)),
            (("sep3x3", 0), ("identity", 0))),
    concat=(1, 2, 3, 4, 5, 6))
# Fig. 4 (right) / NasNetAReductionCell.
REDUCTION_CELL = CellGenotype(
    blocks=((("sep5x5", 0), ("sep7x7", 1)),
            (("max3x3", 0), ("sep7x7", 1)),
            (("avg3x3", 0), ("sep5x5", 1)),
            (("identity", 3), ("avg3x3", 2)),
            (("sep3x3", 2), ("max3x3", 0))),
    concat=(3, 4, 5, 6))


def relu_conv_bn(in_chs: int, out_chs: int, stride: int = 1) -> nn.Sequential:
    """ReLU - 1x1 conv - BN: NASNet's pre-activation projection."""
    return nn.Sequential(OrderedDict(act=nn.ReLU(), conv=nn.Conv2d(in_chs, out_chs, 1, stride, bias=False),
                                     bn=nn.BatchNorm2d(out_chs)))


class FactorizedReduce(nn.Module):
    """TF-slim's factorized_reduction: stride 1 -> 1x1 conv - BN; stride 2 -> 1x1 convs on the
    even grid and on the grid shifted by one pixel (half the output channels each), concat, BN."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.path1 = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        else:
            self.path1 = nn.Conv2d(in_chs, out_chs // 2, 1, bias=False)
            self.path2 = nn.Conv2d(in_chs, out_chs - out_chs // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.bn(self.path1(x))
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat((self.path1(x[:, :, ::2, ::2]), self.path2(shifted[:, :, ::2, ::2])), 1))


class StackedSeparable(nn.Sequential):
    """sepKxK: (ReLU - separable KxK conv - BN) twice; the stride on the first conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int):
        layers = OrderedDict()
        for i, (cin, s) in enumerate(((in_chs, stride), (out_chs, 1)), start=1):
            layers[f"act{i}"] = nn.ReLU()
            layers[f"sep{i}"] = SeparableConv2d(cin, out_chs, kernel_size, stride=s)
            layers[f"bn{i}"] = nn.BatchNorm2d(out_chs)
        super().__init__(layers)


class Pool(nn.Sequential):
    """avg3x3 / max3x3 (padding 1; the average ignores the padding), then 1x1 conv - BN when the
    input width differs from the cell's."""

    def __init__(self, kind: str, in_chs: int, out_chs: int, stride: int):
        pool = (nn.AvgPool2d(3, stride, 1, count_include_pad=False) if kind == "avg"
                else nn.MaxPool2d(3, stride, 1))
        layers = OrderedDict(pool=pool)
        if in_chs != out_chs:
            layers["proj"] = ConvNormAct(in_chs, out_chs, 1, act=None)
        super().__init__(layers)


def make_operation(name: str, in_chs: int, out_chs: int, stride: int) -> nn.Module:
    """One of the NASNet-A operations by its genotype name."""
    if name.startswith("sep"):
        return StackedSeparable(in_chs, out_chs, int(name[3]), stride)
    if name in ("avg3x3", "max3x3"):
        return Pool(name[:3], in_chs, out_chs, stride)
    if name == "identity":
        return relu_conv_bn(in_chs, out_chs, stride) if stride > 1 or in_chs != out_chs else nn.Identity()
    raise ValueError(f"NASNet: unknown operation {name!r}; known: sep3x3, sep5x5, sep7x7, avg3x3, max3x3, identity")


class NASNetCell(nn.Module):
    """A NASNet cell of width `chs` built from a genotype.

    Args:
        in_chs: width of h_i (the previous cell's output).
        prev_chs: width of h_{i-1}, or None when there is no earlier cell (h_{i-1} := h_i raw).
        prev_is_larger: h_{i-1} has twice h_i's resolution (a reduction happened in between).
        reduction: stride 2 on the operations that read h_i and h_{i-1}.
    """

    def __init__(self, genotype: CellGenotype, in_chs: int, prev_chs: Optional[int], prev_is_larger: bool,
                 chs: int, reduction: bool, attn: nn.Module):
        super().__init__()
        self.genotype = genotype
        self.reduction = reduction
        self.preprocess = relu_conv_bn(in_chs, chs)
        if prev_chs is None:
            self.prev_adjust, prev_out = nn.Identity(), in_chs
        elif prev_is_larger:
            self.prev_adjust, prev_out = nn.Sequential(nn.ReLU(), FactorizedReduce(prev_chs, chs, 2)), chs
        elif prev_chs != chs:
            self.prev_adjust, prev_out = relu_conv_bn(prev_chs, chs), chs
        else:
            self.prev_adjust, prev_out = nn.Identity(), chs
        state_chs = [chs, prev_out] + [chs] * len(genotype.blocks)
        self.ops = nn.ModuleList()
        for block in genotype.blocks:
            for op_name, state in block:
                stride = 2 if reduction and state < 2 else 1
                self.ops.append(make_operation(op_name, state_chs[state], chs, stride))
        # States concatenated at another width (only a raw h_{i-1}) get a 1x1 conv - BN.
        self.concat_adjust = nn.ModuleDict({str(i): FactorizedReduce(state_chs[i], chs, 1)
                                            for i in genotype.concat if state_chs[i] != chs})
        self.out_chs = chs * len(genotype.concat)
        self.attn = attn

    def forward(self, x: torch.Tensor, prev: Optional[torch.Tensor]) -> torch.Tensor:
        states = [self.preprocess(x), self.prev_adjust(x if prev is None else prev)]
        ops = iter(self.ops)
        for (_, left), (_, right) in self.genotype.blocks:
            states.append(next(ops)(states[left]) + next(ops)(states[right]))
        outs = [self.concat_adjust[str(i)](states[i]) if str(i) in self.concat_adjust else states[i]
                for i in self.genotype.concat]
        return self.attn(torch.cat(outs, 1))


class NASNetA(Backbone):
    """NASNet-A (N @ 6*filters*4) with the ImageNet stem (two reduction stem cells) or the CIFAR
    stem (one 3x3 conv).

    Args:
        cells_per_stack: N, normal cells per stack.
        filters: C of the first stack (44 mobile, 32 CIFAR); doubled at each reduction.
        stem_filters: stem conv width (32 mobile; 96 = 32 * stem multiplier 3 in CIFAR).
        small_input: CIFAR stem instead of the ImageNet one.
    """

    family = "NASNet"

    def __init__(self, cells_per_stack: int = 4, filters: int = 44, stem_filters: int = 32,
                 small_input: bool = False, drop_rate: float = 0.5, num_classes: int = 1000, in_chans: int = 3,
                 attention=None):
        super().__init__()
        family = self.family
        spec = self._setup(num_classes, in_chans, attention, 3, PLAIN_POSITIONS)
        for name, value in (("cells_per_stack", cells_per_stack), ("filters", filters),
                            ("stem_filters", stem_filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{family}: {name} must be a positive int, got {value!r}")
        if filters % 4:
            raise ValueError(f"{family}: filters must be divisible by 4 (stem cells use filters/4), got {filters}")
        if small_input:
            self.stem = ConvNormAct(in_chans, stem_filters, 3, act=None)
            self.input_size, self.min_size = (in_chans, 32, 32), 1
        else:
            self.stem = ConvNormAct(in_chans, stem_filters, 3, stride=2, padding=0, act=None)
            self.input_size, self.min_size = (in_chans, 224, 224), 3

        # (width, resolution level) of the stem and of every cell output, as the cells are built.
        outputs = [(None, 0), (stem_filters, 0)]
        self.cells = nn.ModuleList()

        def add(genotype: CellGenotype, chs: int, reduction: bool, attn: nn.Module) -> None:
            (prev_chs, prev_level), (in_chs, level) = outputs[-2], outputs[-1]
            cell = NASNetCell(genotype, in_chs, prev_chs, prev_level != level, chs, reduction, attn)
            self.cells.append(cell)
            outputs.append((cell.out_chs, level + int(reduction)))

        # Feature stages: the stem, (mobile: the first stem cell,) then each stack, the second
        # stem cell or the reduction cell that opens it included.
        stem_reduction = 1 if small_input else 2
        stages = [Stage(("stem",), stem_filters, stem_reduction)]

        def close_stage() -> None:
            first = sum(len(stage.modules) for stage in stages[1:])
            names = tuple(f"cells.{i}" for i in range(first, len(self.cells)))
            stages.append(Stage(names, outputs[-1][0], stem_reduction * 2 ** outputs[-1][1]))

        if not small_input:
            for scale in (4, 2):  # stem cells: C/4 and C/2, no attention slot
                add(REDUCTION_CELL, filters // scale, True, nn.Identity())
                if scale == 4:
                    close_stage()
        for stack in (1, 2, 3):
            chs = filters * 2 ** (stack - 1)
            if stack > 1:
                add(REDUCTION_CELL, chs, True, spec.make(chs * len(REDUCTION_CELL.concat), stack))
            for _ in range(cells_per_stack):
                add(NORMAL_CELL, chs, False, spec.make(chs * len(NORMAL_CELL.concat), stack))
            close_stage()
        self.final_act = nn.ReLU()
        self._set_stages(stages, final=("final_act",))
        self.num_features = outputs[-1][0]
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)
        init_conv_weights(self)

    # The running state of the stages is (h_{i-1}, h_i): a cell reads both (models.features).
    def _stage_state(self, x):
        return None, x

    def _call_unit(self, module: nn.Module, state):
        prev, x = state
        if isinstance(module, NASNetCell):
            return x, module(x, prev)
        return prev, module(x)

    def _state_output(self, state) -> torch.Tensor:
        return state[1]


@register_model
def nasnet_a_mobile(**kwargs) -> NASNetA:
    """NASNet-A (4 @ 1056), ImageNet 224 px, 5.3M parameters."""
    return NASNetA(cells_per_stack=4, filters=44, stem_filters=32, **kwargs)


@register_model
def nasnet_a_cifar(**kwargs) -> NASNetA:
    """NASNet-A (6 @ 768) for CIFAR (32 px): stem multiplier 3, no final dropout."""
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("drop_rate", 0.0)
    return NASNetA(cells_per_stack=6, filters=32, stem_filters=96, small_input=True, **kwargs)
