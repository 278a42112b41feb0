"""Accuracy and mean cross-entropy of a model on a test set held as tensors or as a Dataset."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int
from ..data.augment import normalise
from .device import resolve_device
from .precision import PrecisionChoice


@torch.no_grad()
def evaluate(model: nn.Module, x, y: Optional[torch.Tensor] = None, batch_size: int = 512,
             device: Optional[torch.device | str] = None, mean=None, std=None, normalise_input: bool = True,
             channels_last: bool = False, amp: bool = False, num_workers: int = 0,
             predictions: bool = False, precision: Optional[PrecisionChoice] = None) -> dict:
    """Accuracy and mean cross-entropy of `model` on images `x` (N, C, H, W) with labels `y`.

    `x` may also be a torch Dataset of (image, label) pairs (then `y` is None; `num_workers`
    DataLoader workers decode it). Images that are uint8 are divided by 255; with `mean`/`std`
    (per channel, 0..1 scale) they are standardised. The forward runs under `precision`'s autocast
    (train.precision; None: float32, or with the older `amp=True` float16 on CUDA).
    The model's train/eval mode is restored afterwards. Returns {"acc", "loss", "count"}, and with
    `predictions` also "predictions" and "labels" (int64 CPU tensors in the order of `x`: the
    per-example record that paired tests over a shared test set need).
    """
    check_int("evaluate", "batch_size", batch_size, 1)
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    predicted, labels = [], []
    try:
        for xb, yb in _eval_batches(x, y, batch_size, num_workers):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if normalise_input and mean is not None and std is not None:
                xb = normalise(xb, mean, std)
            elif xb.dtype == torch.uint8:
                xb = xb.float().div_(255.0)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if precision is not None:
                ctx = precision.autocast()
            else:
                ctx = torch.autocast("cuda", dtype=torch.float16) if (amp and device.type == "cuda") else nullcontext()
            with ctx:
                logits = model(xb)
            if yb.numel() and (int(yb.min()) < 0 or int(yb.max()) >= logits.shape[1]):
                raise ValueError(f"evaluate: labels span {int(yb.min())}..{int(yb.max())} but the model predicts "
                                 f"{logits.shape[1]} classes (expected labels 0..{logits.shape[1] - 1})")
            total_loss += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
            guess = logits.argmax(1)
            correct += int((guess == yb).sum())
            count += len(yb)
            if predictions:
                predicted.append(guess.cpu())
                labels.append(yb.cpu())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: no samples to evaluate")
    out = {"acc": correct / count, "loss": total_loss / count, "count": count}
    if predictions:
        out.update(predictions=torch.cat(predicted), labels=torch.cat(labels))
    return out


def _eval_batches(x, y, batch_size, num_workers=0):
    if isinstance(x, torch.Tensor):
        if y is None or len(y) != len(x):
            raise ValueError(f"evaluate: need labels y with one entry per image, got {None if y is None else len(y)} "
                             f"for {len(x)} images")
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
    else:
        loader = torch.utils.data.DataLoader(x, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for xb, yb in loader:
            yield xb, torch.as_tensor(yb, dtype=torch.int64)


__all__ = ["evaluate"]
