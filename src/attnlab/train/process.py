"""Process-wide settings a training run changes, each set for the run and restored after it.

    with training_settings(threads=1, deterministic=False, device=torch.device("cpu")):
        ...   # the training loop

* `torch.set_num_threads(threads)` when `threads` is given; the previous count comes back. When it
  is not, the Trainer sets the count of `FreeCores` before each epoch (the cores that other
  processes leave free), restored after the run.
* deterministic algorithms (`deterministic=True`): torch.use_deterministic_algorithms (warn only),
  cuDNN deterministic and not benchmarking, CUBLAS_WORKSPACE_CONFIG when unset; all restored.
* SIGINT / SIGTERM (`stop_signals`): while the run holds them, a signal is recorded instead of
  stopping the process, so that the loop can finish its step and write a checkpoint; the previous
  handlers come back.

One setting cannot be restored and is therefore opt-in: `keep_freed_memory` (glibc's malloc keeps
freed blocks for reuse), applied by the Trainer on the CPU only when the environment variable
ATTNLAB_KEEP_FREED_MEMORY is 1.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch

KEEP_FREED_MEMORY_ENV = "ATTNLAB_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep and reuse freed blocks of up to 32 MiB instead of returning them
    to the system at every free. Returns True when the setting was applied.

    PyTorch's CPU tensors come from malloc, and glibc serves blocks above its mmap threshold
    (128 KiB at start) with fresh pages from the kernel: every activation and gradient of a
    training step is then page-faulted and zeroed again at each step (ResNet-20, batch 128:
    about 2,300 page faults a step; with this setting none once the heap has grown). The
    mallopt(3) calls below are what the environment variables MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ do, applied from inside the process. The cost: the heap keeps the
    peak working set of a step.

    The setting lasts for the life of the process: mallopt has no getter, so it cannot be
    restored. A library call (the Trainer) therefore applies it only when
    ATTNLAB_KEEP_FREED_MEMORY=1; the processes attnlab owns (the `attnlab` command, a study's
    worker processes) apply it at start, where it paid about 10% of a small run's wall time
    (ResNet-8 on the digits, 6 epochs, one thread). ATTNLAB_KEEP_FREED_MEMORY=0 turns this
    function into a no-op (False) for every caller.
    Linux with glibc only (elsewhere a no-op, False).
    """
    global _FREED_MEMORY_KEPT
    if _FREED_MEMORY_KEPT or os.environ.get(KEEP_FREED_MEMORY_ENV, "") == "0" or not sys.platform.startswith("linux"):
        return _FREED_MEMORY_KEPT
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl or another C library
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _FREED_MEMORY_KEPT = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
    return _FREED_MEMORY_KEPT


_FREED_MEMORY_KEPT = False


def keep_freed_memory_requested() -> bool:
    """True when ATTNLAB_KEEP_FREED_MEMORY=1 asks the Trainer to call `keep_freed_memory`."""
    return os.environ.get(KEEP_FREED_MEMORY_ENV, "") == "1"


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (`os.sched_getaffinity`, else every CPU of the machine)."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def check_threads(threads: Optional[int], what: str = "threads") -> Optional[int]:
    """`threads` if it is None or 1 .. the number of usable CPUs, else a ValueError naming it: more
    threads than CPUs only wait for each other, and OpenMP runtimes fail on absurd counts."""
    cores = len(usable_cpus())
    if threads is not None and not 1 <= threads <= cores:
        raise ValueError(f"{what} = {threads!r} is out of range; expected 1 .. {cores}, the CPUs this process may use")
    return threads


@contextmanager
def num_threads(threads: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block (None: left as it is)."""
    check_threads(threads)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_jiffies(cpus: set[int]) -> Optional[tuple[int, int]]:
    """(busy, total) clock ticks of the CPUs `cpus` since boot, from /proc/stat; None without it."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)      # idle + iowait
        busy += sum(ticks[:8]) - idle                              # user .. steal (guest time is inside user)
        total += sum(ticks[:8])
    return (busy, total) if total else None


class FreeCores:
    """How many of this process's CPU cores other processes leave free: the thread count that
    keeps a training run fast on a busy machine.

    With every core's thread in each parallel region, one core shared with another process makes
    every region wait for the thread that got half a core: a run beside one CPU-bound process on
    2 cores trained at a fraction of its idle speed, while one thread kept most of it. So the
    Trainer (when `threads` is not set and the run is not deterministic) asks `threads()` before
    each epoch: the cores this process may run on (`os.sched_getaffinity`) minus the cores the
    others kept busy since the last call, measured from the per-core tick counts of /proc/stat
    minus this process's own CPU time. The first call samples `first_window` seconds. Where
    /proc/stat is missing, every core counts as free.
    """

    def __init__(self, first_window: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.cpus = usable_cpus()
        self.cores = max(1, len(self.cpus))
        self.first_window, self.clock = first_window, clock
        self.ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._mark = None

    def _sample(self):
        jiffies = _cpu_jiffies(self.cpus)
        return None if jiffies is None else (self.clock(), jiffies[0], time.process_time())

    def others_busy(self) -> Optional[float]:
        """Cores kept busy by other processes since the last call (the first call waits
        `first_window` seconds to measure); None where /proc/stat cannot be read."""
        if self._mark is None:
            self._mark = self._sample()
            if self._mark is None:
                return None
            time.sleep(self.first_window)
        now = self._sample()
        if now is None or self._mark is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._mark, now
        self._mark = now
        wall = t1 - t0
        if wall <= 0:
            return 0.0
        others = (busy1 - busy0) / self.ticks_per_second - (own1 - own0)
        return min(float(self.cores), max(0.0, others / wall))

    def threads(self) -> int:
        """The cores left free, rounded, at least 1."""
        others = self.others_busy()
        if others is None:
            return self.cores
        return max(1, min(self.cores, int(self.cores - others + 0.5)))


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """With `enabled`, deterministic algorithms (warn only where none exists), cuDNN deterministic
    and not benchmarking, and CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset; all restored after."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cublas_set = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
        if cublas_set:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@contextmanager
def stop_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM call `on_signal(signum)` instead of stopping the
    process; the previous handlers come back after it. Only the main thread can install signal
    handlers: elsewhere the block runs with the handlers as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, lambda signum, frame: on_signal(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextmanager
def training_settings(threads: Optional[int], deterministic: bool, device: torch.device) -> Iterator[None]:
    """Every process-wide setting of a training run (see the module docstring), restored after."""
    if device.type == "cpu" and keep_freed_memory_requested():
        keep_freed_memory()
    with num_threads(threads), deterministic_algorithms(deterministic):
        yield


__all__ = ["FreeCores", "check_threads", "usable_cpus", "keep_freed_memory", "keep_freed_memory_requested", "num_threads", "deterministic_algorithms",
           "stop_signals", "training_settings"]
