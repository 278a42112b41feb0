"""What every attention module shares: input checks, and the two hooks the explanations use.

Not a mechanism of its own. Each module in this package subclasses `AttentionModule` so that

* a wrong input fails early with the module's name, the expected and the received shape
  (`check_input`), instead of a matmul error three calls deeper;
* `attnlab.capture(model)` can record what the module computed (gates, maps, affinities,
  warps): the module passes each such tensor through `self.observe(name, value)`. Outside a
  capture `recorder` is None and `observe` returns `value` untouched (one attribute test);
* the reliance study of the report can replace a gate by a constant (1 = attention removed,
  or its mean over the data) through `gate_override`, without another copy of the model;
* a residual block can ask for `scale_add(x, shortcut)` = module(x) + shortcut, which the gating
  modules (SE, ECA, CBAM) compute in one pass with `torch.addcmul` (see `_gating.py`).

`init_conv_weights` is the one convolution initialiser of attnlab (the backbones' and the
soft-mask branch's): it leaves nested attention modules to their own initialisation.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

Recorder = Callable[["AttentionModule", str, torch.Tensor], None]


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-d tensor laid out NHWC (channels_last) and not also NCHW-contiguous (one
    channel or a 1x1 map are both at once)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class AttentionModule(nn.Module):
    """Base class: channels-first (N, C, H, W) -> (N, C, H, W) modules with observable gates."""

    def __init__(self, channels: int):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"{type(self).__name__}: channels must be a positive int, got {channels!r}")
        self.channels = channels
        # Set by attnlab.capture; called as recorder(module, name, tensor).
        self.recorder: Optional[Recorder] = None
        # Set by the reliance study: {name: float | Tensor broadcastable to the gate}.
        self.gate_override: Optional[dict] = None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming this module, the expected and the received shape."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[2] == 0 or x.shape[3] == 0 or x.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (N, {self.channels}, H, W) with N, H, W >= 1, "
                f"got {tuple(x.shape)}"
            )

    def observe(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Report `value` to an active capture and apply a gate override if one is set."""
        if self.recorder is not None:
            self.recorder(self, name, value)
        if self.gate_override is not None and name in self.gate_override:
            o = self.gate_override[name]
            o = torch.as_tensor(o, dtype=value.dtype, device=value.device)
            return o.expand_as(value)
        return value

    def scale_add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """self(x) + residual (the residual sum of a block with attention at `standard`).
        Gating modules override `_fused_scale_add` to do both in one pass; forward hooks, a
        capture and gate overrides always take this plain path."""
        if not self._plain_call_needed():
            fused = self._fused_scale_add(x, residual)
            if fused is not None:
                return fused
        return self(x) + residual

    def _fused_scale_add(self, x: torch.Tensor, residual: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    def _plain_call_needed(self) -> bool:
        hooks = nn.modules.module
        return bool(self.recorder is not None or self.gate_override is not None or self._forward_hooks
                    or self._forward_pre_hooks or hooks._global_forward_hooks or hooks._global_forward_pre_hooks)


def init_conv_weights(module: nn.Module) -> None:
    """He (fan-out) init for the convolutions below `module`, BatchNorm / GroupNorm weight 1 and
    bias 0, as torchvision does; attention modules below it are skipped, so that their own
    initialisation (zero-init gates, identity STN) stays."""
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
        init_conv_weights(child)
