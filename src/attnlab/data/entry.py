"""`DatasetEntry`: everything attnlab knows about one dataset, in one place.

The table of datasets (data/datasets.py) holds one entry per set; a loader receives its entry and
reads from it what it needs (the image side, the class names, the folders to search, the sentence
that says how to get the files), so that adding a dataset is one entry plus, for a new file
format, one loader function.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the table.

    Args:
        name: the canonical name (lower case), as `load_dataset` and `list_datasets` spell it.
        loader: how to read it. By default an in-memory loader, called as
            `loader(entry, data_dir)` and returning `(train_x, train_y, test_x, test_y, classes)`:
            images (N, C, H, W) as uint8 (0..255) or float32 (0..1), int64 labels and the class
            names; `load_dataset` then resizes or distorts, computes the channel statistics,
            validates and caches. With `makes_splits=True` the loader builds the whole
            `DatasetSplits` itself (lazily decoded folders, generated sets), called as
            `loader(entry, data_dir, size, **options)` with `size` None or (H, W) and the
            keyword options of `load_dataset` (`seed`, `synthetic_*`).
        in_chans, side: channels and side (square) of the images as stored, before any
            resizing or distortion; `dataset_info` reports them without loading.
        num_classes: the number of classes, None when only the files tell (image folders).
        classes: the class names when the set fixes them; None gives "0", "1", ... (see
            `class_names`).
        aliases: other accepted spellings of the name (not listed by `list_datasets`).
        distortable: the spatial-transformer paper's distorted variants '<name>-<kind>' exist
            (one per kind of data/distort.py).
        variant_aliases: listed names of distorted variants, as (alias, distortion kind) pairs.
        distortion_copies: how many independent distortions of each training image the
            distorted variants hold. More than 1 for a small set, whose single distortion of
            each image leaves too few examples for stable accuracies.
        distortion_test_copies: the same for the test images (default 1). More draws of each
            held-out image measure a trained model's accuracy on the distorted distribution more
            precisely (with one draw of the digits' 360 test images, the test-set sampling alone
            spreads a converged model's accuracy by about 1.5 points); the draws of one image
            are not independent examples, which per-example tests that assume so (McNemar's)
            must say.
        flip: random horizontal flips belong to its default augmentation (not for digits: a
            mirrored 2 is not a 2).
        how_to_get: the sentence an error about missing files ends with.
        system_dirs: folders searched when no `data_dir` is given (where a distribution package
            installs the files); a given `data_dir` is the only place looked at.
        makes_splits: see `loader`.
        reads_files: whether the loader reads files at all (False for a set embedded in an
            installed package or generated): a `data_dir` given for one that does not would be
            ignored, so `load_dataset` refuses it.
    """

    name: str
    loader: Callable
    in_chans: int
    side: int
    num_classes: Optional[int]
    classes: Optional[tuple[str, ...]] = None
    aliases: tuple[str, ...] = ()
    distortable: bool = False
    variant_aliases: tuple[tuple[str, str], ...] = ()
    distortion_copies: int = 1
    distortion_test_copies: int = 1
    flip: bool = False
    how_to_get: str = ""
    system_dirs: tuple[Path, ...] = ()
    makes_splits: bool = False
    reads_files: bool = True

    @property
    def class_names(self) -> list[str]:
        """The class names: `classes`, or "0" .. str(num_classes - 1)."""
        if self.classes is not None:
            return list(self.classes)
        return [str(i) for i in range(self.num_classes or 0)]
