"""Which arithmetic a training run uses: `resolve_precision("auto" | "fp32" | "bf16" | "fp16", device)`.

Not a paper module. `auto` (the default of `TrainConfig.precision`) picks, at run time:

* CUDA: bfloat16 autocast where the GPU runs it natively (Ampere and later:
  `torch.cuda.is_bf16_supported(including_emulation=False)`), which needs no loss scaling;
  float16 autocast with a `GradScaler` on older GPUs.
* CPU: bfloat16 autocast only where the CPU has bf16 matrix instructions (the `avx512_bf16` or
  `amx_bf16` flags of /proc/cpuinfo) *and* a short probe confirms that a bf16 convolution step is
  faster than the float32 one (a flag is not proof: a CPU may decode bf16 instructions at a
  fraction of their rate). Without those instructions bf16 is emulated and several times slower
  than float32, so `auto` keeps float32 and does not probe. Where the flags cannot be read
  (no /proc/cpuinfo) the probe alone decides.
* Anything else (mps, xpu): float32.

The choice comes back as a `PrecisionChoice` with a one-sentence reason, which the Trainer prints
at start and writes into config.yaml and final.json. An explicit `bf16` or `fp16` is honoured on
any device (a CPU without bf16 units runs it, slowly); `fp16` always uses a GradScaler.

Attention math that must stay in float32 under autocast (the softmax of non-local affinities,
sigmoid gates, the spatial transformer's grid) does so inside the modules themselves
(`attnlab.attention.base.float32_math`); the loss is computed in float32.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 must beat float32 by this factor in the probe to be chosen: below it, the small gain does
# not repay bf16's coarser rounding.
PROBE_MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run computes in: `name` (fp32, bf16 or fp16), on `device_type`, and why."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
        return self.name == "fp16"

    def autocast(self):
        """The context a forward pass runs in: autocast to `dtype`, or nothing for fp32."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> Optional[torch.amp.GradScaler]:
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None


def cpu_bf16_flags() -> Optional[bool]:
    """True when /proc/cpuinfo lists bf16 matrix instructions (avx512_bf16 or amx_bf16), False
    when it lists the CPU's flags without them, None when there is no such file to read."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _conv_step_seconds(dtype: Optional[torch.dtype], device: torch.device, repeats: int = 5) -> float:
    """Best time of a small channels_last convolution forward + backward, in float32 or under
    autocast to `dtype`."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, 16, 16, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    w.requires_grad_(True)
    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    best = float("inf")
    for _ in range(repeats + 1):       # the first run warms the kernels up and is not counted
        start = time.perf_counter()
        with ctx:
            y = F.conv2d(x, w, padding=1)
        y.float().sum().backward()
        w.grad = None
        best = min(best, time.perf_counter() - start)
    return best


_PROBES: dict[tuple[str, int], float] = {}


def probe_bf16_speedup(device: torch.device | str = "cpu") -> float:
    """float32 time / bf16-autocast time of a small convolution step on `device` (> 1: bf16 is
    faster). Measured once per device and thread count in a process (about a second)."""
    device = torch.device(device)
    key = (str(device), torch.get_num_threads())
    if key not in _PROBES:
        fp32 = _conv_step_seconds(None, device)
        bf16 = _conv_step_seconds(torch.bfloat16, device)
        _PROBES[key] = fp32 / bf16 if bf16 > 0 else 0.0
    return _PROBES[key]


def resolve_precision(requested: str, device: torch.device | str,
                      probe: Callable[[torch.device], float] = probe_bf16_speedup,
                      cpu_flags: Callable[[], Optional[bool]] = cpu_bf16_flags) -> PrecisionChoice:
    """The precision a run on `device` uses when `requested` (see the module docstring).
    `probe` and `cpu_flags` are the detectors (replaceable, e.g. to force a probe to fail)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    kind = device.type
    if requested != "auto":
        return PrecisionChoice(requested, kind, f"{requested} requested")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return PrecisionChoice("bf16", kind, "auto: the GPU runs bf16 natively (no loss scaling needed)")
        return PrecisionChoice("fp16", kind, "auto: the GPU has no native bf16; fp16 with loss scaling")
    if kind != "cpu":
        return PrecisionChoice("fp32", kind, f"auto: fp32 on {kind}")
    flags = cpu_flags()
    if flags is False:
        return PrecisionChoice("fp32", kind, "auto: the CPU has no bf16 matrix instructions (avx512_bf16 / amx_bf16)")
    speedup = probe(device)
    where = "the CPU lists bf16 instructions" if flags else "the CPU's flags are unknown"
    if speedup >= PROBE_MIN_SPEEDUP:
        return PrecisionChoice("bf16", kind, f"auto: {where} and a probe ran bf16 {speedup:.2f}x faster than fp32")
    return PrecisionChoice("fp32", kind, f"auto: {where} but a probe ran bf16 only {speedup:.2f}x as fast "
                                         f"as fp32 (needs {PROBE_MIN_SPEEDUP}x)")


__all__ = ["PRECISIONS", "PrecisionChoice", "cpu_bf16_flags", "probe_bf16_speedup", "resolve_precision"]
