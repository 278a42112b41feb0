"""What every attention module shares: input checks, and the two hooks the explanations use.

Not a mechanism of its own. Each module in this package subclasses `AttentionModule` so that

* a wrong input fails early with the module's name, the expected and the received shape
  (`check_input`), instead of a matmul error three calls deeper;
* `attnlab.capture(model)` can record what the module computed (gates, maps, affinities,
  warps): the module passes each such tensor through `self.observe(name, value)`. Outside a
  capture `recorder` is None and `observe` returns `value` untouched (one attribute test);
* each module declares what it observes in `signals`, {name: Signal(kind, neutral)}: the kind
  of tensor (a per-channel gate, a spatial map, attention weights, ...; the explanations pick
  their inputs by kind) and its neutral value, the constant that removes the module when it
  replaces the tensor (1 for a gate, 0 for an added term, the identity for a warp; None where no
  constant does). `observables` is the tuple of the names;
* the reliance study of the report can replace an observed tensor by a constant (its neutral
  value: attention removed, or its mean over the data) through `gate_override`, without another
  copy of the model;

Mixed precision: under `torch.autocast` (bf16 or fp16) the convolutions run in the low
precision, but the small, sensitive attention math does not: each module computes its gates
(pooled descriptor -> MLP -> sigmoid), softmax weights (non-local affinities, GC context weights)
and the spatial transformer's sampling inside `float32_math(x)` on float32 inputs (`upcast`), and casts the
result back to the map's dtype only where it multiplies the map. That math is tiny next to the
convolutions (vectors of C values, or HW x HW weights computed once), so it costs little.

`init_conv_weights` is the one convolution initialiser of attnlab (the backbones' and the
soft-mask branch's): it leaves nested attention modules to their own initialisation.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Union

import torch
import torch.fx
from torch import nn

from ..checks import check_positive_int

Recorder = Callable[["AttentionModule", str, torch.Tensor], None]

# The kinds of tensor a module observes (`Signal.kind`).
CHANNEL = "channel"      # (N, C, 1, 1): one value per channel, scaling or shifting it (SE gate, GC transform)
SPATIAL = "spatial"      # (N, 1 or C, H, W): a gate or mask in [0, 1] over the positions (CBAM, RAN)
POOLING = "pooling"      # (N, 1, H, W): weights over the positions that sum to 1 (GC context weights)
AFFINITY = "affinity"    # (N, Q, Hk, Wk): the attention weights of Q query points over the positions
RESPONSE = "response"    # (N, C, H, W): the term a residual module adds to its input
WARP = "warp"            # (N, 2, 3) or (N, 3, 3): the parameters of a spatial transform


@dataclass(frozen=True)
class Signal:
    """One tensor a module passes through `observe`: its kind (one of the constants above) and
    its neutral value, the constant that removes the module when it replaces the tensor: a
    number, a function of the observed tensor giving one (the identity warp of its shape), or
    None when no constant removes the module through this tensor (attention weights)."""

    kind: str
    neutral: Union[float, Callable[[torch.Tensor], torch.Tensor], None] = None

    def neutral_for(self, observed: torch.Tensor):
        """The neutral value for `observed` (a number or a tensor broadcastable to it), or None."""
        return self.neutral(observed) if callable(self.neutral) else self.neutral


def is_traced(x) -> bool:
    """True while `x` is a torch.fx Proxy (symbolic tracing): checks on shapes and layouts, which
    a Proxy cannot answer, are skipped then."""
    return isinstance(x, torch.fx.Proxy)


def float32_math(x: torch.Tensor):
    """A context in which autocast is off on `x`'s device: operations inside run in the dtype of
    their inputs, which the caller casts to float32 (see the module docstring). Under torch.fx
    tracing, which records no context managers, a context that does nothing."""
    if is_traced(x):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 when it is in a lower precision (bf16, fp16); float32 and float64 as they are.
    A torch.fx graph, traced without dtypes, always casts to float32 here."""
    if is_traced(x):
        return x.float()
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-d tensor laid out NHWC (channels_last) and not also NCHW-contiguous (one
    channel or a 1x1 map are both at once). False under torch.fx tracing, whose graph then takes
    the layout-agnostic path."""
    if is_traced(x):
        return False
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class AttentionModule(nn.Module):
    """Base class: channels-first (N, C, H, W) -> (N, C, H, W) modules with observable gates."""

    # What the module observes: {name: Signal}; a subclass declares its own.
    signals: Mapping[str, Signal] = MappingProxyType({})

    def __init__(self, channels: int):
        super().__init__()
        self.channels = check_positive_int(type(self).__name__, "channels", channels)
        # Set by attnlab.capture; called as recorder(module, name, tensor).
        self.recorder: Optional[Recorder] = None
        # Set by the reliance study: {name: float | Tensor broadcastable to the gate}.
        self.gate_override: Optional[dict] = None

    @property
    def observables(self) -> tuple[str, ...]:
        """The names this module passes through `observe` (the keys of `signals`)."""
        return tuple(self.signals)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming this module, the expected and the received shape (skipped
        under torch.fx tracing)."""
        if is_traced(x):
            return
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
