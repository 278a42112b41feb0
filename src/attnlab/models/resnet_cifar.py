"""He et al.'s CIFAR ResNet with its depth and width as arguments, for small studies and for the
capacity control of the effect report.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2:
6n + 2 layers (a 3x3 stem, three stages of n basic blocks, global average pool, linear), stage
widths {16, 32, 64}, option A (zero-padding) shortcuts. `resnet_cifar(depth=20, width=16)`
builds exactly `resnet20` (models/resnet.py, whose ResNet class and blocks it reuses).

Two switches the paper does not have, and why:

* `width`: stage widths {w, 2w, 4w} instead of {16, 32, 64}. The report's capacity control widens
  the baseline until its parameter count matches an attention variant's
  (`attnlab.train.compare.match_width`); a width multiplier is the finest knob a ResNet offers.
* `depth` may be any 6n + 2 >= 8 (the paper uses 20...1202); `attnlab compare`'s quick preset
  trains a ResNet-8 so that 7 variants x 3 seeds fit in a few CPU minutes.
"""
from __future__ import annotations

from .resnet import BasicBlock, ResNet
from .registry import register_model


@register_model
def resnet_cifar(depth: int = 20, width: int = 16, **kwargs) -> ResNet:
    """CIFAR ResNet of `depth` = 6n + 2 layers and stage widths (width, 2 width, 4 width)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet_cifar: depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"resnet_cifar: width must be a positive int (16 = the paper), got {width!r}")
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("family", "resnet_cifar")
    return ResNet(BasicBlock, (n, n, n), planes=(width, 2 * width, 4 * width), stem="small", stem_width=width,
                  **kwargs)
