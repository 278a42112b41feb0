"""Augmentation on whole batches of tensors, on the training device: random pad-and-crop,
horizontal flip, normalisation. No per-sample Python work.

Not a paper module. The recipe is the standard CIFAR one of He et al. 2016 (pad 4 pixels with
zeros, take a random 32x32 crop, flip horizontally with probability 1/2), done the way airbench
does it: one random offset per image, applied to the whole batch by a single gather, instead of
one Python call per image. Every random number comes from the `torch.Generator` passed in, so a
run is reproducible and a resumed run continues the same stream (its state is checkpointed).

Choices: padding is done with zeros *before* normalisation (as torchvision's RandomCrop on the
raw image), so the border is black, not the mean. Crop and flip work on uint8 batches (less
memory traffic); `normalise` converts to float32 (0..1 scale) and standardises per channel.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..checks import check_bool, check_int


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by `padding` zeros on every side and take a random crop of the original
    size, one offset per image, as one gather over the batch. `x`: (N, C, H, W)."""
    check_int("random_crop", "padding", padding, 0)
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device)
    offsets = offsets.to(x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, :, None]   # (N, H, 1)
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, :]   # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing with the channel slice in the middle gives (N, H, W, C).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image horizontally with probability `p` (one draw per image)."""
    draws = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device)
    return torch.where((draws < p)[:, None, None, None], x.flip(3), x)


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) images -> float32 standardised per channel."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"normalise: mean/std have {len(mean)}/{len(std)} entries, images have {x.shape[1]} channels")
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * scale
    inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * scale)
    return (x.to(torch.float32) - mean_t) * inv_std


class BatchAugment:
    """The training-time pipeline for one batch: crop -> flip -> normalise (-> channels_last).

    `crop_padding=0` and `flip=False` turn the random parts off (digits must not be flipped:
    a mirrored 2 is not a 2). Calling it with `train=False` only normalises.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 0,
                 flip: bool = False, channels_last: bool = False):
        check_int("BatchAugment", "crop_padding", crop_padding, 0)
        check_bool("BatchAugment", "flip", flip)
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_padding, self.flip, self.channels_last = crop_padding, flip, channels_last

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                 train: bool = True) -> torch.Tensor:
        if train and (self.crop_padding or self.flip):
            if generator is None:
                raise ValueError("BatchAugment: a torch.Generator is needed for random augmentation")
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, generator)
            if self.flip:
                x = random_flip(x, generator)
        x = normalise(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
