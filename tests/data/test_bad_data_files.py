"""Damaged and misleading data files, each built here in its real format (IDX, gzip, PNG): every
one is refused with one DatasetError naming the file, in the main process and in a DataLoader
worker alike; every IDX type code that can hold images loads faithfully."""
from __future__ import annotations

import dataclasses
import gzip
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch

from attnlab.data import datasets as ds, imagefolder
from attnlab.data.datasets import DatasetError, DatasetSplits, ImageDecodeError, load_dataset
from attnlab.data.idx import read_idx

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray, dtype=np.uint8, dims=None) -> bytes:
    """An IDX file: magic 0 0 <type code> <ndim>, big-endian int32 sizes, big-endian data."""
    dtype = np.dtype(dtype).newbyteorder(">") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, IDX_CODES[dtype], len(dims)]) + struct.pack(f">{len(dims)}i", *dims)
    return header + np.asarray(array).astype(dtype).tobytes()


def write_set(folder, images=None, labels=None, test_images=None, test_labels=None, gz=False, dtype=np.uint8,
              label_dtype=np.uint8):
    """Four IDX files of a 28 x 28, 10-class set (12 train, 6 test images unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 28, 28)) if images is None else images,
              np.arange(12) % 10 if labels is None else labels,
              rng.integers(0, 256, (6, 28, 28)) if test_images is None else test_images,
              np.arange(6) % 10 if test_labels is None else test_labels]
    for name, array, kind in zip(FILES, arrays, (dtype, label_dtype, dtype, label_dtype)):
        raw = idx_bytes(array, kind)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.fixture(autouse=True)
def _no_system_copy(monkeypatch, tmp_path):
    """The Debian copy of (Fashion-)MNIST must never stand in for the bad files of a test."""
    for name in ("mnist", "fashion-mnist"):
        entry = dataclasses.replace(ds.DATASETS[name], system_dirs=(tmp_path / "no-system-copy",))
        monkeypatch.setitem(ds.DATASETS, name, entry)
    ds._CACHE.clear()


# ---------------------------------------------------------------------------- gzip
def test_corrupt_deflate_stream_is_one_dataset_error_naming_the_file(tmp_path):
    write_set(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[10] |= 0x07                # the first deflate block header (after gzip's 10 bytes): block type 3, invalid
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "corrupt or truncated gzip" in msg and "invalid block type" in msg
    assert "download it again" in msg and "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg


def test_scrambled_deflate_stream_is_one_dataset_error_naming_the_file(tmp_path):
    write_set(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    for i in range(12, 60):
        blob[i] ^= 0x5A
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value) and "download it again" in str(err.value)


@pytest.mark.parametrize("cut", [30, 200])
def test_truncated_gzip_is_one_dataset_error(tmp_path, cut):
    write_set(tmp_path, gz=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:cut] if cut < len(path.read_bytes()) else path.read_bytes()[:-6])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip|truncated or corrupt") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_gzip_crc_mismatch_is_refused(tmp_path):
    write_set(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF                            # the CRC32 of the trailer
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="CRC") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_gzip_holding_more_than_the_header_says_is_refused_without_reading_it_all(tmp_path):
    write_set(tmp_path)
    images = np.zeros((2, 28, 28), np.uint8)
    raw = idx_bytes(images) + bytes(10_000_000)             # 10 MB of padding behind a 2-image header
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetError, match="holds more: truncated or corrupt"):
        read_idx(tmp_path / "train-images-idx3-ubyte.gz")


# ---------------------------------------------------------------------------- IDX header vs the set
def test_smaller_images_than_the_set_has_are_refused_naming_the_file(tmp_path):
    rng = np.random.default_rng(1)
    write_set(tmp_path, images=rng.integers(0, 256, (12, 14, 14)), test_images=rng.integers(0, 256, (6, 14, 14)))
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "(12, 14, 14)" in msg and "expected (N, 28, 28)" in msg


def test_header_dims_that_do_not_match_the_data_length_are_refused(tmp_path):
    write_set(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    images = np.zeros((6, 28, 28), np.uint8)
    path.write_bytes(idx_bytes(images, dims=(9, 28, 28)))   # says 9 images, holds 6
    with pytest.raises(DatasetError, match=r"shape \(9, 28, 28\).*truncated or corrupt") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_images_and_labels_of_different_counts_name_both_files(tmp_path):
    write_set(tmp_path, labels=np.arange(11) % 10)
    with pytest.raises(DatasetError, match="holds 12 images but .*train-labels-idx1-ubyte holds 11 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_labels_file_with_two_dimensions_is_refused(tmp_path):
    write_set(tmp_path, labels=np.zeros((12, 2), np.uint8))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: IDX header gives shape \(12, 2\), expected \(N,\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_unknown_type_code_and_negative_size_are_refused(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x0A, 1]) + struct.pack(">i", 3) + b"abc")
    with pytest.raises(DatasetError, match="unknown IDX type code 0x0a"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">i", -3))
    with pytest.raises(DatasetError, match="negative size"):
        read_idx(path)


# ---------------------------------------------------------------------------- IDX types
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32])
def test_integer_idx_images_load_exactly(tmp_path, dtype):
    top = 127 if dtype == np.int8 else 255
    rng = np.random.default_rng(2)
    images = rng.integers(0, top + 1, (12, 28, 28))
    images[0, 0, 0] = top
    write_set(tmp_path, images=images, test_images=images[:6], dtype=dtype, label_dtype=dtype)
    d = load_dataset("mnist", data_dir=tmp_path)
    assert d.train_x.dtype == torch.uint8
    assert np.array_equal(d.train_x[:, 0].numpy(), images.astype(np.uint8))
    assert d.train_y.tolist() == (np.arange(12) % 10).tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_idx_images_keep_their_values_on_the_0_1_scale(tmp_path, dtype):
    rng = np.random.default_rng(3)
    images = rng.random((12, 28, 28)).astype(dtype)
    images[0, 0, :2] = (0.0, 1.0)
    write_set(tmp_path, images=images, test_images=images[:6], dtype=dtype, label_dtype=dtype)
    d = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert d.train_x.dtype == torch.float32 and d.test_x.dtype == torch.float32
    np.testing.assert_array_equal(d.train_x[:, 0].numpy(), images.astype(np.float32))   # not zeros
    assert d.mean[0] == pytest.approx(float(images.mean()), rel=1e-5)
    assert d.train_y.tolist() == (np.arange(12) % 10).tolist()


def test_float_train_and_ubyte_test_share_one_scale(tmp_path):
    write_set(tmp_path)
    test = np.random.default_rng(4).integers(0, 256, (6, 28, 28))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test, np.uint8))
    train = np.full((12, 28, 28), 0.5, np.float32)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(train, np.float32))
    d = load_dataset("mnist", data_dir=tmp_path)
    assert d.test_x.dtype == torch.float32
    np.testing.assert_allclose(d.test_x[:, 0].numpy(), test / 255.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize("values, expected", [
    (np.full((12, 28, 28), 200.0), "hold values 200..200; float images must be on the 0..1 scale .*divide them by 255"),
    (np.full((12, 28, 28), -0.5), "hold values -0.5..-0.5; float images must be on the 0..1 scale"),
    (np.where(np.arange(12 * 28 * 28).reshape(12, 28, 28) == 7, np.nan, 0.25), "non-finite"),
    (np.where(np.arange(12 * 28 * 28).reshape(12, 28, 28) == 7, np.inf, 0.25), "non-finite"),
])
def test_float_idx_images_out_of_range_or_non_finite_are_refused(tmp_path, values, expected):
    write_set(tmp_path, images=values, dtype=np.float32)
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value)


@pytest.mark.parametrize("dtype, top", [(np.int16, 1000), (np.int32, 70000), (np.int8, -3)])
def test_integer_images_outside_0_255_are_refused(tmp_path, dtype, top):
    images = np.zeros((12, 28, 28), np.int64)
    images[3, 4, 5] = top
    write_set(tmp_path, images=images, dtype=dtype)
    with pytest.raises(DatasetError, match=f"hold values {min(0, top)}..{max(0, top)}, expected 0..255"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("labels, dtype, expected", [
    (np.r_[np.arange(11) % 10, 2.5], np.float32, "hold 2.5, expected whole numbers 0..9"),
    (np.r_[np.arange(11) % 10, np.nan], np.float64, "hold nan, expected whole numbers 0..9"),
    (np.r_[np.arange(11) % 10, 12], np.uint8, "label 12 out of range 0..9"),
    (np.r_[np.arange(11) % 10, -1], np.int16, "label -1 out of range 0..9"),
])
def test_bad_labels_are_refused_naming_the_file(tmp_path, labels, dtype, expected):
    write_set(tmp_path, labels=labels, label_dtype=dtype)
    with pytest.raises(DatasetError, match=expected) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert "train-labels-idx1-ubyte" in str(err.value)


def test_whole_float_labels_load(tmp_path):
    write_set(tmp_path, labels=(np.arange(12) % 10).astype(np.float64), label_dtype=np.float64)
    assert load_dataset("mnist", data_dir=tmp_path).train_y.tolist() == (np.arange(12) % 10).tolist()


# ---------------------------------------------------------------------------- fewer than 2 classes
def test_idx_labels_that_use_one_class_are_refused(tmp_path):
    write_set(tmp_path, labels=np.full(12, 3))
    with pytest.raises(DatasetError, match=r"every label in .*train-labels-idx1-ubyte is class 3 \(Dress\)"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_splits_with_fewer_than_two_classes_are_refused():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(DatasetError, match="has 1 class"):
        DatasetSplits("one", x, torch.zeros(4, dtype=torch.int64), x, y[:4] * 0, 1, 1, (8, 8), (0.5,), (0.5,),
                      ["only"]).validate()
    with pytest.raises(DatasetError, match=r"every train label is class 1 \(b\)"):
        DatasetSplits("mono", x, torch.ones(4, dtype=torch.int64), x, y, 2, 1, (8, 8), (0.5,), (0.5,),
                      ["a", "b"]).validate()
    DatasetSplits("two", x, y, x, y, 2, 1, (8, 8), (0.5,), (0.5,), ["a", "b"]).validate()


def test_synthetic_with_one_class_is_refused():
    with pytest.raises(DatasetError, match="has 1 class"):
        load_dataset("synthetic", synthetic_classes=1, synthetic_train=8, synthetic_test=4)


# ---------------------------------------------------------------------------- image folders
def png_bytes(width: int, height: int) -> bytes:
    """A real 1-bit greyscale PNG of all-black rows, written chunk by chunk (so that a
    gigapixel image is a few kilobytes: what a decompression bomb looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)                        # filter byte 0 + the packed pixels
    pack = zlib.compressobj(9)
    body = b"".join(pack.compress(row * 1024) for _ in range(height // 1024)) + pack.compress(row * (height % 1024))
    body += pack.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def make_folder(root, per_class=2, classes=("cat", "dog"), side=10):
    from PIL import Image

    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_png_helper_makes_a_real_png(tmp_path):
    from PIL import Image

    (tmp_path / "small.png").write_bytes(png_bytes(21, 13))
    with Image.open(tmp_path / "small.png") as img:
        assert img.size == (21, 13) and np.asarray(img.convert("L")).max() == 0


@pytest.mark.parametrize("width, height", [(9000, 9000),      # over attnlab's limit, under PIL's
                                           (10000, 10000),    # over PIL's warning limit
                                           (20000, 20000)])   # over PIL's error limit
def test_decompression_bomb_png_is_refused_naming_the_file(tmp_path, width, height):
    make_folder(tmp_path)
    bomb = tmp_path / "train" / "dog" / "1.png"
    bomb.write_bytes(png_bytes(width, height))
    assert bomb.stat().st_size < 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no DecompressionBombWarning may escape
        with pytest.raises(ImageDecodeError) as err:
            load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    msg = str(err.value)
    assert str(bomb) in msg and "decompression bomb" in msg and str(imagefolder.MAX_IMAGE_PIXELS) in msg


def test_pixel_limit_is_the_stated_one(tmp_path):
    (tmp_path / "edge.png").write_bytes(png_bytes(64, 32))
    assert imagefolder.decode_image(tmp_path / "edge.png", (4, 4), max_pixels=64 * 32).shape == (4, 4, 3)
    with pytest.raises(ImageDecodeError, match="64 x 32 = 2048 pixels, more than the 2047"):
        imagefolder.decode_image(tmp_path / "edge.png", (4, 4), max_pixels=64 * 32 - 1)
    assert imagefolder.MAX_IMAGE_PIXELS == 8192 * 8192


@pytest.mark.parametrize("content", ["truncated", "text", "empty"])
def test_truncated_or_non_image_png_is_refused_naming_the_file(tmp_path, content):
    make_folder(tmp_path)
    bad = tmp_path / "train" / "cat" / "0.png"
    blob = bad.read_bytes()
    bad.write_bytes({"truncated": blob[: len(blob) // 2], "text": b"just some text\n", "empty": b""}[content])
    with pytest.raises(ImageDecodeError) as err:
        load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    assert str(err.value).startswith(f"cannot decode image {bad}: ") and "\n" not in str(err.value)


def test_bad_image_in_a_dataloader_worker_gets_the_same_one_line(tmp_path):
    make_folder(tmp_path)
    d = load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    bad = tmp_path / "train" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])               # damaged after the set was loaded
    index = [str(p) for p, _ in d.train_set.samples].index(str(bad))
    with pytest.raises(ImageDecodeError) as in_main:
        d.train_set[index]
    loader = torch.utils.data.DataLoader(d.train_set, batch_size=2, num_workers=2)
    with pytest.raises(ImageDecodeError) as in_worker:
        list(loader)
    assert str(in_worker.value) == str(in_main.value)
    assert "Traceback" not in str(in_worker.value) and "\n" not in str(in_worker.value)


def test_own_message_is_taken_out_of_a_reraised_worker_traceback():
    text = ("Caught ImageDecodeError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise ImageDecodeError(m)\n'
            "attnlab.data.splits.ImageDecodeError: cannot decode image /d/a.png: broken\n")
    assert str(ImageDecodeError(text)) == "cannot decode image /d/a.png: broken"
    assert str(ImageDecodeError("Caught you")) == "Caught you"


def test_one_class_image_folder_is_refused(tmp_path):
    make_folder(tmp_path, classes=("cat",))
    with pytest.raises(DatasetError, match=r"has 1 class folder \(cat\); a classifier needs at least 2") as err:
        load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    assert str(tmp_path / "train") in str(err.value)


def test_image_folder_with_an_empty_train_class_is_refused(tmp_path):
    make_folder(tmp_path, classes=("cat", "dog"))
    (tmp_path / "train" / "emu").mkdir()
    with pytest.raises(DatasetError, match="class folder\\(s\\) without images in .*train: emu"):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=8)


def test_undecodable_image_met_in_training_stops_the_cli_with_one_line(tmp_path, capsys):
    """The load-time statistics decode an evenly spaced sample (every second image of 512), so
    the bad file is first met by a DataLoader worker, in training."""
    from PIL import Image

    from attnlab.cli import main

    root = tmp_path / "data"
    for split, n in (("train", 256), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(root / split / cls / f"{i:03d}.png")
    bad = root / "train" / "cat" / "001.png"                  # index 1: not in the statistics' sample
    bad.write_bytes(bad.read_bytes()[:45])
    status = main(["train", "--model", "resnet20", "--dataset", "imagefolder", "--data-dir", str(root),
                   "--image-size", "8", "--epochs", "1", "--batch-size", "128", "--num-workers", "1",
                   "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err and "worker" not in err
    assert err.startswith(f"attnlab: error: cannot decode image {bad}: ")
