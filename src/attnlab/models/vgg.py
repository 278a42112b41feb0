"""VGG with batch norm (11/13/16/19 layers), for ImageNet and for small inputs, with attention slots.

Paper: Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, Table 1 configurations A (11), B (13), D (16), E (19): stacks of 3x3 convolutions
(stride 1, padding 1) separated by 2x2/2 max-pools, then FC-4096, FC-4096, FC-classes. Batch norm
after every convolution (Ioffe, Szegedy 2015) as torchvision's `vgg*_bn`, whose module names this file
keeps (`features.<index>`, `classifier.<index>` -> `head.classifier.<index>`), so torchvision weights
load directly; convolutions keep their bias as torchvision's do.

Attention: a family without a residual branch accepts the position `post` only. A stage is the run of
convolutions between two max-pools (5 stages); by default one module sits after the last
conv-BN-ReLU of each selected stage, before its max-pool ("after each block", VGG's blocks being its
stages). `attention_per_conv=True` puts one after every conv-BN-ReLU instead. The modules are named
`features.<i>_attention` (i = index of the ReLU they follow) so torchvision's indices stay.

Variants and deviations:
* `vgg*_bn` (ImageNet, 224 px): torchvision's head, a 7x7 adaptive average pool before FC-4096 (the
  paper's net assumes a 224 px input; the pool lets other sizes through, min 32 px).
* `vgg*_bn_cifar` (28-32 px): the same convolutions, no FC-4096 layers: global average pool and one
  linear layer (as the common CIFAR VGGs, e.g. 512 -> 10). The max-pools use ceil_mode so that a
  28 px input (Fashion-MNIST) still reaches 1x1 after five pools (28-14-7-4-2-1); at 32 px it changes
  nothing. Not in the paper.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from .layers import PLAIN_POSITIONS, Backbone, ClassifierHead, Placement, Stage, init_conv_weights
from .registry import register_model

# Table 1 of the paper: output channels of each 3x3 conv, "M" = 2x2/2 max-pool.
VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGGHead(nn.Module):
    """torchvision's VGG classifier: 7x7 adaptive pool, FC-4096-ReLU-dropout twice, FC-classes."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 4096, drop_rate: float = 0.5):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.hidden = hidden
        self.classifier = nn.Sequential(
            nn.Linear(in_features * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity(),
        )

    @property
    def fc(self) -> nn.Module:
        return self.classifier[6]

    def reset(self, num_classes: int) -> None:
        self.classifier[6] = nn.Linear(self.hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)
        for i in range(6):  # not self.classifier[:6]: that builds a Sequential torch.fx cannot place
            x = self.classifier[i](x)
        return x if pre_logits else self.classifier[6](x)


class VGG(Backbone):
    """VGG-`depth` with BN. `small_input=True` gives the CIFAR variant (no FC-4096 head, ceil pools)."""

    family = "vgg"

    def __init__(self, depth: int = 16, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 drop_rate: float = 0.5, attention=None, attention_per_conv: bool = False):
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"{self.family}: depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"{self.family}: drop_rate must be in [0, 1), got {drop_rate!r}")
        config = VGG_CONFIGS[depth]
        spec = self._setup(num_classes, in_chans, attention, config.count("M"), PLAIN_POSITIONS)
        self.input_size = (in_chans, 32, 32) if small_input else (in_chans, 224, 224)
        self.min_size = 17 if small_input else 32
        self.features = self._make_features(config, in_chans, spec, attention_per_conv, ceil_mode=small_input)
        self.num_features = 512
        self._set_stages(*self._feature_stages(config))
        if small_input:
            self.head = ClassifierHead(512, num_classes, drop_rate=0.0)
        else:
            self.head = VGGHead(512, num_classes, drop_rate=drop_rate)
        init_conv_weights(self)
        for m in self.head.modules():
            if isinstance(m, nn.Linear):  # torchvision: N(0, 0.01), zero bias
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_features(config: Sequence, in_chs: int, spec: Placement, per_conv: bool,
                       ceil_mode: bool) -> nn.Sequential:
        layers, index, stage = OrderedDict(), 0, 1
        for i, item in enumerate(config):
            if item == "M":
                layers[str(index)] = nn.MaxPool2d(2, 2, ceil_mode=ceil_mode)
                index, stage = index + 1, stage + 1
                continue
            layers[str(index)] = nn.Conv2d(in_chs, item, 3, padding=1)
            layers[str(index + 1)] = nn.BatchNorm2d(item)
            layers[str(index + 2)] = nn.ReLU(inplace=True)
            if spec.enabled(stage) and (per_conv or config[i + 1] == "M"):
                layers[f"{index + 2}_attention"] = spec.make(item, stage)
            index, in_chs = index + 3, item
        return nn.Sequential(layers)

    def _feature_stages(self, config: Sequence) -> tuple[list[Stage], tuple[str, ...]]:
        """Stage k runs from the max-pool that closes stage k - 1 to its last conv (or attention),
        as timm's VGG features: reductions 1, 2, 4, 8, 16; the last max-pool follows the stages."""
        names = [f"features.{key}" for key in self.features._modules]
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        widths = [c for i, c in enumerate(config) if c != "M" and config[i + 1] == "M"]  # before each pool
        stages, start = [], 0
        for k, pool in enumerate(pools):
            stages.append(Stage(tuple(names[start:pool]), widths[k], 2 ** k))
            start = pool
        return stages, tuple(names[start:])

    def norms_before_attention(self) -> dict[str, nn.BatchNorm2d]:
        """{attention module name: the BatchNorm feeding it through a ReLU}, for the identity init of
        `pretrained.py` (ReLU is positively homogeneous, so a gate constant folds into the BN)."""
        names = list(self.features._modules)
        return {f"features.{key}": self.features[names.index(key) - 2] for key in names
                if key.endswith("_attention") and not isinstance(self.features._modules[key], nn.Identity)}

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """torchvision's `classifier.<i>` is `head.classifier.<i>` here; the rest matches."""
        if source == "attnlab":
            return state_dict
        return {("head." + k if k.startswith("classifier.") else k): v for k, v in state_dict.items()}


def _vgg(depth: int, small_input: bool, kwargs: dict) -> VGG:
    if small_input:
        kwargs.setdefault("num_classes", 10)
    return VGG(depth, small_input=small_input, **kwargs)


@register_model
def vgg11_bn(**kwargs):
    return _vgg(11, False, kwargs)


@register_model
def vgg13_bn(**kwargs):
    return _vgg(13, False, kwargs)


@register_model
def vgg16_bn(**kwargs):
    return _vgg(16, False, kwargs)


@register_model
def vgg19_bn(**kwargs):
    return _vgg(19, False, kwargs)


@register_model
def vgg11_bn_cifar(**kwargs):
    return _vgg(11, True, kwargs)


@register_model
def vgg13_bn_cifar(**kwargs):
    return _vgg(13, True, kwargs)


@register_model
def vgg16_bn_cifar(**kwargs):
    return _vgg(16, True, kwargs)


@register_model
def vgg19_bn_cifar(**kwargs):
    return _vgg(19, True, kwargs)
