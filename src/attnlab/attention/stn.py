"""Spatial transformer (Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
Networks", NIPS 2015, arXiv:1506.02025).

Three parts (paper section 3):

* localisation network theta = f_loc(U): here convolutions + max pooling + a hidden FC layer +
  a regression layer (paper 3.1; the distorted-MNIST ST-CNN uses two 5x5 conv layers of 20 filters
  with 2x2 max pooling and a 50-unit FC layer, our defaults);
* grid generator (eq. 1): for every target position (x_t, y_t) in normalised coordinates [-1, 1],
  (x_s, y_s)^T = A_theta (x_t, y_t, 1)^T with the 2x3 affine matrix A_theta. For
  ``transform="projective"`` A_theta is a 3x3 homography (8 regressed parameters, the last entry
  fixed to 1) and (x_s, y_s) = (u / w, v / w) with (u, v, w)^T = A_theta (x_t, y_t, 1)^T;
* bilinear sampler (eq. 5): V = sum_nm U_nm max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|), zero
  outside the input (F.grid_sample, align_corners=False, zero padding).

The regression layer starts at the identity transform (weights 0, bias = identity; paper
appendix A), so that at initialisation the output equals the input (``zero_init=True``).

Where this code deviates, and why:

* The localisation convolutions are zero-padded to keep the map size ("same"), and an adaptive
  average pooling to ``loc_pool_size`` sits before the FC layer, so that one module runs at any
  input size (1x1 and non-square maps included); the paper's networks were built for one input
  size with unpadded convolutions.
* Projective grids divide by w; |w| below ``min_denominator`` is replaced by
  +-min_denominator (sign kept, 0 counts as positive) so that a degenerate homography gives
  far-away (zero-padded) samples instead of inf / NaN.
* ``zero_init=False`` keeps PyTorch's default init for the regression weights (bias still the
  identity), for ablations; the paper only describes the identity start.
* ``precise_sampling=True`` (default) builds the grid and samples in float64 and casts the output
  back to the input's dtype: in float32 the pixel-centre coordinates of F.affine_grid carry a
  rounding error of about size * 3e-8 pixels, so the identity warp of a 60x60 map differs from
  its input by ~1e-5; in float64 it reproduces it to 1e-6 at any size. False samples in
  float32 (cheaper, for large feature maps). Under autocast (bf16 / fp16) theta, the grid and the
  sampling still run in float32 or float64: a bf16 grid would misplace samples by up to a
  quarter of a pixel on a 64-pixel side.
* The thin-plate-spline transform of the paper is not implemented.

Explainability: 'theta' (N, 2, 3) or (N, 3, 3) goes through ``self.observe`` before the grid is
built, so a capture records it and ``gate_override={'theta': identity}`` switches the warp off.
``grid(theta, size)`` returns the sampling grid (N, H, W, 2) for figures.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int, check_positive_int, check_positive_number
from .base import upcast, WARP, AttentionModule, Signal, float32_math, is_traced

TRANSFORMS = ("affine", "projective")


def _pair(name: str, value) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"SpatialTransformer: {name} must be a positive int or a pair of them, got {value!r}")
    return tuple(check_positive_int("SpatialTransformer", name, v) for v in value)


def identity_theta(transform: str, batch: int = 1, dtype=None, device=None) -> torch.Tensor:
    """The identity transform: (batch, 2, 3) for 'affine', (batch, 3, 3) for 'projective'."""
    rows = 2 if transform == "affine" else 3
    return torch.eye(3, dtype=dtype, device=device)[:rows].expand(batch, rows, 3).clone()


def identity_like(theta: torch.Tensor) -> torch.Tensor:
    """The identity transform (1, 2, 3) or (1, 3, 3) of `theta`'s shape, dtype and device."""
    return identity_theta("affine" if theta.shape[1] == 2 else "projective", 1, theta.dtype, theta.device)


class SpatialTransformer(AttentionModule):
    """Localisation net -> theta -> sampling grid -> bilinear sampling of the input.

    channels: input channels. transform: 'affine' (6 parameters) or 'projective' (8).
    loc_channels: output channels of the localisation convolutions (each followed by 2x2 max
    pooling and ReLU). loc_hidden: width of the hidden FC layer (0 for none). out_size: output
    (H, W) of the sampler, default the input's size.
    """

    signals = {"theta": Signal(WARP, neutral=identity_like)}   # the identity warp removes it

    def __init__(self, channels: int, transform: str = "affine", loc_channels: Sequence[int] = (20, 20),
                 loc_hidden: int = 50, loc_kernel_size: int = 5, loc_pool_size: int = 4,
                 out_size=None, zero_init: bool = True, min_denominator: float = 1e-6,
                 precise_sampling: bool = True):
        super().__init__(channels)
        owner = type(self).__name__
        self.transform = check_choice(owner, "transform", transform, TRANSFORMS)
        loc_channels = tuple(check_positive_int(owner, f"loc_channels[{i}]", c) for i, c in enumerate(loc_channels))
        for name, value, minimum in (("loc_hidden", loc_hidden, 0), ("loc_kernel_size", loc_kernel_size, 1),
                                     ("loc_pool_size", loc_pool_size, 1)):
            check_int(owner, name, value, minimum)
        if loc_kernel_size % 2 == 0:
            raise ValueError(f"{owner}: loc_kernel_size must be odd (size-preserving padding), got {loc_kernel_size}")
        check_positive_number(owner, "min_denominator", min_denominator)
        self.out_size = _pair("out_size", out_size)
        self.min_denominator = float(min_denominator)
        self.precise_sampling = bool(precise_sampling)
        self.num_params = 6 if transform == "affine" else 8

        layers: list[nn.Module] = []
        prev = channels
        for width in loc_channels:
            layers += [nn.Conv2d(prev, width, loc_kernel_size, padding=loc_kernel_size // 2),
                       nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(inplace=True)]
            prev = width
        layers += [nn.AdaptiveAvgPool2d(loc_pool_size), nn.Flatten(1)]
        features = prev * loc_pool_size * loc_pool_size
        if loc_hidden:
            layers += [nn.Linear(features, loc_hidden), nn.ReLU(inplace=True)]
            features = loc_hidden
        self.localisation = nn.Sequential(*layers)
        self.regression = nn.Linear(features, self.num_params)
        if zero_init:
            nn.init.zeros_(self.regression.weight)
        with torch.no_grad():
            self.regression.bias.copy_(identity_theta(transform).flatten()[: self.num_params])

    def localisation_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters that predict theta (localisation net and regression layer)."""
        yield from self.localisation.parameters()
        yield from self.regression.parameters()

    def predict_theta(self, x: torch.Tensor) -> torch.Tensor:
        """theta for each sample: (N, 2, 3) affine or (N, 3, 3) projective."""
        features = self.localisation(x)
        with float32_math(features):   # theta, the grid and the sampling stay float32 under autocast
            params = self.regression(upcast(features))
        if self.transform == "affine":
            return params.view(-1, 2, 3)
        ones = torch.ones_like(params[:, :1])
        return torch.cat([params, ones], dim=1).view(-1, 3, 3)

    def grid(self, theta: torch.Tensor, size) -> torch.Tensor:
        """Sampling grid (N, H, W, 2) of source (x, y) in [-1, 1] for output size (H, W) (or a full
        (N, C, H, W) size); the grid F.grid_sample uses with align_corners=False."""
        # torch.fx (shapes unknown) or torch.jit.trace (sizes are traced tensors, not ints): the
        # checks are skipped and the transform decides the branch
        traced = is_traced(theta) or torch.jit.is_tracing()
        if not traced and (not isinstance(theta, torch.Tensor) or theta.dim() != 3
                           or tuple(theta.shape[1:]) not in ((2, 3), (3, 3))):
            raise ValueError(f"SpatialTransformer.grid: theta must be (N, 2, 3) or (N, 3, 3), "
                             f"got {tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__}")
        size = tuple(size)
        height, width = size[-2:] if traced else _pair("size", size[-2:])
        batch = theta.shape[0]
        affine = self.transform == "affine" if traced else theta.shape[1] == 2
        if affine:
            return F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
        # Pixel centres in normalised coordinates, the convention of align_corners=False.
        ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
        xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        target = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, height * width, 3)
        source = target @ theta.transpose(1, 2)                   # (N, H*W, 3): (u, v, w)
        w = source[..., 2:]
        sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))
        w = torch.where(w.abs() < self.min_denominator, sign * self.min_denominator, w)
        return (source[..., :2] / w).view(batch, height, width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        theta = self.observe("theta", self.predict_theta(x))
        size = self.out_size or (x.shape[2], x.shape[3])
        # Sampling in float64 (`precise_sampling`) or at least float32, also under autocast.
        # (A torch.fx graph, traced without dtypes, samples in float32 unless precise_sampling.)
        dtype = torch.float64 if self.precise_sampling or (not is_traced(x) and x.dtype == torch.float64) \
            else torch.float32
        with float32_math(x):
            grid = self.grid(theta.to(dtype), size)
            out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.to(x.dtype)


def localisation_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that predict theta anywhere in `model`, each once: those of every submodule
    with a `localisation_parameters()` method (a SpatialTransformer, whether in front of a
    backbone or an 'stn' attention module in a block, or a user's module that follows the same
    protocol). The optimizer trains these at `stn_lr_scale` times the base learning rate."""
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        method = getattr(module, "localisation_parameters", None)
        if callable(method):
            found.update((id(p), p) for p in method())
    return list(found.values())
