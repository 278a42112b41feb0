"""Argument checks shared by every layer of attnlab (the bottom of the import graph: it imports
nothing of attnlab).

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


def check_bool(owner: str, name: str, value) -> bool:
    """`value` if it is True or False (not 0 / 1 or a string), else a TypeError naming it."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_number(owner: str, name: str, value, low: float | None = None, high: float | None = None) -> float:
    """`value` as a finite real number in [low, high] (either bound optional), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value or abs(value) == float("inf"):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if low is not None and high is not None else (
            f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{owner}: {name} must be {bounds}, got {value!r}")
    return float(value)
