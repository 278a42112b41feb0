"""A generated set of uniform noise images with random labels, for tests and timing: nothing to
learn, nothing to download.

Not a paper module. It is the one set that depends on `load_dataset`'s `seed`; its size, image
shape and class count are `load_dataset`'s `synthetic_*` options. Images are float32 in 0..1.
"""
from __future__ import annotations

import torch

from .entry import DatasetEntry
from .splits import DatasetSplits, channel_stats


def load_synthetic(entry: DatasetEntry, data_dir, size, *, seed: int, synthetic_train: int, synthetic_test: int,
                   synthetic_shape, synthetic_classes: int) -> DatasetSplits:
    """`synthetic_train` + `synthetic_test` images of shape `synthetic_shape` (C, H, W), or
    resized to `size` (H, W), with labels uniform in 0..synthetic_classes-1, from `seed`."""
    n_train, n_test, num_classes = synthetic_train, synthetic_test, synthetic_classes
    chans, h, w = synthetic_shape
    if size is not None:
        h, w = size
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, chans, h, w, generator=gen)
    y = torch.randint(0, num_classes, (n_train + n_test,), generator=gen)
    mean, std = channel_stats(x[:n_train])
    return DatasetSplits(entry.name, x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes, chans,
                         (h, w), mean, std, [str(i) for i in range(num_classes)],
                         {"crop_padding": 4 if min(h, w) >= 16 else 1, "flip": entry.flip})
