"""Batched augmentation equals the per-sample definition, is seeded, and respects its switches."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnlab.data.augment import BatchAugment, normalise, random_crop, random_flip


def test_random_crop_equals_per_sample_pad_and_slice():
    x = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    offsets = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(out[i], padded[i, :, dy:dy + 5, dx:dx + 7])
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_flip_flips_some_and_keeps_others():
    x = torch.arange(64 * 4, dtype=torch.float32).view(64, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(1))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_normalise_uint8_and_float_agree():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    a = normalise(x, mean, std)
    b = normalise(x.float() / 255, mean, std)
    assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        normalise(x, (0.1,), (0.2,))


def test_batch_augment_seeded_and_switches():
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    aug = BatchAugment((0.5,), (0.25,), crop_padding=1, flip=True, channels_last=True)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.is_contiguous(memory_format=torch.channels_last)
    no_random = BatchAugment((0.5,), (0.25,), crop_padding=0, flip=False)
    assert torch.equal(no_random(x, torch.Generator()), normalise(x, (0.5,), (0.25,)))
    assert torch.equal(aug(x, train=False), normalise(x, (0.5,), (0.25,)).contiguous(memory_format=torch.channels_last))
    with pytest.raises(ValueError, match="crop_padding"):
        BatchAugment((0.5,), (0.25,), crop_padding=-1)
