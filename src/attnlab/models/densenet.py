"""DenseNet: Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017 (arXiv:1608.06993).

Equation (2) of the paper: the l-th layer of a dense block sees the concatenation of every
earlier map of its block,

    x_l = H_l([x_0, x_1, ..., x_{l-1}]),

where H_l is the DenseNet-B composite BN-ReLU-Conv(1x1, bn_size*k)-BN-ReLU-Conv(3x3, k) and k is
the growth rate. Between blocks a transition layer BN-ReLU-Conv(1x1)-AvgPool(2x2) keeps
floor(theta * m) of the m channels (compression theta, "DenseNet-C"; 0.5 in DenseNet-BC).

Variants:
* densenet121 / 169 / 201: the ImageNet models of the paper's Table 1 (k=32, blocks 6-12-24-16,
  6-12-32-32, 6-12-48-32), in torchvision's module layout so that torchvision state dicts load
  through `remap_pretrained` (only the stem and the classifier are renamed).
* densenet_bc100_k12: the CIFAR DenseNet-BC of the paper (L=100, k=12, three blocks of 16
  bottleneck layers, theta=0.5; 0.8M parameters in the paper's Table 2).
* densenet121_small / 169_small / 201_small: the ImageNet block configurations behind the
  paper's CIFAR stem, for 28-32 px inputs.

Attention (the placement spec of layers.py): DenseNet has no residual branch, so the only
position is `post`: after each dense layer, applied to the k new maps that the layer adds to the
block (not to the whole concatenation, which would re-weight every earlier map again at each
layer). Stages are the dense blocks, numbered from 1.

Deviations:
* ImageNet stem as in the paper and torchvision (conv 7x7/2 - BN - ReLU - max pool 3x3/2); it is
  a layers.ConvNormAct, so torchvision's `features.conv0` / `features.norm0` keys are renamed.
* The transition keeps the ReLU after its BN (torchvision, the official Lua code); the paper's text
  lists only BN and conv.
* The CIFAR stem is the paper's single 3x3 conv with 2k output channels (no BN and no ReLU: the
  first dense layer starts with them).
* torchvision's memory-efficient (checkpointed) dense layer is not offered.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from .layers import (PLAIN_POSITIONS, Backbone, ClassifierHead, ConvNormAct, Placement, Stage, init_conv_weights,
                     rename_state_dict_keys)
from .registry import register_model

FAMILY = "DenseNet"


class DenseLayer(nn.Module):
    """H_l of equation (2): BN-ReLU-Conv1x1 (bottleneck) - BN-ReLU-Conv3x3; returns the k new maps
    (attended by `attn` when an attention slot is enabled)."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int, drop_rate: float, attn: nn.Module):
        super().__init__()
        inner = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, inner, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(inner)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.attn = attn

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        x = self.conv2(self.relu2(self.norm2(x)))
        return self.attn(self.drop(x))


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers; each sees every earlier map of the block; the output is the
    concatenation of the block input and all new maps (in_chs + num_layers * k channels)."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, bn_size: int, drop_rate: float,
                 spec: Placement, stage: int):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, drop_rate,
                               spec.make(growth_rate, stage))
            self.add_module(f"denselayer{i + 1}", layer)
        self.out_chs = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN - ReLU - Conv1x1 (compression) - AvgPool 2x2/2 between two dense blocks."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(OrderedDict(norm=nn.BatchNorm2d(in_chs), relu=nn.ReLU(inplace=True),
                              conv=nn.Conv2d(in_chs, out_chs, 1, bias=False),
                              pool=nn.AvgPool2d(2, stride=2)))


class DenseNet(Backbone):
    """A stem, dense blocks joined by transitions, a final BN-ReLU and the classifier head.

    Args:
        block_config: dense layers per block.
        growth_rate: k, the maps each dense layer adds.
        num_init_features: stem output channels (2k in the paper).
        bn_size: bottleneck width factor (the 1x1 conv gives bn_size * k maps; 4 in the paper).
        compression: theta of the transitions, in (0, 1].
        small_input: the paper's CIFAR stem (3x3 conv, stride 1, no pooling) instead of the
            ImageNet stem (7x7/2 conv-BN-ReLU, 3x3/2 max pool).
        drop_rate: dropout after each dense layer's 3x3 conv (0.2 in the paper without augmentation).
    """

    family = FAMILY

    def __init__(self, block_config: Sequence[int], growth_rate: int = 32, num_init_features: int = 64,
                 bn_size: int = 4, compression: float = 0.5, small_input: bool = False,
                 drop_rate: float = 0.0, num_classes: int = 1000, in_chans: int = 3, attention=None):
        super().__init__()
        if not block_config or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in block_config):
            raise ValueError(f"{FAMILY}: block_config must be positive layer counts, got {block_config!r}")
        for name, value in (("growth_rate", growth_rate), ("num_init_features", num_init_features),
                            ("bn_size", bn_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{FAMILY}: {name} must be a positive int, got {value!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"{FAMILY}: compression must be in (0, 1], got {compression!r}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"{FAMILY}: drop_rate must be in [0, 1), got {drop_rate!r}")
        spec = self._setup(num_classes, in_chans, attention, len(block_config), PLAIN_POSITIONS)

        if small_input:
            stem = OrderedDict(stem=nn.Conv2d(in_chans, num_init_features, 3, padding=1, bias=False))
            self.input_size, self.min_size = (in_chans, 32, 32), 2 ** (len(block_config) - 1)
        else:
            stem = OrderedDict(stem=ConvNormAct(in_chans, num_init_features, 7, stride=2, padding=3),
                        stem_pool=nn.MaxPool2d(3, stride=2, padding=1))
            self.input_size, self.min_size = (in_chans, 224, 224), 2 ** (len(block_config) + 1) - 3
        self.features = nn.Sequential(stem)
        # Stage 0 is the stem conv; stage k is (transition k-1 or the stem pool) + dense block k.
        reduction = 1 if small_input else 2
        stages = [Stage(("features.stem",), num_init_features, reduction)]
        entry = () if small_input else ("features.stem_pool",)
        chs = num_init_features
        for stage, num_layers in enumerate(block_config, start=1):
            block = DenseBlock(num_layers, chs, growth_rate, bn_size, drop_rate, spec, stage)
            self.features.add_module(f"denseblock{stage}", block)
            chs = block.out_chs
            reduction *= 2 if entry else 1
            stages.append(Stage(entry + (f"features.denseblock{stage}",), chs, reduction))
            if stage < len(block_config):
                out_chs = int(chs * compression)
                self.features.add_module(f"transition{stage}", Transition(chs, out_chs))
                entry = (f"features.transition{stage}",)
                chs = out_chs
        final = f"norm{len(block_config) + 1}"
        self.features.add_module(final, nn.BatchNorm2d(chs))
        self.features.add_module("final_relu", nn.ReLU(inplace=True))
        self._set_stages(stages, final=(f"features.{final}", "features.final_relu"))
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes)
        init_conv_weights(self)
        if isinstance(self.head.fc, nn.Linear):
            nn.init.zeros_(self.head.fc.bias)

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """torchvision names: features.conv0/norm0 (stem) and classifier; the rest match."""
        if source != "torchvision":
            return state_dict
        return rename_state_dict_keys(state_dict, ((r"^features\.conv0\.", "features.stem.conv."),
                                                   (r"^features\.norm0\.", "features.stem.bn."),
                                                   (r"^classifier\.", "head.fc.")))


def _densenet(block_config, growth_rate=32, num_init_features=64, **kwargs) -> DenseNet:
    return DenseNet(block_config, growth_rate=growth_rate, num_init_features=num_init_features, **kwargs)


@register_model
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121 (k=32), ImageNet, 7.98M parameters."""
    return _densenet((6, 12, 24, 16), **kwargs)


@register_model
def densenet169(**kwargs) -> DenseNet:
    """DenseNet-169 (k=32), ImageNet."""
    return _densenet((6, 12, 32, 32), **kwargs)


@register_model
def densenet201(**kwargs) -> DenseNet:
    """DenseNet-201 (k=32), ImageNet."""
    return _densenet((6, 12, 48, 32), **kwargs)


@register_model
def densenet_bc100_k12(**kwargs) -> DenseNet:
    """DenseNet-BC (L=100, k=12) of the paper's CIFAR experiments: 3 blocks of (100-4)/6 = 16
    bottleneck layers, theta=0.5, 2k stem channels."""
    kwargs.setdefault("num_classes", 10)
    return _densenet((16, 16, 16), growth_rate=12, num_init_features=24, small_input=True, **kwargs)


@register_model
def densenet121_small(**kwargs) -> DenseNet:
    """DenseNet-121 blocks behind the CIFAR stem (28-32 px inputs)."""
    kwargs.setdefault("num_classes", 10)
    return _densenet((6, 12, 24, 16), small_input=True, **kwargs)


@register_model
def densenet169_small(**kwargs) -> DenseNet:
    """DenseNet-169 blocks behind the CIFAR stem (28-32 px inputs)."""
    kwargs.setdefault("num_classes", 10)
    return _densenet((6, 12, 32, 32), small_input=True, **kwargs)


@register_model
def densenet201_small(**kwargs) -> DenseNet:
    """DenseNet-201 blocks behind the CIFAR stem (28-32 px inputs)."""
    kwargs.setdefault("num_classes", 10)
    return _densenet((6, 12, 48, 32), small_input=True, **kwargs)
