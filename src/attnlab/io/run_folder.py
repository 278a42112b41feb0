"""A training run's folder: the names of its files, its writer's lock and the reader of its metrics log.

Not a paper module. One training run writes one folder (config.yaml, metrics.jsonl, final.json,
checkpoints/: `CONFIG_FILE`, `METRICS_FILE`, `FINAL_FILE`, `checkpoint.CHECKPOINT_SUBDIR`); two
writers in the same folder would interleave their files. So the writer holds a lock for the life
of the run:

    with lock_run_folder("runs/se"):       # RunFolderInUse (one line naming the holder) if taken
        ...                                 # write the run

The lock is `fcntl.flock` on the file `.attnlab-run.lock` in the folder: exclusive, never
waited for, released when the writer ends, and by the operating system when it crashes or is
killed (nothing stale to clean up by hand). The lock file holds the holder's pid, host and start
time, which is what a second writer is told. The file itself stays in the folder. Where `fcntl`
does not exist (Windows) there is no lock. Readers (eval, explain, report) take no lock.

`read_metrics` is the one reader of metrics.jsonl (resume and the report): a last line cut
short by a writer killed while appending it is dropped; any other line that is not a JSON
object is an error naming the file and the line.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from .checkpoint import CheckpointError, read_regular_file

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

LOCK_NAME = ".attnlab-run.lock"
CONFIG_FILE = "config.yaml"        # the run's TrainConfig
METRICS_FILE = "metrics.jsonl"     # one JSON object per epoch (read_metrics)
FINAL_FILE = "final.json"          # written when the run ends: test accuracy, seconds, epochs, ...
PREDICTIONS_FILE = "test_predictions.json"   # at the end: {"labels": [...], "predictions": [...]}, test-set order
RUN_FILES = (CONFIG_FILE, METRICS_FILE, FINAL_FILE, PREDICTIONS_FILE)   # what a run writes beside checkpoints/


class RunFolderInUse(CheckpointError):
    """Another live process holds the run folder's lock."""


class RunFolderLock:
    """A held lock on a run folder (see `lock_run_folder`); `release()` or leave the `with`."""

    def __init__(self, path: Path, fd: Optional[int]):
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a lock dropped without release() still goes
        try:
            self.release()
        except OSError:
            pass


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return (f"pid {int(info['pid'])} on host {str(info['host'])[:100]}, running since "
                f"{str(info['started'])[:40]}")
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"


def lock_run_folder(folder: str | os.PathLike) -> RunFolderLock:
    """Take the writer's lock of run folder `folder` (which must exist) without waiting.

    Raises `RunFolderInUse` (a CheckpointError, so a ValueError) naming the holder when another
    process holds it, CheckpointError when the lock file is not a plain file."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None:
        return RunFolderLock(path, None)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        raise CheckpointError(f"run folder {Path(folder)}: cannot open its lock file {path} "
                              f"({err.strerror or err}); it must be a plain file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunFolderInUse(f"run folder {Path(folder)} is in use by another attnlab run ({holder}); wait "
                                 "for it to end, or write to another folder") from None
        raise CheckpointError(f"run folder {Path(folder)}: cannot lock {path} ({err.strerror or err})") from None
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:
        pass   # the lock holds without its note (disk full): a second writer is told "not recorded"
    return RunFolderLock(path, fd)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl file (one JSON object per line), in order.

    The last non-empty line is dropped when it is not valid JSON (a writer killed while appending
    it); any other line that is not a JSON object raises CheckpointError (a ValueError) naming the
    file and the line number. A missing file has no records."""
    path = Path(path)
    try:
        text = read_regular_file(path).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise CheckpointError(f"metrics log {path} cannot be read ({err.strerror or err})") from None
    lines = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if index == len(lines) - 1:
                break   # cut short by a writer killed mid-append
            raise CheckpointError(f"metrics log {path}, line {number}: not a JSON record ({err.msg}); only the last "
                                  "line may be cut short. Repair or delete that line") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"metrics log {path}, line {number}: a JSON {type(record).__name__}, expected an "
                                  "object with one epoch's metrics")
        records.append(record)
    return records
