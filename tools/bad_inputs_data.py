"""Bad inputs of the data loaders: damaged and misleading dataset files, each written in its real
format (IDX, gzip, PNG) into the scratch folder; see bad_inputs.py. (Two threads capturing one
model is not a bad input: each gets its own recording; tests/explain/test_capture_threads.py.)"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def _idx(array, kind: str = "u1", dims=None) -> bytes:
    array = np.asarray(array)
    dims = array.shape if dims is None else dims
    return (bytes([0, 0, IDX_CODES[kind], len(dims)]) + struct.pack(f">{len(dims)}i", *dims)
            + array.astype(np.dtype(kind)).tobytes())


def _idx_set(folder: Path, side: int = 28, image_kind: str = "u1", images=None, labels=None,
             gz: bool = False, replace: dict | None = None) -> Path:
    """Four IDX files of a small 10-class set; `replace` swaps one file's bytes for others."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    blobs = {IDX_NAMES[0]: _idx(rng.integers(0, 256, (12, side, side)) if images is None else images, image_kind),
             IDX_NAMES[1]: _idx(np.arange(12) % 10 if labels is None else labels),
             IDX_NAMES[2]: _idx(rng.integers(0, 256, (6, side, side)) if images is None else images[:6], image_kind),
             IDX_NAMES[3]: _idx(np.arange(6) % 10)}
    blobs.update(replace or {})
    for name, blob in blobs.items():
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(blob) if gz else blob)
    return folder


def _png(width: int, height: int) -> bytes:
    """A real 1-bit greyscale PNG of black rows (a gigapixel one is a few kilobytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)
    pack = zlib.compressobj(9)
    body = b"".join(pack.compress(row * 1024) for _ in range(height // 1024)) + pack.compress(row * (height % 1024))
    body += pack.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _image_folder(root: Path, classes=("cat", "dog"), bad: bytes | None = None) -> Path:
    """train/ and val/ with two 8x8 PNGs per class; `bad` replaces train/<last class>/1.png."""
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                (root / split / cls / f"{i}.png").write_bytes(_png(8, 8))
    if bad is not None:
        (root / "train" / classes[-1] / "1.png").write_bytes(bad)
    return root


def cases(tmp: Path, Case) -> list:
    from attnlab.data.datasets import DatasetSplits, load_dataset

    import torch

    folders = {}

    def folder(name: str, make) -> Path:
        folders[name] = make(tmp / name)
        return folders[name]

    good = _idx(np.random.default_rng(1).integers(0, 256, (12, 28, 28)))
    bad_deflate = bytearray(gzip.compress(good))
    bad_deflate[10] |= 0x07                                  # first deflate block: type 3, which does not exist
    folder("gz_corrupt", lambda p: _idx_set(p, gz=True))
    (folders["gz_corrupt"] / (IDX_NAMES[0] + ".gz")).write_bytes(bytes(bad_deflate))
    folder("gz_truncated", lambda p: _idx_set(p, gz=True))
    (folders["gz_truncated"] / (IDX_NAMES[2] + ".gz")).write_bytes(gzip.compress(good)[:-40])
    folder("small_images", lambda p: _idx_set(p, side=14))
    folder("header_mismatch", lambda p: _idx_set(p, replace={IDX_NAMES[2]: _idx(np.zeros((6, 28, 28)), dims=(9, 28, 28))}))
    folder("float_255", lambda p: _idx_set(p, image_kind=">f4", images=np.full((12, 28, 28), 128.0)))
    folder("float_nan", lambda p: _idx_set(p, image_kind=">f8", images=np.where(np.eye(28)[None] > 0, np.nan, 0.5)
                                            .repeat(12, 0)))
    folder("short_1000", lambda p: _idx_set(p, image_kind=">i2", images=np.full((12, 28, 28), 1000)))
    folder("label_12", lambda p: _idx_set(p, labels=np.r_[np.arange(11) % 10, 12]))
    folder("one_label", lambda p: _idx_set(p, labels=np.full(12, 7)))
    float_labels = _idx(np.r_[np.arange(11) % 10, 2.5], ">f4")
    folder("float_labels", lambda p: _idx_set(p, replace={IDX_NAMES[1]: float_labels}))
    folder("one_class", lambda p: _image_folder(p, classes=("cat",)))
    folder("bomb", lambda p: _image_folder(p, bad=_png(20000, 20000)))
    folder("bomb_mid", lambda p: _image_folder(p, bad=_png(9000, 9000)))
    folder("truncated_png", lambda p: _image_folder(p, bad=_png(64, 64)[:50]))
    folder("text_png", lambda p: _image_folder(p, bad=b"this is not a picture\n"))

    def fashion(name):
        return lambda: load_dataset("fashion-mnist", data_dir=folders[name])

    def images(name):
        return lambda: load_dataset("imagefolder", data_dir=folders[name], image_size=8)

    def one_label_splits():
        x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
        return DatasetSplits("custom", x, torch.full((4,), 3), x, torch.tensor([0, 1, 2, 3]), 10, 1, (8, 8),
                             (0.5,), (0.5,), [str(i) for i in range(10)]).validate()

    api = [
        ("fashion-mnist: gzip IDX file with a corrupt deflate stream", fashion("gz_corrupt")),
        ("fashion-mnist: truncated gzip IDX file", fashion("gz_truncated")),
        ("fashion-mnist: IDX images of 14 x 14 instead of 28 x 28", fashion("small_images")),
        ("fashion-mnist: IDX header says 9 images, the file holds 6", fashion("header_mismatch")),
        ("fashion-mnist: float32 IDX images on the 0..255 scale", fashion("float_255")),
        ("fashion-mnist: float64 IDX images holding NaN", fashion("float_nan")),
        ("fashion-mnist: 16-bit IDX images holding 1000", fashion("short_1000")),
        ("fashion-mnist: IDX label 12 for 10 classes", fashion("label_12")),
        ("fashion-mnist: float IDX labels holding 2.5", fashion("float_labels")),
        ("fashion-mnist: every train label the same class", fashion("one_label")),
        ("image folder with a single class", images("one_class")),
        ("image folder: decompression-bomb PNG (20000 x 20000, a few KB)", images("bomb")),
        ("image folder: PNG of 9000 x 9000, over attnlab's pixel limit", images("bomb_mid")),
        ("image folder: PNG cut inside its pixel data", images("truncated_png")),
        ("image folder: text file named .png", images("text_png")),
        ("DatasetSplits whose train labels use one class", one_label_splits),
    ]
    train = ["train", "--model", "resnet20", "--epochs", "1", "--no-progress"]

    def cli_train(name, dataset="fashion-mnist"):
        return [*train, "--dataset", dataset, "--data-dir", str(folders[name]), "--out", str(tmp / f"run_{name}")]

    cli = [
        ("train: fashion-mnist --data-dir with a corrupt gzip stream", cli_train("gz_corrupt")),
        ("train: fashion-mnist --data-dir with 14 x 14 IDX images", cli_train("small_images")),
        ("train: fashion-mnist --data-dir with float IDX images on 0..255", cli_train("float_255")),
        ("train: fashion-mnist --data-dir whose labels use one class", cli_train("one_label")),
        ("train: fashion-mnist --data-dir with IDX label 12", cli_train("label_12")),
        ("train: imagefolder --data-dir with one class", cli_train("one_class", "imagefolder")),
        ("train: imagefolder --data-dir with a decompression-bomb PNG", cli_train("bomb", "imagefolder")),
        ("train: imagefolder --data-dir with a text file named .png", cli_train("text_png", "imagefolder")),
    ]
    return [Case("api", what, call) for what, call in api] + [Case("cli", what, argv) for what, argv in cli]
