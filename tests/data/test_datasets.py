"""Each loader on small files made here in the real format; missing / corrupt data -> clear errors."""
from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from attnlab.data import datasets as ds
from attnlab.data.datasets import DatasetError, dataset_info, list_datasets, load_dataset


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_set(folder, n_train=12, n_test=6, gz=True, size=28):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr, gz)
    return arrays


def test_digits_fixed_stratified_split_same_for_every_seed():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=7)
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert a.train_x.dtype == torch.uint8 and int(a.train_x.max()) == 255
    counts = torch.bincount(a.test_y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38          # stratified: ~36 per class
    assert a.num_classes == 10 and a.in_chans == 1 and a.default_augment["flip"] is False
    mean = a.train_x.float().div(255).mean().item()
    assert a.mean[0] == pytest.approx(mean, rel=1e-6)


def test_digits_are_scikit_learns_images_and_split_read_without_importing_it(monkeypatch):
    import sys

    from attnlab.data import digits
    imported = "sklearn" in sys.modules
    with monkeypatch.context() as blocked:       # importing scikit-learn's loaders raises ImportError here
        for name in ("sklearn.datasets", "sklearn.model_selection"):
            blocked.setitem(sys.modules, name, None)
        digits._digits_arrays.cache_clear()
        try:
            pixels, labels, idx_train, idx_test = digits._digits_arrays()
        finally:
            digits._digits_arrays.cache_clear()
    assert ("sklearn" in sys.modules) == imported
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    assert torch.equal(pixels[:, 0], torch.from_numpy(np.round(bunch.images * (255 / 16))).to(torch.uint8))
    assert torch.equal(labels, torch.from_numpy(bunch.target.astype(np.int64)))
    want_train, want_test = train_test_split(np.arange(len(bunch.target)), test_size=0.2, stratify=bunch.target,
                                             random_state=0)
    assert idx_train.tolist() == sorted(want_train) and idx_test.tolist() == sorted(want_test)


def test_digits_resized_once_at_load():
    d = load_dataset("digits", image_size=16)
    assert d.train_x.shape[-2:] == (16, 16) and d.image_size == (16, 16)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_gz_and_raw(tmp_path, gz):
    arrays = make_idx_set(tmp_path / "mnist", gz=gz)
    d = load_dataset("mnist", data_dir=tmp_path)
    assert d.train_x.shape == (12, 1, 28, 28) and d.test_x.shape == (6, 1, 28, 28)
    assert np.array_equal(d.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"].astype(np.uint8))
    assert d.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_idx_truncated_file_is_refused_with_what_and_where(tmp_path):
    make_idx_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    entry = dataclasses.replace(ds.DATASETS["fashion-mnist"], system_dirs=(tmp_path / "nowhere",))
    monkeypatch.setitem(ds.DATASETS, "fashion-mnist", entry)
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path) in msg and "t10k-images" in msg


def test_a_named_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch):
    """The system's copy (where a distribution package installs the files) serves only a call
    that names no folder; a folder the user named without the files is refused, never replaced."""
    system, empty = tmp_path / "system", tmp_path / "empty"
    make_idx_set(system, gz=False)
    empty.mkdir()
    entry = dataclasses.replace(ds.DATASETS["fashion-mnist"], system_dirs=(system,))
    monkeypatch.setitem(ds.DATASETS, "fashion-mnist", entry)
    assert load_dataset("fashion-mnist").num_train == 12
    with pytest.raises(DatasetError, match="not found") as err:
        load_dataset("fashion-mnist", data_dir=empty)
    assert str(system) not in str(err.value)



@pytest.mark.parametrize("name", ["digits", "digits-rts", "synthetic"])
def test_a_data_dir_for_a_set_that_reads_no_files_is_refused(tmp_path, name):
    """digits come with scikit-learn and synthetic is generated: a folder given for them would be
    silently ignored, so it is refused, naming the folder."""
    with pytest.raises(DatasetError, match=f"reads no files.*{tmp_path.name}.*would be ignored"):
        load_dataset(name, data_dir=tmp_path)


def test_a_data_dir_that_is_a_file_is_refused_as_such(tmp_path):
    a_file = tmp_path / "train-images-idx3-ubyte"
    a_file.write_bytes(b"")
    with pytest.raises(DatasetError, match="is a file; expected the folder"):
        load_dataset("fashion-mnist", data_dir=a_file)
def test_distorted_idx_variant_uses_the_canvas(tmp_path):
    make_idx_set(tmp_path, gz=True)
    d = load_dataset("mnist-rts", data_dir=tmp_path)
    assert d.image_size == (42, 42) and d.default_augment["crop_padding"] == 0
    assert dataset_info("mnist-tc")["image_size"] == (60, 60)


def make_cifar10(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh, protocol=2)
    return folder


def test_cifar10_pickle_batches(tmp_path):
    make_cifar10(tmp_path)
    d = load_dataset("cifar10", data_dir=tmp_path)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.classes[3] == "c3" and d.default_augment == {"crop_padding": 4, "flip": True}


def test_cifar100_pickle(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": np.zeros((n, 3072), np.uint8), b"fine_labels": list(range(n))}, fh, protocol=4)
    d = load_dataset("cifar100", data_dir=tmp_path)
    assert d.num_classes == 100 and d.train_y.tolist() == list(range(6))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar_pickle_with_code_payload_is_never_executed(tmp_path):
    folder = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(DatasetError, match="refusing to load global"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_missing_cifar_names_where_and_how(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_imagefolder_pngs_lazy_with_dataloader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = load_dataset("imagefolder", data_dir=tmp_path, image_size=16)
    assert not d.in_memory and d.num_train == 6 and d.num_test == 4 and d.classes == ["cat", "dog"]
    loader = torch.utils.data.DataLoader(d.train_set, batch_size=4, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.uint8 and set(yb.tolist()) <= {0, 1}


def test_imagefolder_corrupt_image_is_reported(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            (tmp_path / split / cls / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode image"):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=8)


def test_synthetic_is_seeded():
    a = load_dataset("synthetic", seed=3, synthetic_train=8, synthetic_test=4)
    b = load_dataset("synthetic", seed=3, synthetic_train=8, synthetic_test=4)
    c = load_dataset("synthetic", seed=4, synthetic_train=8, synthetic_test=4)
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    assert a.train_x.dtype == torch.float32 and a.train_x.shape == (8, 3, 32, 32)


def test_unknown_names_and_bad_sizes():
    with pytest.raises(ValueError, match="Did you mean 'digits'"):
        load_dataset("digitz")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", image_size=0)
    assert "fashion-mnist-rts" in list_datasets() and "distorted-digits" in list_datasets()


def test_repeated_loads_share_the_cache_but_not_in_place_edits():
    a = load_dataset("digits-r")
    b = load_dataset("digits-r")
    assert a.train_x is b.train_x and a is not b          # read and distorted once per process
    b.train_x[0, 0, 0, 0] = 7                             # a caller writing into the tensors ...
    c = load_dataset("digits-r")
    assert c.train_x is not b.train_x                     # ... makes the next load read afresh
    assert torch.equal(c.train_x[1:], a.train_x[1:])


def test_small_sets_draw_several_distortions_of_each_training_and_test_image():
    plain, rts = load_dataset("digits"), load_dataset("digits-rts")
    copies = ds.DATASETS["digits"].distortion_copies
    test_copies = ds.DATASETS["digits"].distortion_test_copies
    n, m = len(plain.train_y), len(plain.test_y)
    assert copies > 1 and len(rts.train_y) == copies * n and test_copies > 1 and len(rts.test_y) == test_copies * m
    assert torch.equal(rts.train_y, plain.train_y.repeat(copies))
    assert torch.equal(rts.test_y, plain.test_y.repeat(test_copies))
    for x, size in ((rts.train_x, n), (rts.test_x, m)):
        first, second = x[:size].float(), x[size:2 * size].float()
        assert (first - second).abs().flatten(1).sum(1).gt(0).float().mean() > 0.99   # the copies are other draws
    # train and test come from separate streams: no test image equals a training image
    train_rows = {bytes(row) for row in rts.train_x.flatten(1).numpy()}
    assert not any(bytes(row) in train_rows for row in rts.test_x.flatten(1).numpy())
    for field in ("distortion_copies", "distortion_test_copies"):
        with pytest.raises(ValueError, match=f"{field} must be an int >= 1, got 0"):
            ds.register_dataset(dataclasses.replace(ds.DATASETS["digits"], name="digits-zero", variant_aliases=(),
                                                 **{field: 0}))


def test_a_digits_file_of_another_shape_is_refused_naming_it(tmp_path, monkeypatch):
    import gzip
    import importlib.util
    import types

    from attnlab.data import digits
    from attnlab.data.splits import DatasetError

    package = tmp_path / "sklearn"
    (package / "datasets" / "data").mkdir(parents=True)
    with gzip.open(package / "datasets" / "data" / "digits.csv.gz", "wt") as fh:
        fh.write("\n".join(",".join(["0"] * 64 + [str(i % 10)]) for i in range(10)) + "\n")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: types.SimpleNamespace(submodule_search_locations=[str(package)]))
    digits._digits_arrays.cache_clear()
    try:
        with pytest.raises(DatasetError, match=r"digits.csv.gz: 10 rows of 65 values; expected the digits' 1797 rows"):
            digits._digits_arrays()
    finally:
        digits._digits_arrays.cache_clear()
