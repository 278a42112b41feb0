"""What every dataset loader produces: `DatasetSplits` (a train and a test split plus what a model
and the augmentation need to know about them), the errors a dataset raises, and the channel
statistics the loaders share (`channel_stats`).

Not a paper module. Choices:

* Images are kept as uint8 (0..255) in memory (4x less memory and gather traffic than float) or
  float32 on the 0..1 scale; mean and std are per channel, on the 0..1 scale, from the train
  split.
* Every set needs at least two classes, and its train labels must use at least two: a
  one-class classifier scores 100% and learns nothing (`DatasetSplits.validate`).
* An error raised while a DataLoader worker decodes a sample reaches the main process with the
  one-line message it had in the worker (`ImageDecodeError`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


class DatasetError(ValueError):
    """A dataset that is missing, corrupt or inconsistent; the message says what was looked for,
    where, and how to get it."""


class ImageDecodeError(DatasetError):
    """An image file that cannot be decoded (or is too large to decode).

    Raised while a DataLoader worker decodes a sample, it reaches the main process with the
    message it had in the worker: torch re-raises a worker's exception as its class built from
    the worker's whole traceback text, and this class keeps only its own line of that text.
    """

    def __init__(self, message):
        super().__init__(_own_message(str(message), type(self)))


def _own_message(text: str, cls: type) -> str:
    """The exception's own message out of a re-raised worker traceback ("Caught X in DataLoader
    worker process 0.\nOriginal Traceback ...\n<module>.X: message"); other text unchanged."""
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    own = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
    return own[-1].strip() if own else text


@dataclass
class DatasetSplits:
    """A train and a test split plus what a model and the augmentation need to know about them.

    In-memory sets fill train_x/train_y/test_x/test_y; lazily decoded sets (image folders) leave
    them None and fill train_set/test_set (torch Datasets returning (uint8 CHW tensor, label)).
    """

    name: str
    train_x: Optional[torch.Tensor]
    train_y: Optional[torch.Tensor]
    test_x: Optional[torch.Tensor]
    test_y: Optional[torch.Tensor]
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    default_augment: dict = field(default_factory=lambda: {"crop_padding": 0, "flip": False})
    train_set: Optional[torch.utils.data.Dataset] = None
    test_set: Optional[torch.utils.data.Dataset] = None

    @property
    def in_memory(self) -> bool:
        return self.train_x is not None

    @property
    def num_train(self) -> int:
        return len(self.train_y) if self.in_memory else len(self.train_set)

    @property
    def num_test(self) -> int:
        return len(self.test_y) if self.in_memory else len(self.test_set)

    def validate(self) -> "DatasetSplits":
        """Check shapes, dtypes, label ranges and that there are at least two classes (in the
        set and among the train labels); DatasetError naming what is inconsistent."""
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise DatasetError(f"dataset {self.name!r} has {self.num_classes!r} class(es) "
                               f"({', '.join(map(str, self.classes)) or 'none'}); a classifier needs at least 2")
        if not self.in_memory:
            if self.train_set is None or self.test_set is None or len(self.train_set) == 0 or len(self.test_set) == 0:
                raise DatasetError(f"dataset {self.name!r}: empty train or test split")
            targets = getattr(self.train_set, "targets", None)
            if targets is not None:
                self._check_two_used(torch.as_tensor(targets, dtype=torch.int64))
            return self
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != tuple(self.image_size):
                raise DatasetError(f"dataset {self.name!r}: {split} images have shape {tuple(x.shape)}, "
                                   f"expected (N, {self.in_chans}, {self.image_size[0]}, {self.image_size[1]})")
            if x.dtype not in (torch.uint8, torch.float32):
                raise DatasetError(f"dataset {self.name!r}: {split} images have dtype {x.dtype}, expected uint8 or float32")
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise DatasetError(f"dataset {self.name!r}: {split} labels must be int64 of length {len(x)}, "
                                   f"got {y.dtype} {tuple(y.shape)}")
            if len(y) == 0:
                raise DatasetError(f"dataset {self.name!r}: the {split} split is empty")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.num_classes:
                raise DatasetError(f"dataset {self.name!r}: {split} labels span {lo}..{hi}, expected 0..{self.num_classes - 1}")
        self._check_two_used(self.train_y)
        return self

    def _check_two_used(self, train_labels: torch.Tensor) -> None:
        used = torch.unique(train_labels)
        if len(used) < 2:
            label = int(used[0]) if len(used) else None
            name = self.classes[label] if label is not None and 0 <= label < len(self.classes) else label
            raise DatasetError(f"dataset {self.name!r}: every train label is class {label} ({name}); a classifier "
                               f"needs examples of at least 2 classes")


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale (uint8 is divided by 255), float64 sums."""
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].to(torch.float64) / scale
        total += part.sum(dim=(0, 2, 3))
        total_sq += (part * part).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(max(v, 1e-3)) for v in std)

