"""Reference builds (timm, torchvision) of attnlab's architectures, timed next to attnlab's own.

`reference_builders(model_name, attention, num_classes)` returns {"implementation:name": module}
for `attnlab.measure.bench.run_bench` (`attnlab bench --reference`). timm and torchvision are
optional: they are imported on first use, and when either is missing `require_packages` raises
one ValueError saying what to install (`REQUIRED`, the versions the benchmarks were run with).

Import workaround: a torchvision wheel built for CUDA registers fake kernels for
`torchvision::nms` and `torchvision::qnms` before its C++ extension defines them (the extension
does not load with a CPU-only torch), so `import torchvision` (and `import timm`, which imports
torchvision) fails with "operator torchvision::nms does not exist". Defining the two schemas first
lets the import go through; nothing here calls them. The definitions stay for the life of the
process (they are only made when torchvision has not defined the operators itself).

Twins (same architecture, same number of classes):
* resnet18/34/50/101/152, resnext50_32x4d, wide_resnet50_2, vgg16_bn, densenet121,
  inception_v3, shufflenet_v2_x1_0: torchvision and timm builders of the same name, where they
  exist (timm's inception_v3 and torchvision's are built without the auxiliary head; timm's VGG
  uses a convolutional pre-logits MLP, torchvision's the original 4096-wide linear layers).
* ResNet + SE: timm `seresnet*` (SEModule, reduction 16, hidden width rounded to a multiple of 8).
  ResNet + ECA / CBAM / GC: timm's ResNet with `block_args=dict(attn_layer=...)`. For GC the
  module is configured as in the GC paper (additive fusion, reduction 16); timm's own default
  for attn_layer='gc' is multiplicative fusion with reduction 8, a different block.
* xception: timm `legacy_xception` (the paper's network).
* CIFAR ResNets (resnet20 ...) have no twin: attnlab's model with SE / ECA / CBAM / GC gets its
  attention modules swapped for timm's (`timm-modules:`), same hidden width and kernel size,
  so that the overhead of each module can be compared inside the same network.
"""
from __future__ import annotations

import functools
import importlib

import torch
from torch import nn

from ..attention import AttentionModule
from ..models import create_model

# The versions the reference rows were measured with (constraints.txt pins the same).
REQUIRED = {"timm": "1.0.31", "torchvision": "0.28.0"}

_torchvision_ops_library = None  # the schemas below live as long as this object


def _define_torchvision_ops() -> None:
    """Define torchvision::nms / qnms schemas once per process (see the module docstring)."""
    global _torchvision_ops_library
    if _torchvision_ops_library is not None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018  (already defined by torchvision or someone else)
        return
    except (AttributeError, RuntimeError):
        pass
    _torchvision_ops_library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        _torchvision_ops_library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def require_packages():
    """(timm, torchvision), imported; a ValueError in one line saying what to install when either
    is missing."""
    try:
        _define_torchvision_ops()
        torchvision = importlib.import_module("torchvision")
        timm = importlib.import_module("timm")
    except ImportError as err:
        pins = [f"{name}=={version}" for name, version in REQUIRED.items()]
        raise ValueError(f"--reference needs {' and '.join(pins)} ({err.name or 'a package'} is not installed): "
                         f"pip install --no-deps {' '.join(pins)}") from None
    return timm, torchvision


def versions() -> dict:
    """{"timm": version, "torchvision": version} of the installed reference packages."""
    timm, torchvision = require_packages()
    return {"timm": timm.__version__, "torchvision": torchvision.__version__}


TORCHVISION_TWINS = {
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "wide_resnet50_2", "vgg16_bn", "vgg16", "vgg11_bn", "densenet121", "inception_v3",
    "shufflenet_v2_x1_0",
}
TIMM_TWINS = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
    "resnet152": "resnet152", "resnext50_32x4d": "resnext50_32x4d", "wide_resnet50_2": "wide_resnet50_2",
    "vgg16_bn": "vgg16_bn", "vgg16": "vgg16", "vgg11_bn": "vgg11_bn", "densenet121": "densenet121",
    "inception_v3": "inception_v3", "xception": "legacy_xception",
}
TIMM_SE_NAMES = {"resnet18": "seresnet18", "resnet34": "seresnet34", "resnet50": "seresnet50",
                 "resnet101": "seresnet101", "resnet152": "seresnet152",
                 "resnext50_32x4d": "seresnext50_32x4d"}
CIFAR_RESNETS = {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"}


def _timm_attn_layer(attention: str):
    """timm's block attention for `attention`, configured as in the attention's paper."""
    require_packages()
    from timm.layers.cbam import CbamModule
    from timm.layers.eca import EcaModule
    from timm.layers.global_context import GlobalContext

    if attention == "eca":
        return EcaModule  # adaptive kernel size from the channel count, as in the paper
    if attention == "cbam":
        return functools.partial(CbamModule, rd_ratio=1 / 16, rd_divisor=1)
    if attention == "gc":
        return functools.partial(GlobalContext, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16,
                                 init_last_zero=True)
    return None


def _torchvision_model(name: str, num_classes: int) -> nn.Module:
    _, torchvision = require_packages()
    kwargs = {"num_classes": num_classes}
    if name == "inception_v3":
        kwargs.update(aux_logits=False, init_weights=True)
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def _setting(module: nn.Module, path: str):
    """attnlab's setting `path` ("channel.hidden_channels") of an attention module."""
    value = module
    for part in path.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{type(module).__name__} has no {path!r}: cannot build timm's twin of it")
        value = getattr(value, part)
    return value


def timm_module_like(attnlab_module: nn.Module, attention: str) -> nn.Module:
    """timm's module for `attention` with the channel count, hidden width and kernel of attnlab's.

    Left as timm has them: SE and GC use 1x1 convolutions on (N, C, 1, 1) where attnlab uses
    linear layers on (N, C); timm's CBAM has no MLP bias and a BatchNorm after the spatial conv
    (the official code), attnlab's default has MLP biases and no norm (the paper)."""
    require_packages()
    from timm.layers.cbam import CbamModule
    from timm.layers.eca import EcaModule
    from timm.layers.global_context import GlobalContext
    from timm.layers.squeeze_excite import SEModule

    channels = attnlab_module.channels
    if attention == "se":
        return SEModule(channels, rd_channels=_setting(attnlab_module, "hidden_channels"))
    if attention == "eca":
        # channels=None: given the channels, timm would recompute the kernel size from them
        return EcaModule(None, kernel_size=_setting(attnlab_module, "kernel_size"))
    if attention == "cbam":
        return CbamModule(channels, rd_channels=_setting(attnlab_module, "channel.hidden_channels"),
                          spatial_kernel_size=_setting(attnlab_module, "spatial.kernel_size"))
    if attention == "gc":
        return GlobalContext(channels, fuse_add=True, fuse_scale=False,
                             rd_channels=_setting(attnlab_module, "hidden_channels"))
    raise ValueError(f"timm_module_like: no timm module for attention {attention!r}; "
                     f"expected one of se, eca, cbam, gc")


def swap_in_timm_modules(model: nn.Module, attention: str) -> nn.Module:
    """Replace every outermost attnlab attention module of `model` by timm's equivalent (in place);
    the parts of a composite module (CBAM's channel and spatial attention) go with it."""

    def swap(parent: nn.Module) -> int:
        count = 0
        for child_name, child in list(parent.named_children()):
            if isinstance(child, AttentionModule):
                setattr(parent, child_name, timm_module_like(child, attention))
                count += 1
            else:
                count += swap(child)
        return count

    if swap(model) == 0:
        raise ValueError(f"swap_in_timm_modules: {type(model).__name__} holds no attnlab attention module")
    return model


def reference_builders(model_name: str, attention, num_classes: int) -> dict:
    """{"implementation:name": module} twins of attnlab's `model_name` with `attention`."""
    timm, _ = require_packages()
    out = {}
    if attention is None:
        if model_name in TORCHVISION_TWINS:
            out[f"torchvision:{model_name}"] = _torchvision_model(model_name, num_classes)
        if model_name in TIMM_TWINS:
            out[f"timm:{TIMM_TWINS[model_name]}"] = timm.create_model(TIMM_TWINS[model_name],
                                                                     num_classes=num_classes)
        return out
    if model_name in CIFAR_RESNETS and attention in ("se", "eca", "cbam", "gc"):
        model = create_model(model_name, attention=attention, num_classes=num_classes)
        out[f"timm-modules:{model_name}+{attention}"] = swap_in_timm_modules(model, attention)
        return out
    if attention == "se" and model_name in TIMM_SE_NAMES:
        out[f"timm:{TIMM_SE_NAMES[model_name]}"] = timm.create_model(TIMM_SE_NAMES[model_name],
                                                                    num_classes=num_classes)
    elif attention in ("eca", "cbam", "gc") and model_name in TIMM_TWINS and model_name.startswith("res"):
        out[f"timm:{TIMM_TWINS[model_name]}+{attention}"] = timm.create_model(
            TIMM_TWINS[model_name], num_classes=num_classes,
            block_args=dict(attn_layer=_timm_attn_layer(attention)))
    return out
