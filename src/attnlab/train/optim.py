"""Optimizers and learning-rate schedules for the Trainer.

Not a paper module; the pieces and where they come from:
* SGD with momentum (and Nesterov's variant, Sutskever et al. 2013) and AdamW (Loshchilov &
  Hutter 2019).
* No weight decay on norm scales/shifts and biases (every parameter with fewer than 2
  dimensions), as in Goyal et al. 2017 ("no bias decay"); the original ResNet recipe decays all
  parameters, which `decay_norm_and_bias=True` restores.
* The localisation network of every spatial transformer in the model (in front of the backbone or
  an 'stn' attention module in a block: `attention.stn.localisation_parameters`) gets
  `stn_lr_scale` times the base learning rate (Jaderberg et al. 2015 train the localisation net
  at a lower rate).
* Schedules are functions of the optimizer step, so a resumed run recomputes the learning rate
  from the step it restarts at: linear warm-up from 0 over `warmup_epochs` (per step, Goyal et
  al. 2017), then cosine to 0 (Loshchilov & Hutter 2017, without restarts), step decay by `gamma`
  at `milestones` (epochs; He et al. 2016), or constant.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..attention.stn import localisation_parameters
from ..checks import check_int
from .config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float, stn_lr_scale: float = 1.0,
                     decay_norm_and_bias: bool = False) -> list[dict]:
    """Param groups: (localisation net or rest) x (decayed or not). Each group carries
    `lr_scale`, the factor the schedule multiplies the base learning rate by."""
    localisation = {id(p) for p in localisation_parameters(model)}
    groups: dict[tuple[bool, bool], list] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        is_loc = id(param) in localisation
        decays = decay_norm_and_bias or param.ndim >= 2
        groups.setdefault((is_loc, decays), []).append(param)
    out = []
    for (is_loc, decays), params in sorted(groups.items()):
        out.append({"params": params, "weight_decay": weight_decay if decays else 0.0,
                    "lr_scale": stn_lr_scale if is_loc else 1.0,
                    "group_name": f"{'localisation' if is_loc else 'main'}/{'decay' if decays else 'no_decay'}"})
    return out


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay, config.stn_lr_scale)
    if not groups:
        raise ValueError(f"model {config.model!r} has no trainable parameters")
    for group in groups:
        group["lr"] = config.lr * group["lr_scale"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; accepted: sgd, adamw")


class LRSchedule:
    """lr(step) = base_lr * warm-up factor * decay factor; `apply(optimizer, step)` sets it."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int):
        check_int("LRSchedule", "steps_per_epoch", steps_per_epoch, 1)
        self.base_lr = config.lr
        self.kind = config.schedule
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = max(1, config.epochs * steps_per_epoch)
        self.warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
        self.milestones = [int(round(m * steps_per_epoch)) for m in config.milestones]
        self.gamma = config.gamma

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate for optimizer step `step` (0-based)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind == "constant":
            decay = 1.0
        elif self.kind == "step":
            decay = self.gamma ** sum(step >= m for m in self.milestones)
        else:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm * decay

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr
