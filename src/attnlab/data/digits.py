"""scikit-learn's bundled 8 x 8 digits (1,797 images of 10 classes): no files to download.

Not a paper module. The split is a fixed stratified 80/20 split (1,437 / 360) that does not depend
on the run's seed, so runs with different seeds see the same data and compare. The 0..16 pixel
values are scaled to 0..255 and kept as uint8.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .entry import DatasetEntry


def load_digits(entry: DatasetEntry, data_dir) -> tuple:
    """(train_x, train_y, test_x, test_y, classes) of the fixed split; `data_dir` is not used."""
    pixels, labels, idx_train, idx_test = _digits_arrays()
    return pixels[idx_train], labels[idx_train], pixels[idx_test], labels[idx_test], entry.class_names


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple:
    """The 1,797 digits as uint8 tensors and the fixed split's indices (read once per process;
    callers index them, which copies, so the cached tensors are never modified)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float64)          # 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                           random_state=0)        # fixed: the same for every seed
    pixels = torch.from_numpy(np.round(images * (255.0 / 16.0))).to(torch.uint8)[:, None]
    labels_t = torch.from_numpy(labels)
    return pixels, labels_t, torch.from_numpy(np.sort(idx_train)), torch.from_numpy(np.sort(idx_test))
