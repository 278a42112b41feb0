"""The bottleneck width of the attention transforms (a check particular to attention; the generic
argument checks are in attnlab.checks)."""
from __future__ import annotations

from ..checks import check_positive_int, check_positive_number


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
