"""scikit-learn's bundled 8 x 8 digits (1,797 images of 10 classes): no files to download.

Not a paper module. The split is a fixed stratified 80/20 split (1,437 / 360) that does not depend
on the run's seed, so runs with different seeds see the same data and compare: the split of
``sklearn.model_selection.train_test_split(test_size=0.2, stratify=labels, random_state=0)``, kept
here as `TEST_ROWS` so that it stays fixed whatever scikit-learn's version. The 0..16 pixel values
are scaled to 0..255 and kept as uint8.

The images are read from the CSV file scikit-learn ships (the one its `load_digits` reads) without
importing scikit-learn, whose import (scipy.stats and more) costs seconds at the start of every
process that trains on the digits; without that file, scikit-learn's `load_digits` reads them.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from .entry import DatasetEntry
from .splits import DatasetError

NUM_IMAGES = 1797
# The rows of the test split, as a bit mask over the 1,797 images (numpy.packbits, hex, rows in
# file order): the 360 rows train_test_split(test_size=0.2, stratify=labels, random_state=0) puts
# in the test set.
TEST_ROWS = (
    "000004883524104000064100934205001a00080100240028062c12001000940a009019120420f8a0028110a000"
    "080a8820441524494240a00a0000004004d80000818020004805c400104008a0100005404800301000020ec409"
    "000224840083a8013c20a6980a0000000b08400804a0184802024041c1008004404684376a8102160044800040"
    "42a0a4180a5000840b8561c608108008004c80c02004068e00010882008100380803c008190000100e01008410"
    "a0210033282904c044c080680e0102830082008822a6402c24042108a860809081a00c02820242120138a41500"
)


def load_digits(entry: DatasetEntry, data_dir) -> tuple:
    """(train_x, train_y, test_x, test_y, classes) of the fixed split; `data_dir` is not used."""
    pixels, labels, idx_train, idx_test = _digits_arrays()
    return pixels[idx_train], labels[idx_train], pixels[idx_test], labels[idx_test], entry.class_names


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple:
    """The 1,797 digits as uint8 tensors and the fixed split's indices (read once per process;
    callers index them, which copies, so the cached tensors are never modified)."""
    images, labels = _read_digits()                              # 0..16, 0..9
    is_test = np.unpackbits(np.frombuffer(bytes.fromhex(TEST_ROWS), np.uint8))[:NUM_IMAGES].astype(bool)
    pixels = torch.from_numpy(np.round(images * (255.0 / 16.0))).to(torch.uint8)[:, None]
    return (pixels, torch.from_numpy(labels), torch.from_numpy(np.flatnonzero(~is_test)),
            torch.from_numpy(np.flatnonzero(is_test)))


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64, labels (1797,) int64): each row of scikit-learn's
    digits.csv.gz is an image's 64 pixels, row by row, then its label."""
    spec = importlib.util.find_spec("sklearn")          # finds the package without importing it
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    rows = np.loadtxt(csv, delimiter=",", dtype=np.float64, ndmin=2)
    if rows.shape != (NUM_IMAGES, 65):   # the split's mask and the 8 x 8 shape hold for this file only
        raise DatasetError(f"{csv}: {rows.shape[0]} rows of {rows.shape[1]} values; expected the digits' "
                           f"{NUM_IMAGES} rows of 65 (64 pixels, then the label)")
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
