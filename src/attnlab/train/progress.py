"""Progress of a training run: a bar redrawn in place on a terminal, one lasting line per epoch.

On a terminal the bar of the current epoch (count, images/s, ETA, loss and learning rate) is
redrawn at most every `interval` seconds and each finished epoch leaves one line; in a pipe or a
log file nothing is drawn per step, so a log holds only the epoch lines and no carriage returns.
"""
from __future__ import annotations

import sys
import time


def _is_terminal(stream) -> bool:
    """True when `stream` is an interactive terminal (a pipe, a file or a closed stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class ProgressBar:
    """Progress of one epoch on stderr (or `stream`); silent when disabled.

    On a terminal the bar (count, images/s, ETA, extra fields) is redrawn in place at most every
    `interval` seconds, and `finish(text)` replaces it by one lasting line. Anywhere else (a pipe,
    a log file) nothing is drawn per step, so that a log holds no carriage returns: only the
    lines given to `finish`, one per epoch."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, interval: float = 0.25,
                 stream=None, width: int = 24):
        self.total, self.desc, self.enabled, self.interval, self.width = total, desc, enabled, interval, width
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and _is_terminal(self.stream)     # draw the bar (a terminal only)
        self.count, self.images, self.start, self.last_draw = 0, 0, time.perf_counter(), 0.0
        self.fields: dict = {}
        self.drawn = 0                # characters of the bar now on the line; 0 = none
        self.closed = False

    def update(self, steps: int = 1, images: int = 0, **fields) -> None:
        self.count += steps
        self.images += images
        self.fields.update(fields)
        now = time.perf_counter()
        if self.live and (now - self.last_draw >= self.interval or self.count >= self.total):
            self.last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        frac = min(1.0, self.count / self.total) if self.total else 1.0
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
        extra = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.fields.items())
        line = (f"{self.desc} [{bar}] {self.count}/{self.total} {self.images / elapsed:,.0f} img/s "
                f"ETA {format_seconds(eta)} {extra}")[:200].ljust(max(80, self.drawn))
        self.stream.write("\r" + line)
        self.stream.flush()
        self.drawn = len(line)

    def finish(self, text: str) -> None:
        """End the bar with the lasting line `text` (on a terminal it overwrites the bar)."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        self.stream.write(("\r" + text.ljust(self.drawn) if self.drawn else text) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar where it stands (a stop or an error in the middle of the epoch)."""
        if self.live and not self.closed:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
        self.closed = True


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def epoch_line(epoch: int, epochs: int, row: dict, elapsed: float, epochs_timed: int) -> str:
    """The lasting line of finished epoch `epoch` of `epochs` (a metrics row of the Trainer);
    `elapsed` seconds were spent on the `epochs_timed` epochs this process trained, from which
    the ETA of the rest follows."""
    left = (epochs - epoch) * elapsed / max(1, epochs_timed)
    return (f"epoch {epoch}/{epochs}: train loss {row['train_loss']:.4f}, "
            f"train acc {100 * row['train_acc']:.2f}%, test acc {100 * row['test_acc']:.2f}%, "
            f"{row['images_per_s']:,.0f} img/s, elapsed {format_seconds(elapsed)}"
            + (f", ETA {format_seconds(left)}" if epoch < epochs else ""))


__all__ = ["ProgressBar", "epoch_line", "format_seconds"]
