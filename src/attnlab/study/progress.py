"""Progress lines of a study: one when a phase starts, then one per run or variant with the
elapsed time, the phase's ETA and what comes after.

`progress` is what `run_compare` takes: True (lines on stderr), False (silence) or a function
that receives each line.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional


def _stderr_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def reporter(progress) -> Optional[Callable[[str], None]]:
    """The function that receives each progress line: `progress` itself when it is callable,
    a line on stderr for True, None (silence) for False."""
    if callable(progress):
        return progress
    return _stderr_line if progress else None


def say(progress, text: str) -> None:
    report = reporter(progress)
    if report is not None:
        report(text)


def duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 1 h 02 min: the length of a phase as a reader wants it."""
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Phase:
    """Progress of one phase of `total` items: a line when it starts, then one per item with the
    elapsed time and the phase's ETA (from the mean time per item so far) and what comes after."""

    def __init__(self, progress, name: str, total: int, what: str, then: str = ""):
        self.progress, self.name, self.total, self.then = progress, name, total, then
        self.done, self.start = 0, time.time()
        say(progress, f"{what} ...")

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        left = elapsed / self.done * (self.total - self.done)
        eta = f"ETA {self.name} {duration(left)}" if self.done < self.total else f"{self.name} done"
        then = f", then {self.then}" if self.then else ""
        say(self.progress, f"{self.name} [{self.done}/{self.total}] {text} "
                           f"(elapsed {duration(elapsed)}, {eta}{then})")


__all__ = ["Phase", "duration", "reporter", "say"]
