"""The CIFAR python pickle batches (Krizhevsky 2009, "Learning Multiple Layers of Features from
Tiny Images"): the loader of CIFAR-10 and CIFAR-100.

Not a paper module. The batches are read with a restricted unpickler that allows only the numpy
array reconstructors those files need; any other global is refused, so a file can never run
code. Class names come from the meta file when it is there and has one name per class.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .entry import DatasetEntry
from .splits import DatasetError


@dataclass(frozen=True)
class CifarLayout:
    """The files of one CIFAR set: the folder the archive extracts to, the train and test batch
    files, the meta file, and the keys of the labels and of the class names in them."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str


CIFAR10_LAYOUT = CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                             "batches.meta", "labels", "label_names")
CIFAR100_LAYOUT = CifarLayout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batches: only the numpy array reconstructors are allowed as
    globals. Anything else (os.system, builtins.eval, ...) raises instead of running."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays "
                                         "are allowed in a dataset pickle")
        return super().find_class(module, name)


def safe_unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            OSError) as err:
        raise DatasetError(f"cannot read pickle batch {path}: {err}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict batch, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_cifar(entry: DatasetEntry, data_dir, *, layout: CifarLayout) -> tuple:
    """The pickle batches of `entry`, laid out as `layout`, found in `data_dir`/<layout.folder> or
    `data_dir` itself, as (train_x, train_y, test_x, test_y, classes): uint8 (N, 3, 32, 32)."""
    base, how_to_get = entry.name, entry.how_to_get
    train_files, test_files = list(layout.train_files), list(layout.test_files)
    candidates = [] if data_dir is None else [Path(data_dir) / layout.folder, Path(data_dir)]
    folder = next((c for c in candidates if all((c / f).is_file() for f in train_files + test_files)), None)
    if folder is None:
        where = ", ".join(str(c) for c in candidates) or "(no --data-dir given)"
        raise DatasetError(f"dataset {base!r} not found: looked for {', '.join(train_files + test_files)} in "
                           f"{where}; to get it: {how_to_get}")
    label_key = layout.label_key
    chans, side = entry.in_chans, entry.side

    def read(files):
        xs, ys = [], []
        for fname in files:
            batch = safe_unpickle(folder / fname)
            if "data" not in batch or label_key not in batch:
                raise DatasetError(f"{folder / fname}: missing 'data' or '{label_key}' entry; to get it: {how_to_get}")
            data = np.asarray(batch["data"])
            labels = np.asarray(batch[label_key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != chans * side * side or len(data) != len(labels):
                raise DatasetError(f"{folder / fname}: data {data.shape} / labels {labels.shape} are not "
                                   f"(N, {chans * side * side}) / (N,): corrupt; to get it: {how_to_get}")
            xs.append(data.astype(np.uint8).reshape(-1, chans, side, side))
            ys.append(labels)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    classes = entry.class_names
    if (folder / layout.meta_file).is_file():
        meta = safe_unpickle(folder / layout.meta_file)
        names = meta.get(layout.names_key)
        if isinstance(names, list) and len(names) == len(classes):
            classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    return train_x, train_y, test_x, test_y, classes
