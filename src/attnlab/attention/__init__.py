"""Attention mechanisms for CNNs, one per file, and the one registry that creates them.

    create_attention("se", 256, reduction=8)  ->  SqueezeExcite(256, reduction=8)
    list_attention()                           ->  ["cbam", "eca", ...]

Every module maps (N, C, H, W) -> (N, C, H, W) and takes the channel count first. The registry
holds plug-in mechanisms only: the residual attention network's multi-unit attention module lives
with its family (models/ran.py); this package keeps its soft-mask branch (soft_mask.py). The
package imports nothing of attnlab outside itself.
"""
from __future__ import annotations

import difflib

from torch import nn

from .base import AttentionModule
from .cbam import CBAM, ChannelAttention, SpatialAttention
from .eca import EfficientChannelAttention, eca_kernel_size
from .gc import GlobalContextBlock
from .mhsa import MultiHeadSelfAttention2d
from .non_local import NonLocalBlock
from .qkv import QKVAttention
from .se import SqueezeExcite
from .soft_mask import SoftMaskBranch
from .stn import SpatialTransformer

_REGISTRY: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
    "gc": GlobalContextBlock,
    "non_local": NonLocalBlock,
    "mhsa": MultiHeadSelfAttention2d,
    "qkv": QKVAttention,
    "stn": SpatialTransformer,
}
_ALIASES = {"nl": "non_local", "nonlocal": "non_local", "bot": "mhsa"}


def list_attention() -> list[str]:
    """The registered attention names, sorted."""
    return sorted(_REGISTRY)


def resolve_attention_name(name: str) -> str:
    """The canonical registered name for `name` (aliases accepted); ValueError otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"attention name must be a str, got {type(name).__name__} {name!r}")
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY) + list(_ALIASES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attention {name!r}; known: {', '.join(list_attention())}.{hint}")
    return key


def create_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module registered as `name` for `channels` channels."""
    cls = _REGISTRY[resolve_attention_name(name)]
    return cls(channels, **kwargs)


__all__ = [
    "AttentionModule", "create_attention", "list_attention", "resolve_attention_name",
    "SqueezeExcite", "EfficientChannelAttention", "eca_kernel_size", "CBAM", "ChannelAttention",
    "SpatialAttention", "GlobalContextBlock", "NonLocalBlock", "MultiHeadSelfAttention2d",
    "QKVAttention", "SpatialTransformer", "SoftMaskBranch",
]
