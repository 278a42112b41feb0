"""How far two maps agree, and whether a map is faithful to the model: the numbers behind the
class-evidence and sanity sections of an explanation.

    rank_correlation(cam, module_map)       # (N,) Spearman's rho per image
    top_overlap(cam, module_map, 0.10)      # (N,) IoU of the top 10% pixels of each map
    curves = deletion_insertion(model, x, maps, target)   # Petsiuk et al. 2018
    curves.deletion_auc, curves.insertion_auc             # (N,) each

Every map here is (N, 1, H, W) or (N, H, W) at the input's size (callers resize them first).

Agreement. `rank_correlation` is Spearman's rank correlation of the two maps' pixel values, per
image (scipy.stats.spearmanr); a map constant over an image has no ranking, so its value is NaN
there (left out of means). `top_overlap` is the intersection over union of the `fraction` of
pixels each map ranks highest.

Faithfulness (Petsiuk, Das and Saenko 2018, "RISE", section 4.1). The deletion curve is the
model's probability of the target class as the pixels are removed in the order the map ranks them,
most important first, `steps` equal slices of the image at a time (the curve has steps + 1
points, the intact image first); a removed pixel takes the value of the deletion substrate, 0 in
the normalised input (the data mean), as in the paper's code. The insertion curve starts from the
insertion substrate, the image blurred by a Gaussian (`blur_sigma`, 5 pixels as in the paper's
code; on small images that leaves little of the content, which is the point of the substrate) and
puts the pixels back in the same order. AUC is the area under the curve over the fraction of pixels changed, by
the trapezoid rule, in [0, 1]. A faithful map has a low deletion AUC (the probability falls as
soon as its top pixels go) and a high insertion AUC.

Ties are broken at random (`generator`): pixels a map gives the same value come in a random order,
so a constant map is a random ranking and its expected AUC equals the random baseline's. The
random baseline (`random_baseline`) is the mean AUC of `draws` random rankings per image.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from ..checks import check_int, check_number

TOP_FRACTION = 0.10


def _flat(maps: torch.Tensor, owner: str) -> torch.Tensor:
    """(N, 1, H, W) or (N, H, W) -> (N, H*W) float64."""
    if not isinstance(maps, torch.Tensor) or maps.dim() not in (3, 4) or (maps.dim() == 4 and maps.shape[1] != 1):
        raise ValueError(f"{owner}: expected maps of shape (N, 1, H, W) or (N, H, W), got "
                         f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")
    return maps.detach().to("cpu", torch.float64).flatten(1)


def _pair(a: torch.Tensor, b: torch.Tensor, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    fa, fb = _flat(a, owner), _flat(b, owner)
    if fa.shape != fb.shape:
        raise ValueError(f"{owner}: the two maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return fa, fb


# --------------------------------------------------------------------------------------------- agreement

def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman's rho between the pixel values of `a` and `b`, per image: an (N,) array, NaN for an
    image where either map is constant."""
    fa, fb = _pair(a, b, "rank_correlation")
    out = np.full(len(fa), math.nan)
    for i, (u, v) in enumerate(zip(fa.numpy(), fb.numpy())):
        if np.ptp(u) > 0 and np.ptp(v) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[i] = stats.spearmanr(u, v).statistic
    return out


def top_mask(maps: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """(N, H*W) booleans: the ceil(fraction * H*W) pixels each map ranks highest (ties: the first)."""
    check_number("top_mask", "fraction", fraction, 0.0, 1.0)
    flat = _flat(maps, "top_mask")
    k = max(1, math.ceil(fraction * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    return mask.scatter_(1, flat.topk(k, dim=1).indices, True)


def top_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Intersection over union of the top `fraction` of pixels of `a` and of `b`, per image (N,)."""
    _pair(a, b, "top_overlap")
    ta, tb = top_mask(a, fraction), top_mask(b, fraction)
    return ((ta & tb).sum(1).double() / (ta | tb).sum(1).double()).numpy()


def nanmean(values) -> Optional[float]:
    """The mean of the finite values, None when there are none (strict JSON has no NaN)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


# --------------------------------------------------------------------------------------------- faithfulness

def ranking(maps: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(N, H*W) pixel indices, the highest value first; equal values in a random order."""
    flat = _flat(maps, "ranking")
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in range(len(flat))])
    shuffled = flat.gather(1, shuffle)
    order = torch.argsort(shuffled, dim=1, descending=True, stable=True)
    return shuffle.gather(1, order)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """`x` (N, C, H, W) blurred by a Gaussian of standard deviation `sigma` pixels (reflect padding
    where the image allows it, else replicate)."""
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    out = F.pad(x, (radius, radius, 0, 0), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode=mode)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves (N, S + 1) sampled at S + 1 equally spaced points of [0, 1] (trapezoid)."""
    steps = curve.shape[-1] - 1
    return (curve.sum(-1) - (curve[..., 0] + curve[..., -1]) / 2) / steps


@dataclass
class Curves:
    """Deletion and insertion curves (N, steps + 1) of the target probability, and their AUCs (N,)."""

    deletion: torch.Tensor
    insertion: torch.Tensor

    @property
    def deletion_auc(self) -> torch.Tensor:
        return auc(self.deletion)

    @property
    def insertion_auc(self) -> torch.Tensor:
        return auc(self.insertion)


def _probability(model: Callable, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(x).float(), dim=1).gather(1, target.view(-1, 1))[:, 0].cpu()


def _curve(model, start: torch.Tensor, finish: torch.Tensor, order: torch.Tensor, target, steps: int,
           batch: int = 512) -> torch.Tensor:
    """Probability as the pixels in `order` go from `start` to `finish`, `steps` slices at a time
    (every stage of every image evaluated together, `batch` images a forward pass)."""
    n, c, h, w = start.shape
    per_step = math.ceil(h * w / steps)
    changed = torch.zeros(n, steps + 1, h * w, dtype=torch.bool)            # pixels taken from `finish`
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(h * w).expand(n, -1))          # where each pixel comes in the order
    for s in range(1, steps + 1):
        changed[:, s] = position < s * per_step
    mask = changed.to(start.device).view(n, steps + 1, 1, h, w)
    stages = torch.where(mask, finish.unsqueeze(1), start.unsqueeze(1)).flatten(0, 1)
    targets = target.repeat_interleave(steps + 1)
    probs = torch.cat([_probability(model, stages[i:i + batch], targets[i:i + batch])
                       for i in range(0, len(stages), batch)])
    return probs.view(n, steps + 1)


def deletion_insertion(model: Callable, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                       steps: int = 16, blur_sigma: float = 5.0,
                       generator: Optional[torch.Generator] = None) -> Curves:
    """Deletion and insertion curves of `maps` (N, 1, H, W) for `model` on normalised inputs `x`
    (N, C, H, W), for the classes `target` (N,); see the module docstring. `blur_sigma` defaults
    to the paper's 5 pixels."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"deletion_insertion: expected x (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    flat = _flat(maps, "deletion_insertion")
    if flat.shape != (x.shape[0], x.shape[2] * x.shape[3]):
        raise ValueError(f"deletion_insertion: maps must be (N, 1, H, W) at the input's size "
                         f"{(x.shape[0], 1) + tuple(x.shape[2:])}, got {tuple(maps.shape)}")
    steps = check_int("deletion_insertion", "steps", steps, 1)
    sigma = check_number("deletion_insertion", "blur_sigma", blur_sigma, 0.0)
    target = torch.as_tensor(target, dtype=torch.long).view(-1)
    order = ranking(maps, generator)
    blurred = gaussian_blur(x, max(sigma, 1e-3))
    with torch.no_grad():
        deletion = _curve(model, x, torch.zeros_like(x), order, target, steps)
        insertion = _curve(model, blurred, x, order, target, steps)
    return Curves(deletion, insertion)


def random_baseline(model: Callable, x: torch.Tensor, target: torch.Tensor, draws: int = 4, steps: int = 16,
                    blur_sigma: float = 5.0, generator: Optional[torch.Generator] = None) -> Curves:
    """The curves of random rankings: each the mean over `draws` uniformly random maps per image."""
    draws = check_int("random_baseline", "draws", draws, 1)
    runs = [deletion_insertion(model, x, torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator), target,
                               steps, blur_sigma, generator) for _ in range(draws)]
    return Curves(torch.stack([r.deletion for r in runs]).mean(0), torch.stack([r.insertion for r in runs]).mean(0))


__all__ = ["TOP_FRACTION", "rank_correlation", "top_mask", "top_overlap", "nanmean", "ranking", "gaussian_blur",
           "auc", "Curves", "deletion_insertion", "random_baseline"]
