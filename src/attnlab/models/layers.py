"""Pieces every backbone family shares: conv-norm-act, the classifier head, the model base
class and the placement spec (`Placement`, the one description of where attention goes).

Placement spec (the same words for every family), one `Placement` object, also accepted as a
name or a dict wherever a model is built:

* ``name``: a registered attention name (``attnlab.list_attention()``) or None.
* ``kwargs``: its settings, e.g. ``{"reduction": 8}``.
* ``stages``: which stages get it, numbered from 1 in forward order
  (ResNet: 1 = conv2_x/res2 ... 4 = conv5_x/res5); None = every stage.
* ``position``: where inside a block. Residual blocks accept the SE paper's four
  positions: ``standard`` (on the residual branch after its last norm, before the addition),
  ``pre`` (on the block input, before the residual branch), ``post`` (after the addition and its
  activation) and ``identity`` (on the shortcut, in parallel). Families without a residual
  branch accept ``post`` only: after each block / dense layer / cell.

`create_model` also takes the shorthand keywords attention_kwargs=, attention_stages= and
attention_position= next to ``attention=`` and folds them into the object. A family constructor
takes the object as its one ``attention=`` argument and binds it once, in `Backbone._setup`.
"""
from __future__ import annotations

import numbers
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch
from torch import nn

from ..attention import create_attention, resolve_attention_name
from ..attention.base import init_conv_weights  # noqa: F401  (the families initialise through layers)
from ..attention.base import is_traced
from .data_config import data_config
from .features import Stage, StagedModel  # noqa: F401  (the families declare their stages through layers)

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


PLACEMENT_FIELDS = ("name", "kwargs", "stages", "position")


@dataclass(frozen=True)
class Placement:
    """Where attention goes in a backbone: which mechanism, its settings, which stages, where in a
    block. One object for every family; `Placement.coerce` also takes a name or a dict.

        Placement("cbam", {"reduction": 8}, stages=(3, 4), position="identity")
        Placement.coerce("se")
        Placement.coerce({"name": "cbam", "kwargs": {"reduction": 8}, "stages": [3, 4]})

    Fields (each checked at construction; None = not given, the family's default):

    * ``name``: a registered attention name (``attnlab.list_attention()``, aliases resolved) or
      None for no attention.
    * ``kwargs``: the mechanism's settings, e.g. ``{"reduction": 8}`` (keys are strings).
    * ``stages``: which stages get it, numbered from 1 in forward order, as a tuple (an int is
      one stage); None = every stage.
    * ``position``: where inside a block; None = the family's first accepted position.

    The family checks what depends on it when it binds the placement (`bind`: the stage numbers
    that exist, the positions it offers). The object is immutable; treat `kwargs` as read-only.
    """

    name: Optional[str] = None
    kwargs: dict = field(default_factory=dict)
    stages: Optional[tuple[int, ...]] = None
    position: Optional[str] = None

    def __post_init__(self) -> None:
        name = None if self.name is None else resolve_attention_name(self.name)
        kwargs = {} if self.kwargs is None else self.kwargs
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise TypeError(f"attention_kwargs must be a dict of settings with str keys, got "
                            f"{type(kwargs).__name__} {kwargs!r}")
        stages = self.stages
        if stages is not None:
            if isinstance(stages, (str, bytes)) or not isinstance(stages, (numbers.Integral, Iterable)):
                raise TypeError(f"attention_stages must be a stage number or a sequence of them, got "
                                f"{type(stages).__name__} {stages!r}")
            stages = (stages,) if isinstance(stages, numbers.Integral) else tuple(stages)
            bad = [s for s in stages if isinstance(s, bool) or not isinstance(s, numbers.Integral)]
            if bad:
                raise TypeError(f"attention_stages must hold stage numbers (ints), got {bad[0]!r} in "
                                f"{self.stages!r}")
            stages = tuple(int(s) for s in stages)
        if self.position is not None and not isinstance(self.position, str):
            raise TypeError(f"attention_position must be a str, got {type(self.position).__name__} "
                            f"{self.position!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kwargs", dict(kwargs))
        object.__setattr__(self, "stages", stages)

    @classmethod
    def coerce(cls, value=None, *, kwargs: Optional[Mapping] = None, stages=None,
               position: Optional[str] = None) -> "Placement":
        """A Placement from None, a name, a dict with keys among name / kwargs / stages / position,
        or a Placement (returned as is). `kwargs`, `stages` and `position` are the shorthand of
        `create_model`'s attention_kwargs= / attention_stages= / attention_position=: they fill
        what `value` leaves unset; a field given both ways with different values is refused."""
        if value is None or isinstance(value, str):
            base = cls(value)
        elif isinstance(value, cls):
            base = value
        elif isinstance(value, Mapping):
            unknown = sorted(map(str, set(value) - set(PLACEMENT_FIELDS)))
            if unknown:
                raise ValueError(f"attention placement: unknown key(s) {', '.join(map(repr, unknown))}; "
                                 f"accepted: {', '.join(PLACEMENT_FIELDS)}")
            base = cls(**value)
        else:
            raise TypeError(f"attention must be None, an attention name, a dict or a Placement, got "
                            f"{type(value).__name__} {value!r}")
        loose = cls(kwargs=kwargs, stages=stages, position=position)
        conflicts = [f for f in PLACEMENT_FIELDS[1:]
                     if base._given(f) and loose._given(f) and getattr(base, f) != getattr(loose, f)]
        if conflicts:
            f = conflicts[0]
            raise ValueError(f"attention_{f} given twice: {getattr(loose, f)!r} as attention_{f}= and "
                             f"{getattr(base, f)!r} in attention=; give it once")
        fill = {f: getattr(loose, f) for f in PLACEMENT_FIELDS[1:] if loose._given(f)}
        return base.with_defaults(**fill) if fill else base

    def _given(self, name: str) -> bool:
        value = getattr(self, name)
        return value is not None and value != {}

    @property
    def is_empty(self) -> bool:
        """Nothing given: no mechanism and no setting (the family's defaults throughout)."""
        return not any(self._given(f) for f in PLACEMENT_FIELDS)

    def with_defaults(self, **defaults) -> "Placement":
        """A copy whose unset fields take `defaults` (a paper-name builder's choices, e.g.
        ``name="gc", stages=(2, 3, 4)``); fields already given are kept."""
        unknown = sorted(set(defaults) - set(PLACEMENT_FIELDS))
        if unknown:
            raise TypeError(f"Placement.with_defaults: unknown field(s) {', '.join(unknown)}")
        return replace(self, **{f: v for f, v in defaults.items() if not self._given(f)})

    def bind(self, family: str, num_stages: int, positions: Sequence[str]) -> "Placement":
        """This placement checked against a family with `num_stages` stages that offers
        `positions` (the first is the default); the copy has its position filled in."""
        position = self.position if self.position is not None else positions[0]
        if position not in positions:
            raise ValueError(f"{family}: attention_position {position!r} is not supported; "
                             f"accepted: {', '.join(positions)}")
        if self.stages is not None and (not self.stages or any(not 1 <= s <= num_stages for s in self.stages)):
            raise ValueError(f"{family}: attention_stages {self.stages!r} invalid; "
                             f"accepted: stage numbers 1..{num_stages}")
        return replace(self, position=position)

    def as_dict(self) -> dict:
        """The placement as plain data (`coerce` reads it back): for configs and JSON."""
        return {"name": self.name, "kwargs": dict(self.kwargs),
                "stages": None if self.stages is None else list(self.stages), "position": self.position}

    def enabled(self, stage: int) -> bool:
        return self.name is not None and (self.stages is None or stage in self.stages)

    def make(self, channels: int, stage: int) -> nn.Module:
        """The attention module for a slot with `channels` channels in `stage`, or nn.Identity."""
        if not self.enabled(stage):
            return nn.Identity()
        return create_attention(self.name, channels, **self.kwargs)


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


class Backbone(StagedModel, nn.Module):
    """Base of every attnlab model (timm's interface).

    A subclass calls `self._setup(num_classes, in_chans, attention, num_stages, positions)` in its
    constructor (which keeps `num_classes`, `in_chans` and the bound `placement`), sets `self.head`
    (a ClassifierHead or compatible), `self.num_features`, `self.input_size` (native (C, H, W))
    and `self.min_size` (smallest H and W the network accepts), and declares its stages with
    `self._set_stages([Stage(modules, num_chs, reduction), ...], final=(...))` (models.features),
    which gives it forward_features, forward_intermediates, feature_info,
    prune_intermediate_layers and set_grad_checkpointing.
    """

    family = "model"
    min_size = 1
    data_stats = "imagenet"   # mean and std at ImageNet size: "imagenet" or "inception" (models.data_config)
    crop_pct = 0.875          # centre-crop fraction at ImageNet size

    def _setup(self, num_classes: int, in_chans: int, attention, num_stages: int,
               positions: Sequence[str]) -> Placement:
        """The constructor work every family shares: check and keep `num_classes` and `in_chans`,
        and bind the placement spec `attention` (a Placement, a name, a dict or None) to this
        family's `num_stages` stages and `positions` (the first is the default). Returns the bound
        placement, also kept as `self.placement`. Call it after `nn.Module.__init__` and after
        setting `self.family` when the family name is chosen per instance."""
        check_classes_chans(self.family, num_classes, in_chans)
        placement = Placement.coerce(attention).bind(self.family, num_stages, positions)
        self.num_classes, self.in_chans, self.placement = num_classes, in_chans, placement
        return placement

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

    @property
    def head_hidden_size(self) -> int:
        """Width of `forward_head(x, pre_logits=True)`: num_features, or the hidden width of a
        head with hidden layers (VGG's 4096)."""
        return getattr(self.head, "hidden", self.num_features)

    @property
    def pretrained_cfg(self) -> dict:
        """The data configuration in timm's keys (input size, mean, std, interpolation, crop_pct,
        first_conv, classifier, num_classes, paper_name, paper_ids): models.data_config."""
        return data_config(self)

    @pretrained_cfg.setter
    def pretrained_cfg(self, value: dict) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"{self.family}: pretrained_cfg must be a dict, got {type(value).__name__}")
        self._pretrained_cfg_overrides = dict(value)

    default_cfg = pretrained_cfg  # timm's former name

    def first_conv_names(self) -> list[str]:
        """The convolution(s) that read the input: the first one of stage 0."""
        for name in self._stages[0].modules:
            for sub, module in self.get_submodule(name).named_modules():
                if isinstance(module, nn.Conv2d):
                    return [f"{name}.{sub}" if sub else name]
        return []

    def _prune_head(self) -> None:
        """Replace the classifier by a pooling head without parameters (pre-logits = num_features)."""
        self.head = ClassifierHead(self.num_features, 0)
        self.num_classes = 0

    def remap_pretrained(self, state_dict: dict, source: str) -> dict:
        """Rename a foreign state dict's keys (source: 'torchvision', 'timm' or 'attnlab') to this
        model's names. Families whose names differ from the reference implementation override it."""
        return state_dict

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the model, the expected and the received shape (skipped
        under torch.fx tracing)."""
        if is_traced(x):
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.family}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_chans or min(x.shape[2], x.shape[3]) < self.min_size:
            raise ValueError(f"{self.family}: expected input (N, {self.in_chans}, H, W) with H, W >= "
                             f"{self.min_size} (native {tuple(self.input_size)}), got {tuple(x.shape)}")


def rename_state_dict_keys(state_dict: dict, rules) -> dict:
    """A copy of `state_dict` whose keys went through each (regex, replacement) rule in turn
    (re.sub; the replacement may be a function of the match). Used by `remap_pretrained`."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed
