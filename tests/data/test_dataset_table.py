"""The table of datasets: every set is one DatasetEntry, and a new one (entry + loader) is listed,
resolved, described and loaded like the built-in ones, distorted variants and aliases included."""
from __future__ import annotations

import pytest
import torch

from attnlab.data import datasets as ds
from attnlab.data import DatasetEntry, dataset_info, list_datasets, load_dataset, register_dataset
from attnlab.data.datasets import resolve_dataset_name
from attnlab.data.distort import DISTORTIONS


@pytest.fixture
def table(monkeypatch):
    """A private copy of the table, so that registering here leaves the real one as it was."""
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    ds._CACHE.clear()
    yield ds.DATASETS
    ds._CACHE.clear()


def _checker_loader(entry, data_dir):
    """A 2-class set of 12 x 12 checkerboards (class 1) and blank images (class 0)."""
    board = (torch.arange(entry.side)[:, None] + torch.arange(entry.side)[None, :]) % 2 * 255
    x = torch.stack([board * (i % 2) for i in range(8)]).to(torch.uint8)[:, None]
    y = torch.arange(8) % 2
    return x[:6], y[:6], x[6:], y[6:], entry.class_names


def test_every_built_in_set_is_one_entry_and_every_listed_name_resolves():
    assert set(ds.DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder",
                                "synthetic"}
    for name, entry in ds.DATASETS.items():
        assert isinstance(entry, DatasetEntry) and entry.name == name
    for name in list_datasets():
        canonical, base, kind = resolve_dataset_name(name)
        assert base in ds.DATASETS and (kind is None or kind in DISTORTIONS)


def test_a_new_set_is_one_entry_and_its_loader(table):
    entry = register_dataset(DatasetEntry("checkers", _checker_loader, in_chans=1, side=12, num_classes=2,
                                          classes=("blank", "board"), aliases=("checkerboards",),
                                          distortable=True, variant_aliases=(("tilted-checkers", "r"),)))
    assert table["checkers"] is entry
    assert {"checkers", "checkers-rts", "tilted-checkers"} <= set(list_datasets())
    assert "checkerboards" not in list_datasets()                     # an alias is accepted, not listed
    assert resolve_dataset_name("CheckerBoards") == ("checkers", "checkers", None)
    assert resolve_dataset_name("tilted-checkers") == ("checkers-r", "checkers", "r")
    assert dataset_info("checkers") == {"name": "checkers", "in_chans": 1, "image_size": (12, 12), "num_classes": 2}
    assert dataset_info("checkers-rts")["image_size"] == (18, 18)
    plain = load_dataset("checkers")
    assert plain.classes == ["blank", "board"] and plain.train_x.shape == (6, 1, 12, 12)
    assert plain.default_augment == {"crop_padding": 2, "flip": False}
    rotated = load_dataset("tilted-checkers", image_size=10)
    assert rotated.name == "checkers-r" and rotated.train_x.shape == (6, 1, 10, 10)


def test_a_taken_or_upper_case_name_is_refused(table):
    with pytest.raises(ValueError, match="'fmnist' already name a dataset"):
        register_dataset(DatasetEntry("fmnist", _checker_loader, in_chans=1, side=12, num_classes=2))
    with pytest.raises(ValueError, match="'mnist-rts' already name a dataset"):
        register_dataset(DatasetEntry("mnist-rts", _checker_loader, in_chans=1, side=12, num_classes=2))
    with pytest.raises(ValueError, match="lower case"):
        register_dataset(DatasetEntry("Checkers", _checker_loader, in_chans=1, side=12, num_classes=2))
    with pytest.raises(TypeError, match="DatasetEntry"):
        register_dataset({"name": "checkers"})
    assert "checkers" not in list_datasets() and "Checkers" not in table
