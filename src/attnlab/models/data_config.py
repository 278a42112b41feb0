"""The data configuration a model carries, `model.pretrained_cfg`, in timm's keys: what input the
network expects (size, mean, std, resize interpolation, centre-crop fraction), where its first
convolution and its classifier are (for tools that adapt the input channels or replace the
head), its class count and the papers it implements.

    {"architecture": "se_resnet50", "input_size": (3, 224, 224), "min_input_size": (3, 32, 32),
     "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
     "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "num_classes": 1000,
     "first_conv": "conv1", "classifier": "head.fc",
     "paper_name": "Deep Residual Learning for Image Recognition; Squeeze-and-Excitation Networks",
     "paper_ids": ("arXiv:1512.03385", "arXiv:1709.01507")}

Mean and std: ImageNet's for the ImageNet-size models, (0.5, 0.5, 0.5) for Inception v3 and
Xception (the convention of their reference implementations), CIFAR-10's for the 32 px variants
and MNIST's for the 28 px MNIST CNN. They describe the usual preprocessing for the input size,
not statistics of trained weights (attnlab ships none): a model built with another `in_chans`
gets the average of those values for every channel. The dictionary is computed when read, so it
follows `reset_classifier`; assigning a dict to `model.pretrained_cfg` overrides the keys it holds.
"""
from __future__ import annotations

from torch import nn

from ..attention import NonLocalBlock, SpatialTransformer

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

# Papers by model family (Backbone.family) and by attention mechanism: (title, arXiv id).
FAMILY_PAPERS = {
    "resnet": ("Deep Residual Learning for Image Recognition", "arXiv:1512.03385"),
    "resnet_cifar": ("Deep Residual Learning for Image Recognition", "arXiv:1512.03385"),
    "preact_resnet": ("Identity Mappings in Deep Residual Networks", "arXiv:1603.05027"),
    "wide_resnet": ("Wide Residual Networks", "arXiv:1605.07146"),
    "resnext": ("Aggregated Residual Transformations for Deep Neural Networks", "arXiv:1611.05431"),
    "vgg": ("Very Deep Convolutional Networks for Large-Scale Image Recognition", "arXiv:1409.1556"),
    "DenseNet": ("Densely Connected Convolutional Networks", "arXiv:1608.06993"),
    "Xception": ("Xception: Deep Learning with Depthwise Separable Convolutions", "arXiv:1610.02357"),
    "ShuffleNetV1": ("ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
                     "arXiv:1707.01083"),
    "ShuffleNetV2": ("ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", "arXiv:1807.11164"),
    "GoogLeNet": ("Going Deeper with Convolutions", "arXiv:1409.4842"),
    "InceptionV3": ("Rethinking the Inception Architecture for Computer Vision", "arXiv:1512.00567"),
    "NASNet": ("Learning Transferable Architectures for Scalable Image Recognition", "arXiv:1707.07012"),
    "ran": ("Residual Attention Network for Image Classification", "arXiv:1704.06904"),
    "cnn_mnist": ("Spatial Transformer Networks", "arXiv:1506.02025"),
}
ATTENTION_PAPERS = {
    "se": ("Squeeze-and-Excitation Networks", "arXiv:1709.01507"),
    "cbam": ("CBAM: Convolutional Block Attention Module", "arXiv:1807.06521"),
    "eca": ("ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", "arXiv:1910.03151"),
    "gc": ("GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", "arXiv:1904.11492"),
    "non_local": ("Non-local Neural Networks", "arXiv:1711.07971"),
    "mhsa": ("Bottleneck Transformers for Visual Recognition", "arXiv:2101.11605"),
    "qkv": ("Attention Is All You Need", "arXiv:1706.03762"),
    "stn": ("Spatial Transformer Networks", "arXiv:1506.02025"),
}


def _for_channels(stats: tuple, in_chans: int) -> tuple:
    if len(stats) == in_chans:
        return stats
    return (round(sum(stats) / len(stats), 4),) * in_chans


def _module_name(model: nn.Module, target: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is target)


def _papers(model) -> list[tuple[str, str]]:
    family = model.family[3:] if model.family.startswith("st_") else model.family
    mechanisms = [model.placement.name] if model.placement.name else []
    mechanisms += [name for name, kind in (("non_local", NonLocalBlock), ("stn", SpatialTransformer))
                   if any(isinstance(m, kind) for m in model.modules())]
    papers = [FAMILY_PAPERS[family]] if family in FAMILY_PAPERS else []
    for name in mechanisms:
        if ATTENTION_PAPERS.get(name) and ATTENTION_PAPERS[name] not in papers:
            papers.append(ATTENTION_PAPERS[name])
    return papers


def data_config(model) -> dict:
    """`model.pretrained_cfg` of a Backbone (see the module docstring)."""
    chans, height, _ = model.input_size
    if height >= 224:
        inception = model.data_stats == "inception"
        mean, std = (INCEPTION_MEAN, INCEPTION_STD) if inception else (IMAGENET_MEAN, IMAGENET_STD)
        interpolation, crop_pct = ("bicubic" if inception else "bilinear"), model.crop_pct
    else:
        mean, std = (MNIST_MEAN, MNIST_STD) if height <= 28 else (CIFAR10_MEAN, CIFAR10_STD)
        interpolation, crop_pct = "bilinear", 1.0
    first_convs = model.first_conv_names()
    papers = _papers(model)
    cfg = {
        "architecture": getattr(model, "model_name", model.family),
        "input_size": tuple(model.input_size),
        "min_input_size": (chans, model.min_size, model.min_size),
        "interpolation": interpolation,
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "mean": _for_channels(mean, chans),
        "std": _for_channels(std, chans),
        "num_classes": model.num_classes,
        "first_conv": first_convs[0] if len(first_convs) == 1 else tuple(first_convs),
        "classifier": _module_name(model, model.get_classifier()),
        "paper_name": "; ".join(title for title, _ in papers),
        "paper_ids": tuple(arxiv for _, arxiv in papers),
    }
    cfg.update(getattr(model, "_pretrained_cfg_overrides", {}))
    return cfg
