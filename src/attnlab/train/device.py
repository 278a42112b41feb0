"""Which devices this process can use, the one check of a device name behind train, eval,
explain, bench and compare, and the one-line description of the machine a run records."""
from __future__ import annotations

import os
import platform
from pathlib import Path

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
    if device.type == "cpu" and device.index not in (None, 0):   # torch accepts any cpu:N and runs on the CPU
        raise ValueError(f"device {name!r} is not available: the CPU is one device, 'cpu' (or 'cpu:0'); "
                         f"available: auto, {', '.join(available)}")
    if device.type != "cpu" and (device.type not in available
                                 or (device.index is not None and str(device) not in available)):
        raise ValueError(f"device {name!r} is not available; available: auto, {', '.join(available)}")
    return device


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line naming this machine: platform, CPU, logical cores, the GPU of `device` (or of
    CUDA device 0 when it is None and CUDA is present), and the library versions."""
    import numpy

    from .._version import __version__

    device = torch.device(device) if device is not None else None
    gpu = ""
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        gpu = f", GPU {torch.cuda.get_device_name(device if device is not None and device.index is not None else 0)}"
    return (f"{platform.system()} {platform.release()} {platform.machine()}, {_cpu_model()}, "
            f"{os.cpu_count()} logical cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {numpy.__version__}, attnlab {__version__}")


__all__ = ["available_devices", "describe_machine", "resolve_device"]
