"""Datasets as tensors in memory (or, for image folders, a lazily decoded `Dataset`), one loader
per real file format.

    splits = load_dataset("digits")                 # scikit-learn's bundled 8x8 digits
    splits = load_dataset("fashion-mnist-rts")      # IDX files + the STN paper's RTS distortion
    splits.train_x  # (N, C, H, W) uint8 (0..255) or float32 (0..1); splits.mean / std per channel

Not a paper module. Formats follow their sources: IDX (LeCun et al., MNIST; Xiao et al.,
Fashion-MNIST: magic 0x0000 08 <ndim>, big-endian int32 sizes, then the bytes), the CIFAR python
pickle batches (Krizhevsky 2009), ImageNet-style class folders. Deviations and choices:

* The digits split is a fixed stratified 80/20 split (1,437 / 360) that does not depend on the
  run's seed, so runs with different seeds see the same data and compare; likewise the
  distortions of the distorted variants use a fixed `distortion_seed` (train and test distorted
  independently, with different streams). `seed` only drives the synthetic set.
* 'distorted-digits' is the RTS variant ('digits-rts'), the STN paper's main distortion.
* CIFAR pickles are read with a restricted unpickler that allows only the numpy array
  reconstructors those files need; any other global is refused, so a file can never run code.
* Images are kept as uint8 (0..255) in memory (4x less memory and gather traffic than float);
  mean and std are per channel, on the 0..1 scale, from the train split. `image_size=` resizes
  once, at load time (bilinear, antialiased).
* IDX files of every type code load: integer images (ubyte, sbyte, short, int) must hold values
  in 0..255 and become uint8; float images (float, double) must be finite and on the 0..1 scale
  (the convention of attnlab's own float sets) and are kept as float32, both splits then. Labels
  must be whole numbers in 0..classes-1 whatever their type. Anything else is refused, naming
  the file, rather than converted into something else (a float image cast to uint8 would be all
  zeros). The header is checked against the file's length and against the set's image size
  (28 x 28 for MNIST and Fashion-MNIST) before the data are read.
* Every set needs at least two classes, and its train labels must use at least two: a
  one-class classifier scores 100% and learns nothing.
* Image folders: files are decoded on access; an image larger than `MAX_IMAGE_PIXELS`
  (8192 x 8192) is refused from its header, before any pixel is decoded (decompression bombs),
  and a file that does not decode is refused naming it, with the same one-line message in a
  DataLoader worker as in the main process.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import os
import pickle
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import distort as _distort

SYSTEM_DATA_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
                    "mnist": Path("/usr/share/datasets/mnist")}
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
HOW_TO_GET = {
    "fashion-mnist": "on Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs "
                     "/usr/share/datasets/fashion-mnist), or put the four IDX files from "
                     "https://github.com/zalandoresearch/fashion-mnist in --data-dir",
    "mnist": "put the four IDX files (train-images-idx3-ubyte[.gz], ...) from "
             "https://yann.lecun.com/exdb/mnist/ in --data-dir",
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
               "extract it in --data-dir (it makes cifar-10-batches-py/)",
    "cifar100": "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
                "extract it in --data-dir (it makes cifar-100-python/)",
    "imagefolder": "pass --data-dir DIR with DIR/train/<class>/*.png|jpg and DIR/val/<class>/... "
                   "(or DIR/test/<class>/...)",
}


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


# ---------------------------------------------------------------------------- registry of names
_BASE_SETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
_DISTORTABLE = ("digits", "mnist", "fashion-mnist")
_ALIASES = {"distorted-digits": "digits-rts", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar-100": "cifar100", "image-folder": "imagefolder"}
NATIVE = {  # (in_chans, side, num_classes) before resizing / distortion
    "digits": (1, 8, 10), "mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100), "imagefolder": (3, 224, None), "synthetic": (3, 32, 10),
}


def list_datasets(pattern: str = "*") -> list[str]:
    """Every dataset name `load_dataset` accepts (distorted variants included), sorted."""
    import fnmatch

    names = set(_BASE_SETS) | {"distorted-digits"}
    names |= {f"{base}-{kind}" for base in _DISTORTABLE for kind in _distort.DISTORTIONS}
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def resolve_dataset_name(name: str) -> tuple[str, str, Optional[str]]:
    """(canonical name, base set, distortion or None); ValueError naming the accepted names."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__} {name!r}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key in _BASE_SETS:
        return key, key, None
    for base in _DISTORTABLE:
        for kind in _distort.DISTORTIONS:
            if key == f"{base}-{kind}":
                return key, base, kind
    import difflib

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
    chans, side, classes = NATIVE[base]
    if size is None:
        out = _distort.canvas_size(kind, side) if kind else side
        size = (out, out)
    return {"name": canonical, "in_chans": chans, "image_size": size, "num_classes": classes}


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
    if base == "imagefolder":
        return _load_imagefolder(data_dir, size).validate()
    if base == "synthetic":
        return _load_synthetic(seed, size, synthetic_train, synthetic_test, synthetic_shape,
                               synthetic_classes).validate()
    key = (canonical, str(Path(data_dir).resolve()) if data_dir is not None else None, size, distortion_seed)
    cached = _CACHE.get(key)
    if cached is not None and _cache_is_pristine(cached):
        return dataclasses.replace(cached, classes=list(cached.classes), default_augment=dict(cached.default_augment))
    splits = _load_in_memory(canonical, base, kind, data_dir, size, image_size, distortion_seed)
    _CACHE.clear()                      # keep one set: they can be large
    _CACHE[key] = splits
    return dataclasses.replace(splits, classes=list(splits.classes), default_augment=dict(splits.default_augment))


# The last in-memory set loaded, so that many runs in one process (attnlab compare) read and
# distort it once. Its tensors are shared read-only: training indexes them (a copy), never
# writes them; a set whose tensors were modified in place anyway is reloaded.
_CACHE: dict = {}


def _cache_is_pristine(splits: "DatasetSplits") -> bool:
    return all(getattr(t, "_version", 0) == 0 for t in (splits.train_x, splits.train_y, splits.test_x, splits.test_y))


def _load_in_memory(canonical, base, kind, data_dir, size, image_size, distortion_seed) -> DatasetSplits:
    loaders = {"digits": _load_digits, "mnist": _load_idx_set, "fashion-mnist": _load_idx_set,
               "cifar10": _load_cifar, "cifar100": _load_cifar}
    train_x, train_y, test_x, test_y, classes = loaders[base](base, data_dir)
    if kind is not None:
        source_side = train_x.shape[-1]
        final = size[0] if size is not None else _distort.canvas_size(kind, source_side)
        if size is not None and size[0] != size[1]:
            raise ValueError(f"dataset {canonical!r}: distorted sets are square, got image_size {image_size!r}")
        # Resize the source so that the distortion's canvas lands exactly on the final size.
        src = max(1, int(round(final / _distort.CANVAS_RATIO[kind])))
        train_x, test_x = _resize(train_x, (src, src)), _resize(test_x, (src, src))
        train_x = _distort.distort(train_x, kind, seed=2 * distortion_seed, out_size=final)
        test_x = _distort.distort(test_x, kind, seed=2 * distortion_seed + 1, out_size=final)
    elif size is not None:
        train_x, test_x = _resize(train_x, size), _resize(test_x, size)
    h, w = train_x.shape[-2:]
    mean, std = channel_stats(train_x)
    padding = 0 if kind else max(1, int(round(min(h, w) / 8)))
    augment = {"crop_padding": padding, "flip": base in ("fashion-mnist", "cifar10", "cifar100")}
    return DatasetSplits(canonical, train_x, train_y, test_x, test_y, len(classes), train_x.shape[1],
                         (int(h), int(w)), mean, std, classes, augment).validate()


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


def _resize(x: torch.Tensor, size: tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    parts = []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].float()
        antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        part = F.interpolate(part, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        parts.append(part.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else part)
    return torch.cat(parts)


# ---------------------------------------------------------------------------- digits (embedded)
def _load_digits(base: str, data_dir) -> tuple:
    pixels, labels_t, idx_train, idx_test = _digits_arrays()
    classes = [str(i) for i in range(10)]
    return pixels[idx_train], labels_t[idx_train], pixels[idx_test], labels_t[idx_test], classes


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple:
    """The 1,797 digits as uint8 tensors and the fixed split's indices (read once per process;
    callers index them, which copies, so the cached tensors are never modified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)          # 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                           random_state=0)        # fixed: the same for every seed
    pixels = torch.from_numpy(np.round(images * (255.0 / 16.0))).to(torch.uint8)[:, None]
    labels_t = torch.from_numpy(labels)
    return pixels, labels_t, torch.from_numpy(np.sort(idx_train)), torch.from_numpy(np.sort(idx_test))


# ---------------------------------------------------------------------------- IDX (MNIST family)
IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}    # type code -> big-endian numpy dtype
MAX_IDX_BYTES = 1 << 32   # data in one IDX file: far above any real set (MNIST's train images: 47 MB)


def read_idx(path: str | os.PathLike, shape: Optional[Sequence[Optional[int]]] = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array of its own type, native byte order.

    `shape`: the expected shape, None for a size that may be anything (e.g. (None, 28, 28)); the
    header is checked against it, and against the file's length, before the data are read (a
    gzip stream is read only as far as the header says, so a small file cannot expand into
    memory without limit). DatasetError naming the file when it is not IDX, has another shape,
    is truncated, or its gzip stream is damaged.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw_fh:
            gz = raw_fh.read(2) == b"\x1f\x8b"
            raw_fh.seek(0)
            if gz:
                with gzip.GzipFile(fileobj=raw_fh, mode="rb") as fh:
                    return _read_idx_stream(fh, path, shape, None)
            return _read_idx_stream(raw_fh, path, shape, os.fstat(raw_fh.fileno()).st_size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({err}); delete it and download it "
                           "again") from None
    except OSError as err:
        raise DatasetError(f"cannot read IDX file {path}: {err.strerror or err}") from None


def _read_idx_stream(fh, path: Path, shape, file_size: Optional[int]) -> np.ndarray:
    head = fh.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DatasetError(f"{path} is not an IDX file (magic number {head.hex() or 'empty'}, expected "
                           "0000 <type> <ndim>)")
    code, ndim = head[2], head[3]
    if code not in IDX_TYPES:
        raise DatasetError(f"{path}: unknown IDX type code 0x{code:02x}; IDX types are 0x08 ubyte, 0x09 sbyte, "
                           "0x0b short, 0x0c int, 0x0d float, 0x0e double")
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header gives 0 dimensions")
    raw_dims = fh.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header; download it again")
    dims = struct.unpack(f">{ndim}i", raw_dims)
    if any(d < 0 for d in dims):
        raise DatasetError(f"{path}: IDX header gives a negative size, shape {dims}: corrupt; download it again")
    if shape is not None and (len(dims) != len(shape) or any(e is not None and d != e for d, e in zip(dims, shape))):
        want = ", ".join("N" if e is None else str(e) for e in shape)
        raise DatasetError(f"{path}: IDX header gives shape {dims}, expected ({want}{',' if len(shape) == 1 else ''})")
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DatasetError(f"{path}: IDX header gives shape {dims} ({expected} bytes of data), more than the "
                           f"{MAX_IDX_BYTES} bytes an IDX file may hold here: corrupt; download it again")
    header = 4 + 4 * ndim
    if file_size is not None and file_size - header != expected:
        raise DatasetError(f"{path}: IDX header says shape {dims} ({expected} bytes of data) but the file holds "
                           f"{file_size - header} bytes: truncated or corrupt; download it again")
    data = bytearray()
    while len(data) < expected:
        chunk = fh.read(min(expected - len(data), 1 << 24))
        if not chunk:
            break
        data += chunk
    if len(data) < expected or (file_size is None and fh.read(1)):
        held = "fewer" if len(data) < expected else "more"
        raise DatasetError(f"{path}: IDX header says shape {dims} ({expected} bytes of data) but the file holds "
                           f"{held}: truncated or corrupt; download it again")
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _idx_pixels(x: np.ndarray, path: Path) -> np.ndarray:
    """IDX images as uint8 (integer types, values 0..255) or float32 (float types, finite values
    on the 0..1 scale); DatasetError naming the file for anything else."""
    if x.size == 0:
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DatasetError(f"{path}: IDX images stored as {x.dtype} hold non-finite values (NaN or infinity)")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            hint = " (they look like 0..255: divide them by 255)" if lo >= 0 and hi <= 255 else ""
            raise DatasetError(f"{path}: IDX images stored as {x.dtype} hold values {lo:g}..{hi:g}; float images "
                               f"must be on the 0..1 scale{hint}")
        return x.astype(np.float32)
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        raise DatasetError(f"{path}: IDX images stored as {x.dtype} hold values {lo}..{hi}, expected 0..255")
    return x.astype(np.uint8)


def _idx_labels(y: np.ndarray, path: Path, classes: Sequence[str]) -> np.ndarray:
    """IDX labels as int64 in 0..len(classes)-1 (whole numbers of any IDX type); DatasetError
    naming the file and the first bad value otherwise."""
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise DatasetError(f"{path}: IDX labels stored as {y.dtype} hold {float(y[bad][0])!r}, expected whole "
                               f"numbers 0..{len(classes) - 1}")
    labels = y.astype(np.int64)
    out = (labels < 0) | (labels >= len(classes))
    if out.any():
        raise DatasetError(f"{path}: label {int(labels[out][0])} out of range 0..{len(classes) - 1} "
                           f"({len(classes)} classes)")
    return labels


def _find_idx(base: str, data_dir) -> tuple[Path, dict[str, Path]]:
    candidates = []
    if data_dir is not None:
        root = Path(data_dir)
        candidates += [root, root / base, root / base.replace("-", "_"), root / base / "raw",
                       root / "FashionMNIST" / "raw" if base == "fashion-mnist" else root / "MNIST" / "raw"]
    if base in SYSTEM_DATA_DIRS:
        candidates.append(SYSTEM_DATA_DIRS[base])
    for folder in candidates:
        found = {}
        for key, stem in IDX_FILES.items():
            for fname in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
                if (folder / fname).is_file():
                    found[key] = folder / fname
                    break
        if len(found) == 4:
            return folder, found
    where = ", ".join(str(c) for c in candidates) or "(no --data-dir given)"
    names = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    raise DatasetError(f"dataset {base!r} not found: looked for {names} in {where}; to get it: {HOW_TO_GET[base]}")


def _load_idx_set(base: str, data_dir) -> tuple:
    folder, files = _find_idx(base, data_dir)
    _, side, _ = NATIVE[base]
    classes = FASHION_CLASSES if base == "fashion-mnist" else [str(i) for i in range(10)]
    hint = f"; to get it: {HOW_TO_GET[base]}"

    def read(key: str, shape) -> np.ndarray:
        try:
            return read_idx(files[key], shape)
        except DatasetError as err:
            raise DatasetError(f"dataset {base!r}: {err}{hint}") from None

    out = {}
    for split in ("train", "test"):
        x_path, y_path = files[f"{split}_x"], files[f"{split}_y"]
        x, y = read(f"{split}_x", (None, side, side)), read(f"{split}_y", (None,))
        if len(x) != len(y) or len(x) == 0:
            raise DatasetError(f"dataset {base!r}: {x_path} holds {len(x)} images but {y_path} holds {len(y)} "
                               f"labels (expected the same number, at least 1){hint}")
        try:
            out[f"{split}_x"], out[f"{split}_y"] = _idx_pixels(x, x_path), _idx_labels(y, y_path, classes)
        except DatasetError as err:
            raise DatasetError(f"dataset {base!r}: {err}") from None
    used = np.unique(out["train_y"])
    if len(used) < 2:
        raise DatasetError(f"dataset {base!r}: every label in {files['train_y']} is class {int(used[0])} "
                           f"({classes[int(used[0])]}); a classifier needs examples of at least 2 classes")
    if any(out[k].dtype == np.float32 for k in ("train_x", "test_x")):   # one scale for both splits
        for key in ("train_x", "test_x"):
            if out[key].dtype == np.uint8:
                out[key] = out[key].astype(np.float32) / np.float32(255)
    tensors = [torch.from_numpy(out[key][:, None] if key.endswith("_x") else out[key])
               for key in ("train_x", "train_y", "test_x", "test_y")]
    return (*tensors, classes)


# ---------------------------------------------------------------------------- CIFAR pickles
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


def _load_cifar(base: str, data_dir) -> tuple:
    folder_name = "cifar-10-batches-py" if base == "cifar10" else "cifar-100-python"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if base == "cifar10" else ["train"]
    test_files = ["test_batch"] if base == "cifar10" else ["test"]
    meta_file, label_key, names_key = (("batches.meta", "labels", "label_names") if base == "cifar10"
                                       else ("meta", "fine_labels", "fine_label_names"))
    candidates = [] if data_dir is None else [Path(data_dir) / folder_name, Path(data_dir)]
    folder = next((c for c in candidates if all((c / f).is_file() for f in train_files + test_files)), None)
    if folder is None:
        where = ", ".join(str(c) for c in candidates) or "(no --data-dir given)"
        raise DatasetError(f"dataset {base!r} not found: looked for {', '.join(train_files + test_files)} in "
                           f"{where}; to get it: {HOW_TO_GET[base]}")

    def read(files):
        xs, ys = [], []
        for fname in files:
            batch = safe_unpickle(folder / fname)
            if "data" not in batch or label_key not in batch:
                raise DatasetError(f"{folder / fname}: missing 'data' or '{label_key}' entry; to get it: {HOW_TO_GET[base]}")
            data = np.asarray(batch["data"])
            labels = np.asarray(batch[label_key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
                raise DatasetError(f"{folder / fname}: data {data.shape} / labels {labels.shape} are not "
                                   f"(N, 3072) / (N,): corrupt; to get it: {HOW_TO_GET[base]}")
            xs.append(data.astype(np.uint8).reshape(-1, 3, 32, 32))
            ys.append(labels)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    num = 10 if base == "cifar10" else 100
    classes = [str(i) for i in range(num)]
    if (folder / meta_file).is_file():
        meta = safe_unpickle(folder / meta_file)
        names = meta.get(names_key)
        if isinstance(names, list) and len(names) == num:
            classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    return train_x, train_y, test_x, test_y, classes


# ---------------------------------------------------------------------------- synthetic
def _load_synthetic(seed: int, size, n_train: int, n_test: int, shape, num_classes: int) -> DatasetSplits:
    chans, h, w = shape
    if size is not None:
        h, w = size
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, chans, h, w, generator=gen)
    y = torch.randint(0, num_classes, (n_train + n_test,), generator=gen)
    mean, std = channel_stats(x[:n_train])
    return DatasetSplits("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes, chans,
                         (h, w), mean, std, [str(i) for i in range(num_classes)],
                         {"crop_padding": 4 if min(h, w) >= 16 else 1, "flip": True})


# ---------------------------------------------------------------------------- image folders
MAX_IMAGE_PIXELS = 8192 * 8192   # largest image (width x height) an image folder decodes: 64 Mpx


def decode_image(path: str | os.PathLike, size: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """One image file as a uint8 (H, W, 3) RGB array resized to `size` (H, W).

    An image of more than `max_pixels` pixels is refused from its header, before anything is
    decoded (a few-kilobyte PNG can declare gigapixels); a file that is not an image, is
    truncated or does not decode is refused too: ImageDecodeError naming the file.
    """
    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():      # PIL warns, then raises, above its own limit: both refuse
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(f"image {path} is {width} x {height} = {width * height} pixels, more than "
                                           f"the {max_pixels} an image folder accepts: refused (a possible "
                                           "decompression bomb); shrink or remove it")
                img = img.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8).copy()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(f"image {path} is larger than the {max_pixels} pixels an image folder accepts "
                               f"({' '.join(str(err).split())}): refused (a possible decompression bomb); shrink "
                               "or remove it") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(f"cannot decode image {path}: no image format recognises it (empty, truncated in its "
                               "header, or not an image): replace or remove it") from None
    except Exception as err:  # noqa: BLE001 - any decoder failure on a user's file is that file's fault
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ImageDecodeError(f"cannot decode image {path}: {reason}; replace or remove the file") from None


class ImageFolderDataset(torch.utils.data.Dataset):
    """ImageNet-style folders: root/<class>/<image>. Decoded with PIL on access (in DataLoader
    workers) by `decode_image`, converted to RGB and resized to `size`; returns (uint8 (3, H, W)
    tensor, label). A file that cannot be decoded raises ImageDecodeError naming it, with the
    same one-line message in a worker as in the main process."""

    def __init__(self, root: Path, classes: list[str], size: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS):
        self.root, self.classes, self.size, self.max_pixels = Path(root), classes, size, max_pixels
        self.samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(classes):
            folder = self.root / cls
            if folder.is_dir():
                self.samples += [(p, label) for p in sorted(folder.iterdir())
                                 if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order (no file is opened)."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        arr = decode_image(path, self.size, self.max_pixels)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), label


def _load_imagefolder(data_dir, size) -> DatasetSplits:
    if data_dir is None:
        raise DatasetError(f"dataset 'imagefolder' needs --data-dir; {HOW_TO_GET['imagefolder']}")
    root = Path(data_dir)
    train_dir = root / "train"
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DatasetError(f"dataset 'imagefolder' not found: looked for {train_dir} and {root / 'val'} "
                           f"(or {root / 'test'}); {HOW_TO_GET['imagefolder']}")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"dataset 'imagefolder': no class folders in {train_dir}; {HOW_TO_GET['imagefolder']}")
    extra = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DatasetError(f"dataset 'imagefolder': {test_dir} has classes not in {train_dir}: {', '.join(extra)}")
    size = size or (224, 224)
    train_set = ImageFolderDataset(train_dir, classes, size)
    test_set = ImageFolderDataset(test_dir, classes, size)
    if len(train_set) == 0 or len(test_set) == 0:
        raise DatasetError(f"dataset 'imagefolder': no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                           f"{train_dir if len(train_set) == 0 else test_dir}")
    if len(classes) < 2:
        raise DatasetError(f"dataset 'imagefolder': {train_dir} has 1 class folder ({classes[0]}); a classifier "
                           "needs at least 2")
    empty = sorted(set(classes) - {path.parent.name for path, _ in train_set.samples})
    if empty:
        raise DatasetError(f"dataset 'imagefolder': class folder(s) without images in {train_dir}: "
                           f"{', '.join(empty)}; add images or remove the folder")
    # Mean and std from an evenly spaced sample of the train split (decoding all would be slow).
    step = max(1, len(train_set) // 256)
    sample = torch.stack([train_set[i][0] for i in range(0, len(train_set), step)])
    mean, std = channel_stats(sample)
    return DatasetSplits("imagefolder", None, None, None, None, len(classes), 3, size, mean, std, classes,
                         {"crop_padding": max(1, size[0] // 8), "flip": True}, train_set, test_set)
