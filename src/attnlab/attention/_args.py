"""Argument checks shared by the attention modules (not a mechanism).

Each helper raises early, naming the module, the argument, the received value and what was
expected, so that a wrong setting fails at construction instead of deep inside a forward pass.
"""
from __future__ import annotations

import numbers
from typing import Sequence


def check_positive_int(owner: str, name: str, value) -> int:
    """`value` as an int >= 1, else a ValueError naming `owner` and `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_int(owner: str, name: str, value, minimum: int = 1) -> int:
    """`value` as an int >= `minimum`, else a ValueError naming `owner` and `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive_number(owner: str, name: str, value) -> float:
    """`value` as a finite number > 0, else a ValueError naming `owner` and `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise ValueError(f"{owner}: {name} must be a positive number, got {value!r}")
    return value


def check_choice(owner: str, name: str, value, options: Sequence[str]) -> str:
    """`value` if it is one of `options`, else a ValueError listing them."""
    if value not in options:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def reduced_channels(owner: str, channels: int, reduction, min_channels: int = 1) -> int:
    """The bottleneck width C / r of the SE, CBAM and GC transforms: floor(C / r), at least
    `min_channels`. A reduction larger than the channel count is refused: C / r < 1 hidden unit
    is not a bottleneck but a mistake (r = 16 on a 16-channel CIFAR stage is allowed: one unit)."""
    check_positive_number(owner, "reduction", reduction)
    check_positive_int(owner, "min_channels", min_channels)
    if reduction > channels:
        raise ValueError(f"{owner}: reduction {reduction!r} is larger than the {channels} channels; expected "
                         f"reduction <= channels (at least one hidden unit: C / r >= 1)")
    return max(int(min_channels), int(channels // reduction))
