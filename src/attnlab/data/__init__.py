"""Datasets as in-memory tensors: one table of datasets (datasets.py, one `DatasetEntry` each),
one loader per real format, the STN paper's distortions and batched augmentation."""
from .augment import BatchAugment, normalise, random_crop, random_flip
from .datasets import (DatasetEntry, DatasetError, DatasetSplits, ImageDecodeError, dataset_info, list_datasets,
                       load_dataset, register_dataset, resolve_dataset_name)
from .distort import DISTORTIONS, distort

__all__ = ["BatchAugment", "normalise", "random_crop", "random_flip", "DatasetEntry", "DatasetError",
           "DatasetSplits", "ImageDecodeError", "dataset_info", "list_datasets", "load_dataset", "register_dataset",
           "resolve_dataset_name", "DISTORTIONS", "distort"]
