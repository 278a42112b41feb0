"""ImageNet-style class folders: DIR/train/<class>/<image> and DIR/val/<class>/... (or test/),
decoded lazily, one image at a time, in the DataLoader workers.

Not a paper module. Choices:

* An image larger than `MAX_IMAGE_PIXELS` (8192 x 8192) is refused from its header, before any
  pixel is decoded (decompression bombs), and a file that does not decode is refused naming it,
  with the same one-line message in a DataLoader worker as in the main process.
* Every image is converted to RGB and resized to the requested size (default 224 x 224).
* Mean and std come from an evenly spaced sample of about 256 train images (decoding all would
  be slow).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .entry import DatasetEntry
from .splits import DatasetError, DatasetSplits, ImageDecodeError, channel_stats

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
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


def load_imagefolder(entry: DatasetEntry, data_dir, size, **_options) -> DatasetSplits:
    """The class folders under `data_dir` (train/ and val/ or test/) as lazily decoded
    `DatasetSplits` of uint8 RGB images resized to `size` (default the entry's side)."""
    name, how_to_get = entry.name, entry.how_to_get
    if data_dir is None:
        raise DatasetError(f"dataset {name!r} needs --data-dir; {how_to_get}")
    root = Path(data_dir)
    train_dir = root / "train"
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DatasetError(f"dataset {name!r} not found: looked for {train_dir} and {root / 'val'} "
                           f"(or {root / 'test'}); {how_to_get}")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"dataset {name!r}: no class folders in {train_dir}; {how_to_get}")
    extra = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DatasetError(f"dataset {name!r}: {test_dir} has classes not in {train_dir}: {', '.join(extra)}")
    size = size or (entry.side, entry.side)
    train_set = ImageFolderDataset(train_dir, classes, size)
    test_set = ImageFolderDataset(test_dir, classes, size)
    if len(train_set) == 0 or len(test_set) == 0:
        raise DatasetError(f"dataset {name!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                           f"{train_dir if len(train_set) == 0 else test_dir}")
    if len(classes) < 2:
        raise DatasetError(f"dataset {name!r}: {train_dir} has 1 class folder ({classes[0]}); a classifier "
                           "needs at least 2")
    empty = sorted(set(classes) - {path.parent.name for path, _ in train_set.samples})
    if empty:
        raise DatasetError(f"dataset {name!r}: class folder(s) without images in {train_dir}: "
                           f"{', '.join(empty)}; add images or remove the folder")
    # Mean and std from an evenly spaced sample of the train split (decoding all would be slow).
    step = max(1, len(train_set) // 256)
    sample = torch.stack([train_set[i][0] for i in range(0, len(train_set), step)])
    mean, std = channel_stats(sample)
    return DatasetSplits(name, None, None, None, None, len(classes), entry.in_chans, size, mean, std, classes,
                         {"crop_padding": max(1, size[0] // 8), "flip": entry.flip}, train_set, test_set)
