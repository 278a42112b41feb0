"""The table of datasets, and `load_dataset`: datasets as tensors in memory (or, for image folders,
a lazily decoded `Dataset`), one loader per real file format.

    splits = load_dataset("digits")                 # scikit-learn's bundled 8x8 digits
    splits = load_dataset("fashion-mnist-rts")      # IDX files + the STN paper's RTS distortion
    splits.train_x  # (N, C, H, W) uint8 (0..255) or float32 (0..1); splits.mean / std per channel

Every dataset is one `DatasetEntry` of the table below (name, loader, native size, classes,
aliases, distorted variants, default flip, where to look, how to get the files); the loaders
live with their format: IDX in idx.py, CIFAR pickles in cifar.py, class folders in
imagefolder.py, scikit-learn's digits in digits.py, the generated set in synthetic.py. Adding a
dataset in a known format is one `register_dataset(DatasetEntry(...))` line here; a new format
adds its loader function.

Not a paper module. Choices:

* The distorted variants '<set>-<kind>' (data/distort.py) use a fixed `distortion_seed` (train
  and test distorted independently, with different streams), so that runs with different seeds
  see the same data and compare; `seed` only drives the synthetic set. 'distorted-digits' is the
  RTS variant ('digits-rts'), the STN paper's main distortion. A small set draws several
  distortions of each training image (`DatasetEntry.distortion_copies`; the digits: 4, so 5,748
  training images) and of each test image (`distortion_test_copies`; the digits: 10 draws of
  each of the 360 held-out digits, 3,600 test images), from separate streams.
* `image_size=` resizes once, at load time (bilinear, antialiased); for a distorted set it is the
  final canvas, and the source is resized so that the distortion's canvas lands on it.
* The last in-memory set loaded is kept, so that many runs in one process read and distort it
  once (below, `_CACHE`).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, load_cifar
from .digits import load_digits
from .distort import CANVAS_RATIO, DISTORTIONS, canvas_size, distort
from .entry import DatasetEntry
from .idx import load_idx
from .imagefolder import load_imagefolder
from .splits import DatasetError, DatasetSplits, ImageDecodeError, channel_stats
from .synthetic import load_synthetic

# ---------------------------------------------------------------------------- the table
DATASETS: dict[str, DatasetEntry] = {}   # canonical name -> entry, filled by register_dataset below


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    """Add `entry` to the table; ValueError if its name or an alias is taken already."""
    if not isinstance(entry, DatasetEntry):
        raise TypeError(f"register_dataset: expected a DatasetEntry, got {type(entry).__name__}")
    for field in ("distortion_copies", "distortion_test_copies"):
        copies = getattr(entry, field)
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ValueError(f"register_dataset: {field} must be an int >= 1, got {copies!r}")
    names = [entry.name, *entry.aliases, *(alias for alias, _ in entry.variant_aliases)]
    upper = [name for name in names if name != name.lower()]
    if upper:
        raise ValueError(f"register_dataset: names are lower case (lookups are case-insensitive), got "
                         f"{', '.join(map(repr, upper))}")
    known = set(DATASETS) | set(_aliases()) | {name for known in DATASETS.values() for name, _ in _variants(known)}
    taken = [name for name in names if name in known]
    if taken:
        raise ValueError(f"register_dataset: {', '.join(map(repr, taken))} already name a dataset")
    DATASETS[entry.name] = entry
    return entry


def _aliases() -> dict[str, str]:
    """Every alias -> the canonical name it stands for (a set or one of its distorted variants)."""
    out = {}
    for entry in DATASETS.values():
        out.update({alias: entry.name for alias in entry.aliases})
        out.update({alias: f"{entry.name}-{kind}" for alias, kind in entry.variant_aliases})
    return out


def _variants(entry: DatasetEntry) -> list[tuple[str, str]]:
    """(name, distortion kind) of each distorted variant of `entry`."""
    return [(f"{entry.name}-{kind}", kind) for kind in DISTORTIONS] if entry.distortable else []


register_dataset(DatasetEntry(
    "digits", load_digits, in_chans=1, side=8, num_classes=10, distortable=True, distortion_copies=4,
    distortion_test_copies=10, reads_files=False,
    variant_aliases=(("distorted-digits", "rts"),)))
register_dataset(DatasetEntry(
    "mnist", partial(load_idx, torchvision_folder="MNIST"), in_chans=1, side=28, num_classes=10,
    distortable=True, system_dirs=(Path("/usr/share/datasets/mnist"),),
    how_to_get="put the four IDX files (train-images-idx3-ubyte[.gz], ...) from https://yann.lecun.com/exdb/mnist/ "
               "in --data-dir"))
register_dataset(DatasetEntry(
    "fashion-mnist", partial(load_idx, torchvision_folder="FashionMNIST"), in_chans=1, side=28, num_classes=10,
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    aliases=("fashion_mnist", "fmnist"), distortable=True, flip=True,
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    how_to_get="on Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs "
               "/usr/share/datasets/fashion-mnist), or put the four IDX files from "
               "https://github.com/zalandoresearch/fashion-mnist in --data-dir"))
register_dataset(DatasetEntry(
    "cifar10", partial(load_cifar, layout=CIFAR10_LAYOUT), in_chans=3, side=32, num_classes=10,
    aliases=("cifar-10",), flip=True,
    how_to_get="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
               "extract it in --data-dir (it makes cifar-10-batches-py/)"))
register_dataset(DatasetEntry(
    "cifar100", partial(load_cifar, layout=CIFAR100_LAYOUT), in_chans=3, side=32, num_classes=100,
    aliases=("cifar-100",), flip=True,
    how_to_get="download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
               "extract it in --data-dir (it makes cifar-100-python/)"))
register_dataset(DatasetEntry(
    "imagefolder", load_imagefolder, in_chans=3, side=224, num_classes=None, aliases=("image-folder",),
    flip=True, makes_splits=True,
    how_to_get="pass --data-dir DIR with DIR/train/<class>/*.png|jpg and DIR/val/<class>/... "
               "(or DIR/test/<class>/...)"))
register_dataset(DatasetEntry(
    "synthetic", load_synthetic, in_chans=3, side=32, num_classes=10, flip=True, makes_splits=True,
    reads_files=False))


# ---------------------------------------------------------------------------- names
def list_datasets(pattern: str = "*") -> list[str]:
    """Every dataset name `load_dataset` accepts (distorted variants included), sorted."""
    names = set(DATASETS)
    for entry in DATASETS.values():
        names |= {alias for alias, _ in entry.variant_aliases} | {name for name, _ in _variants(entry)}
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def resolve_dataset_name(name: str) -> tuple[str, str, Optional[str]]:
    """(canonical name, base set, distortion or None); ValueError naming the accepted names."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__} {name!r}")
    key = _aliases().get(name.lower(), name.lower())
    if key in DATASETS:
        return key, key, None
    for entry in DATASETS.values():
        for variant, kind in _variants(entry):
            if key == variant:
                return key, entry.name, kind
    close = difflib.get_close_matches(key, list_datasets(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(list_datasets())}.{hint}")


def _parse_size(image_size) -> Optional[tuple[int, int]]:
    if image_size is None:
        return None
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        h, w = image_size
    else:
        h = w = image_size
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return int(h), int(w)


def dataset_info(name: str, image_size=None) -> dict:
    """What a dataset will look like without loading it: in_chans, image_size (H, W) and
    num_classes (None when only the files tell, as for image folders). Used to validate a model
    against a dataset before any work starts."""
    canonical, base, kind = resolve_dataset_name(name)
    size = _parse_size(image_size)
    entry = DATASETS[base]
    if size is None:
        out = canvas_size(kind, entry.side) if kind else entry.side
        size = (out, out)
    return {"name": canonical, "in_chans": entry.in_chans, "image_size": size, "num_classes": entry.num_classes}


# ---------------------------------------------------------------------------- public entry point
def load_dataset(name: str, data_dir: Optional[str | os.PathLike] = None, seed: int = 0,
                 image_size=None, *, distortion_seed: int = 0, synthetic_train: int = 2048,
                 synthetic_test: int = 512, synthetic_shape: Sequence[int] = (3, 32, 32),
                 synthetic_classes: int = 10) -> DatasetSplits:
    """Load dataset `name` (see `list_datasets()`) as a `DatasetSplits`.

    `data_dir`: where the files are (MNIST / Fashion-MNIST are also found in their Debian
    location); `seed`: seeds the synthetic set only (splits and distortions are fixed so that
    seeds compare); `image_size`: an int or (H, W) to resize to once, at load time (for a
    distorted set: the final canvas size).
    """
    canonical, base, kind = resolve_dataset_name(name)
    size = _parse_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path, got {type(data_dir).__name__} {data_dir!r}")
    entry = DATASETS[base]
    if data_dir is not None and not entry.reads_files:
        raise DatasetError(f"dataset {canonical!r} reads no files (it comes with the installed packages or is "
                           f"generated), so data_dir {str(data_dir)!r} would be ignored; leave it out")
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise DatasetError(f"data_dir {str(data_dir)!r} is a file; expected the folder that holds the files of "
                           f"dataset {canonical!r}")
    if entry.makes_splits:
        return entry.loader(entry, data_dir, size, seed=seed, synthetic_train=synthetic_train,
                            synthetic_test=synthetic_test, synthetic_shape=synthetic_shape,
                            synthetic_classes=synthetic_classes).validate()
    key = (canonical, str(Path(data_dir).resolve()) if data_dir is not None else None, size, distortion_seed)
    cached = _CACHE.get(key)
    if cached is not None and _cache_is_pristine(cached):
        return dataclasses.replace(cached, classes=list(cached.classes), default_augment=dict(cached.default_augment))
    splits = _load_in_memory(canonical, entry, kind, data_dir, size, image_size, distortion_seed)
    _CACHE.clear()                      # keep one set: they can be large
    _CACHE[key] = splits
    return dataclasses.replace(splits, classes=list(splits.classes), default_augment=dict(splits.default_augment))


# The last in-memory set loaded, so that many runs in one process (attnlab compare) read and
# distort it once. Its tensors are shared read-only: training indexes them (a copy), never
# writes them; a set whose tensors were modified in place anyway is reloaded.
_CACHE: dict = {}


def _cache_is_pristine(splits: "DatasetSplits") -> bool:
    return all(getattr(t, "_version", 0) == 0 for t in (splits.train_x, splits.train_y, splits.test_x, splits.test_y))


def _load_in_memory(canonical, entry: DatasetEntry, kind, data_dir, size, image_size,
                    distortion_seed) -> DatasetSplits:
    train_x, train_y, test_x, test_y, classes = entry.loader(entry, data_dir)
    if kind is not None:
        source_side = train_x.shape[-1]
        final = size[0] if size is not None else canvas_size(kind, source_side)
        if size is not None and size[0] != size[1]:
            raise ValueError(f"dataset {canonical!r}: distorted sets are square, got image_size {image_size!r}")
        # Resize the source so that the distortion's canvas lands exactly on the final size.
        src = max(1, int(round(final / CANVAS_RATIO[kind])))
        train_x, test_x = _resize(train_x, (src, src)), _resize(test_x, (src, src))
        copies = entry.distortion_copies
        if copies > 1:   # independent draws of each training image (one stream: the copies differ)
            train_x, train_y = train_x.repeat(copies, 1, 1, 1), train_y.repeat(copies)
        test_copies = entry.distortion_test_copies
        if test_copies > 1:
            test_x, test_y = test_x.repeat(test_copies, 1, 1, 1), test_y.repeat(test_copies)
        train_x = distort(train_x, kind, seed=2 * distortion_seed, out_size=final)
        test_x = distort(test_x, kind, seed=2 * distortion_seed + 1, out_size=final)
    elif size is not None:
        train_x, test_x = _resize(train_x, size), _resize(test_x, size)
    h, w = train_x.shape[-2:]
    mean, std = channel_stats(train_x)
    padding = 0 if kind else max(1, int(round(min(h, w) / 8)))
    augment = {"crop_padding": padding, "flip": entry.flip}
    return DatasetSplits(canonical, train_x, train_y, test_x, test_y, len(classes), train_x.shape[1],
                         (int(h), int(w)), mean, std, classes, augment).validate()


def _resize(x: torch.Tensor, size: tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    """Images (N, C, H, W) resized to `size` (H, W), bilinear, antialiased when shrinking; uint8
    stays uint8 (rounded)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    parts = []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].float()
        antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        part = F.interpolate(part, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        parts.append(part.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else part)
    return torch.cat(parts)


__all__ = ["DATASETS", "DatasetEntry", "DatasetError", "DatasetSplits", "ImageDecodeError", "channel_stats",
           "dataset_info", "list_datasets", "load_dataset", "register_dataset", "resolve_dataset_name"]
