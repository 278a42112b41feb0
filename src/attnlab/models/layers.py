"""Pieces every backbone family shares: conv-norm-act, the classifier head, the model base
class and the attention slot (the one placement spec of attnlab).

Placement spec (the same words for every family):

* ``attention``: a registered attention name (``attnlab.list_attention()``) or None.
* ``attention_kwargs``: its settings, e.g. ``{"reduction": 8}``.
* ``attention_stages``: which stages get it, numbered from 1 in forward order
  (ResNet: 1 = conv2_x/res2 ... 4 = conv5_x/res5); None = every stage.
* ``attention_position``: where inside a block. Residual blocks accept the SE paper's four
  positions: ``standard`` (on the residual branch after its last norm, before the addition),
  ``pre`` (on the block input, before the residual branch), ``post`` (after the addition and its
  activation) and ``identity`` (on the shortcut, in parallel). Families without a residual
  branch accept ``post`` only: after each block / dense layer / cell.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ..attention import create_attention, resolve_attention_name

RESIDUAL_POSITIONS = ("standard", "pre", "post", "identity")
PLAIN_POSITIONS = ("post",)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (ReLU by default; act=None for none)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple = 3, stride: int = 1,
                 padding: Optional[int | tuple] = None, groups: int = 1, dilation: int = 1,
                 act: Optional[type[nn.Module]] = nn.ReLU, norm: type[nn.Module] = nn.BatchNorm2d):
        if padding is None:
            k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
            padding = tuple(dilation * (kk - 1) // 2 for kk in k)
        layers = [("conv", nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation,
                                     groups=groups, bias=False)),
                  ("bn", norm(out_chs))]
        if act is not None:
            layers.append(("act", act(inplace=True) if act in (nn.ReLU, nn.ReLU6) else act()))
        super().__init__(OrderedDict(layers))


class SeparableConv2d(nn.Sequential):
    """Depthwise-separable convolution (Xception, NASNet): a depthwise k x k conv (one filter per
    input channel) followed by a pointwise 1x1 conv; no norm or activation in between and no bias
    (a norm follows in every user)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1):
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_chs, in_chs, kernel_size, stride, padding, dilation=dilation,
                                groups=in_chs, bias=False),
            pointwise=nn.Conv2d(in_chs, out_chs, 1, bias=False)))


@dataclass
class AttentionSpec:
    """A validated placement spec; `make(channels, stage)` gives the module for one slot."""

    family: str
    name: Optional[str] = None
    kwargs: dict = field(default_factory=dict)
    stages: Optional[tuple[int, ...]] = None
    position: str = "standard"

    @classmethod
    def build(cls, family: str, num_stages: int, positions: Sequence[str] = RESIDUAL_POSITIONS,
              attention: Optional[str] = None, attention_kwargs: Optional[dict] = None,
              attention_stages: Optional[Iterable[int] | int] = None,
              attention_position: Optional[str] = None) -> "AttentionSpec":
        name = resolve_attention_name(attention) if attention is not None else None
        if attention_kwargs is not None and not isinstance(attention_kwargs, dict):
            raise TypeError(f"{family}: attention_kwargs must be a dict, got {type(attention_kwargs).__name__}")
        position = attention_position if attention_position is not None else positions[0]
        if position not in positions:
            raise ValueError(f"{family}: attention_position {position!r} is not supported; "
                             f"accepted: {', '.join(positions)}")
        stages = None
        if attention_stages is not None:
            stages = (attention_stages,) if isinstance(attention_stages, int) else tuple(attention_stages)
            bad = [s for s in stages if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_stages]
            if bad or not stages:
                raise ValueError(f"{family}: attention_stages {attention_stages!r} invalid; "
                                 f"accepted: stage numbers 1..{num_stages}")
        return cls(family, name, dict(attention_kwargs or {}), stages, position)

    def enabled(self, stage: int) -> bool:
        return self.name is not None and (self.stages is None or stage in self.stages)

    def make(self, channels: int, stage: int) -> nn.Module:
        """The attention module for a slot with `channels` channels in `stage`, or nn.Identity."""
        if not self.enabled(stage):
            return nn.Identity()
        return create_attention(self.name, channels, **self.kwargs)


def attend(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """attn(x) for a slot filled by `AttentionSpec.make`; an empty slot (nn.Identity) returns x
    without the module call, whose few microseconds show in small networks at batch 1."""
    return x if type(attn) is nn.Identity else attn(x)


class ClassifierHead(nn.Module):
    """Global average pool -> flatten -> dropout -> linear."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)


def check_classes_chans(family: str, num_classes, in_chans) -> None:
    """Validate the two arguments every builder takes."""
    for name, v, lo in (("num_classes", num_classes, 0), ("in_chans", in_chans, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{family}: {name} must be an int >= {lo}, got {v!r}")


class Backbone(nn.Module):
    """Base of every attnlab model (timm's interface).

    Subclasses set `self.head` (a ClassifierHead or compatible), `self.num_features`,
    `self.in_chans`, `self.input_size` (native (C, H, W)) and `self.min_size` (smallest H and W
    the network accepts), and implement `forward_features`.
    """

    family = "model"
    min_size = 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        check_classes_chans(self.family, num_classes, self.in_chans)
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """Rename a foreign state dict's keys (source: 'torchvision', 'timm' or 'attnlab') to this
        model's names. Families whose names differ from the reference implementation override it."""
        return state_dict

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the model, the expected and the received shape."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.family}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[2], x.shape[3]) < self.min_size:
            raise ValueError(f"{self.family}: expected input (N, {self.in_chans}, H, W) with H, W >= "
                             f"{self.min_size} (native {tuple(self.input_size)}), got {tuple(x.shape)}")


def init_backbone_weights(module: nn.Module) -> None:
    """He (fan-out) init for convolutions, BN weight 1 / bias 0, as torchvision does; attention
    modules are skipped, so that their own initialisation (zero-init gates, identity STN) stays."""
    from ..attention.base import AttentionModule

    for child in module.children():
        if isinstance(child, AttentionModule):
            continue
        if isinstance(child, nn.Conv2d):
            nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
        init_backbone_weights(child)


def rename_state_dict_keys(state_dict: dict, rules) -> dict:
    """A copy of `state_dict` whose keys went through each (regex, replacement) rule in turn
    (re.sub; the replacement may be a function of the match). Used by `remap_pretrained`."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed
