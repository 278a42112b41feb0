"""One registry for every backbone: `register_model`, `create_model`, `list_models`.

A family file registers one builder function per named variant:

    @register_model
    def resnet50(**kwargs):
        return _resnet(Bottleneck, (3, 4, 6, 3), **kwargs)

`create_model` folds the placement spec (`attention=`: a name, a dict or a `layers.Placement`,
plus the shorthand attention_kwargs= / attention_stages= / attention_position=) into one
Placement, forwards it and any family-specific keyword to the builder, then loads `pretrained=`
weights (a local torchvision / timm / attnlab file) when given.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

from torch import nn

from .features import FeatureNet
from .layers import Placement

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register `fn` under its own name (decorator)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style `pattern` (e.g. '*resnet*'), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_family(name: str) -> str:
    """The family of registered model `name`: its builder's module under attnlab.models ('resnet',
    'densenet', ...), or the full module name of a builder registered from outside attnlab."""
    module = _MODELS[resolve_model_name(name)].__module__
    package = __name__.rsplit(".", 1)[0] + "."
    return module[len(package):] if module.startswith(package) else module


def resolve_model_name(name: str) -> str:
    """`name` normalised (lower case, '-' -> '_'); ValueError with the closest match otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__} {name!r}")
    key = name.lower().replace("-", "_")
    if key not in _MODELS:
        close = difflib.get_close_matches(key, list(_MODELS), n=3)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ValueError(f"unknown model {name!r}; see attnlab.list_models() for the {len(_MODELS)} known names.{hint}")
    return key


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: str | None = None,
    pretrained_strict: bool = True,
    attention: str | dict | Placement | None = None,
    attention_kwargs: dict | None = None,
    attention_stages=None,
    attention_position: str | None = None,
    spatial_transformer=None,
    features_only: bool = False,
    out_indices=None,
    **kwargs,
) -> nn.Module:
    """Build a registered model; arguments left as None keep the builder's defaults.

    attention: the placement spec: an attention name, a dict with keys among name / kwargs /
    stages / position, or a Placement. attention_kwargs=, attention_stages= and
    attention_position= are shorthand for its kwargs, stages and position; they fill what
    `attention` leaves unset, and a field given both ways with different values is refused
    (ValueError). Paper-name models (se_resnet50, gc_resnet50, ...) fill what is still unset with
    the paper's choices.

    spatial_transformer: True or a dict of SpatialTransformer settings puts a spatial transformer
    in front of the built (and, with `pretrained=`, loaded) model (models.stn_cnn).

    pretrained: a local weight file (.pth / .pt / .bin read weights-only, .safetensors) or an
    attnlab run / checkpoint folder (models.pretrained). pretrained_strict (default True): a file
    holding tensors the model lacks (outside its classifier head), such as the weights of a deeper
    model of the same family, is refused with a ValueError; False loads what fits and lists the
    rest in `model.pretrained_report["unexpected"]`. Attention modules that the file lacks are new
    either way (left at their identity initialisation).

    features_only: return a `features.FeatureNet` instead: its forward gives the feature maps of
    the stages in `out_indices` (None = every stage; an int n = the last n; stage indices,
    negative ones from the end), shallow to deep, and its `feature_info` describes them (timm's
    convention; models.features). Built after loading `pretrained=` and adding the spatial
    transformer.
    """
    if not isinstance(features_only, bool):
        raise TypeError(f"features_only must be True or False, got {features_only!r}")
    if out_indices is not None and not features_only:
        raise ValueError(f"out_indices={out_indices!r} needs features_only=True (a classifier's "
                         f"intermediate maps: model.forward_intermediates(x, indices=...))")
    if spatial_transformer is not None and not isinstance(spatial_transformer, (bool, dict)):
        raise TypeError(f"spatial_transformer must be None, a bool or a dict of SpatialTransformer "
                        f"settings, got {type(spatial_transformer).__name__}")
    if not isinstance(pretrained_strict, bool):
        raise TypeError(f"pretrained_strict must be True or False, got {pretrained_strict!r}")
    builder = _MODELS[resolve_model_name(name)]
    placement = Placement.coerce(attention, kwargs=attention_kwargs, stages=attention_stages,
                                 position=attention_position)
    given = dict(num_classes=num_classes, in_chans=in_chans, attention=None if placement.is_empty else placement)
    kwargs.update({k: v for k, v in given.items() if v is not None})
    model = builder(**kwargs)
    model.model_name = resolve_model_name(name)
    if pretrained is not None:
        from .pretrained import load_pretrained

        model.pretrained_report = load_pretrained(model, pretrained, strict=pretrained_strict)
    if spatial_transformer is True or isinstance(spatial_transformer, dict):
        from .stn_cnn import with_spatial_transformer

        settings = spatial_transformer if isinstance(spatial_transformer, dict) else {}
        wrapped = with_spatial_transformer(model, **settings)
        wrapped.model_name = model.model_name
        if hasattr(model, "pretrained_report"):
            wrapped.pretrained_report = model.pretrained_report
        model = wrapped
    if features_only:
        model = FeatureNet(model, out_indices)
    return model


def describe_model(name: str, **kwargs) -> dict:
    """What `create_model(name, **kwargs)` would build, without its weights (built on the meta
    device): its `pretrained_cfg`, num_features, head_hidden_size and the channels and reductions
    of its feature stages."""
    import torch

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    info = model.feature_info
    return dict(model.pretrained_cfg, num_features=model.num_features, head_hidden_size=model.head_hidden_size,
                feature_channels=tuple(info.channels()), feature_reductions=tuple(info.reduction()))
