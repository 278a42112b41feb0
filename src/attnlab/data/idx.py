"""IDX files (the MNIST family): reading one file, and the loader of a set of four.

Not a paper module. The format follows its sources (LeCun et al., MNIST; Xiao et al.,
Fashion-MNIST): magic 0x0000 08 <ndim>, big-endian int32 sizes, then the bytes. Choices:

* Files of every type code load: integer images (ubyte, sbyte, short, int) must hold values in
  0..255 and become uint8; float images (float, double) must be finite and on the 0..1 scale
  (the convention of attnlab's own float sets) and are kept as float32, both splits then. Labels
  must be whole numbers in 0..classes-1 whatever their type. Anything else is refused, naming
  the file, rather than converted into something else (a float image cast to uint8 would be all
  zeros).
* The header is checked against the file's length and against the set's image size (28 x 28 for
  MNIST and Fashion-MNIST) before the data are read; a gzip stream is read only as far as the
  header says.
* The four files are looked for in `data_dir`, in its sub-folder named after the set, in the
  layout torchvision downloads (<Name>/raw), then in the entry's system folders.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .entry import DatasetEntry
from .splits import DatasetError

IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
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


def _find_idx(entry: DatasetEntry, data_dir, torchvision_folder: str) -> tuple[Path, dict[str, Path]]:
    base = entry.name
    candidates = []
    if data_dir is not None:
        root = Path(data_dir)
        candidates += [root, root / base, root / base.replace("-", "_"), root / base / "raw",
                       root / torchvision_folder / "raw"]
    else:   # a folder the user named is the only place looked at: no fallback to the system's copy
        candidates += list(entry.system_dirs)
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
    raise DatasetError(f"dataset {base!r} not found: looked for {names} in {where}; to get it: {entry.how_to_get}")


def load_idx(entry: DatasetEntry, data_dir, *, torchvision_folder: str) -> tuple:
    """The four IDX files of `entry` (train / t10k images and labels, gzipped or not) as
    (train_x, train_y, test_x, test_y, classes): images (N, 1, side, side) uint8 or float32.
    `torchvision_folder`: the folder name torchvision downloads the set into (e.g. 'MNIST')."""
    base, side, classes = entry.name, entry.side, entry.class_names
    folder, files = _find_idx(entry, data_dir, torchvision_folder)
    hint = f"; to get it: {entry.how_to_get}"

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

