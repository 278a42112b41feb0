"""Which devices this process can use, and the one check of a device name behind train, eval,
explain, bench and compare."""
from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The device names this process can use: cpu, then each CUDA device, mps and xpu when present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        names += ["xpu"] + [f"xpu:{i}" for i in range(xpu.device_count())]
    return names


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch.device that `name` names; "auto" is CUDA when available, else the CPU. A name
    that is no device, or a device that is not present, raises a ValueError naming it and the
    available ones (the one check behind train, eval, explain, bench and compare)."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be a name like 'cpu' or 'cuda:0', got {type(name).__name__} {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device name; available: auto, {', '.join(available)}") from None
    if device.type != "cpu" and (device.type not in available
                                 or (device.index is not None and str(device) not in available)):
        raise ValueError(f"device {name!r} is not available; available: auto, {', '.join(available)}")
    return device


__all__ = ["available_devices", "resolve_device"]
