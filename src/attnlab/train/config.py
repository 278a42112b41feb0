"""`TrainConfig`: every setting of one training run, validated, and round-tripped through dicts
(config.yaml of a run, the JSON state of a checkpoint, the presets of `attnlab compare`).

Not a paper module. Defaults follow the CIFAR ResNet recipe of He et al. 2016 (SGD, momentum
0.9, batch 128, lr 0.1) with a cosine schedule instead of the paper's steps (the step schedule is
`schedule='step'`, `milestones=[...]` in epochs, `gamma=0.1`), and Nesterov momentum on by
default (switch `nesterov`). `channels_last=None` (the default) turns the channels-last memory
format on, on CPU and CUDA alike: on the 2-core CPU of this project it makes ResNet-20 training
steps ~20% faster (interleaved measurement, one thread). The spatial transformer's localisation network trains at
`stn_lr_scale` times the base learning rate (the STN paper lowers it for the localisation net).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Fields that may change between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("epochs", "data_dir", "checkpoint_every", "checkpoint_every_steps", "keep_checkpoints",
                     "eval_batch_size", "num_workers", "max_bad_steps", "device", "compile", "threads")


@dataclass
class TrainConfig:
    """One training run. See `TrainConfig.validate` for the accepted values."""

    model: str = "resnet20"
    attention: Optional[str] = None
    attention_kwargs: dict = field(default_factory=dict)
    attention_stages: Optional[list] = None
    attention_position: Optional[str] = None
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = "digits"
    data_dir: Optional[str] = None
    image_size: Optional[Any] = None
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: dict = field(default_factory=dict)       # {"crop_padding": int, "flip": bool}; missing -> dataset default
    seed: int = 0
    deterministic: bool = False
    channels_last: Optional[bool] = None             # None: on (CPU and CUDA: faster convolutions)
    amp: bool = False
    compile: bool = False
    sync_bn: bool = False                            # torchrun only: BatchNorm statistics over all ranks
    stn_lr_scale: float = 0.1
    max_bad_steps: int = 0
    checkpoint_every: int = 1                        # epochs; 0 = only at the end
    checkpoint_every_steps: int = 0                  # also every N optimizer steps; 0 = off
    keep_checkpoints: int = 2
    device: str = "auto"
    num_workers: int = 2                             # DataLoader workers, lazily decoded sets only
    threads: Optional[int] = None                    # torch intra-op threads while training; None = torch's default

    # ------------------------------------------------------------------ dict round trip
    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a dict (e.g. a YAML file); unknown keys raise with the closest field name."""
        if not isinstance(data, dict):
            raise TypeError(f"TrainConfig.from_dict expects a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), names, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(hints)}; accepted: {', '.join(names)}")
        return cls(**data).validate()

    def to_dict(self) -> dict:
        """Plain JSON/YAML-able dict (lists, not tuples)."""
        out = dataclasses.asdict(self)
        for key in ("attention_stages", "milestones", "image_size"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        return out

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes).validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise a ValueError / TypeError naming the bad field, its value and what is accepted."""
        from ..data.datasets import resolve_dataset_name

        def need(cond: bool, name: str, expected: str, exc=ValueError):
            if not cond:
                raise exc(f"TrainConfig.{name} = {getattr(self, name)!r} is invalid; expected {expected}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        need(isinstance(self.model, str) and bool(self.model), "model", "a model name (attnlab list models)", TypeError)
        need(self.attention is None or isinstance(self.attention, str), "attention", "a name or None", TypeError)
        for name in ("attention_kwargs", "model_kwargs", "augment"):
            need(isinstance(getattr(self, name), dict), name, "a dict", TypeError)
        need(isinstance(self.dataset, str), "dataset", "a dataset name (attnlab list datasets)", TypeError)
        resolve_dataset_name(self.dataset)
        need(self.data_dir is None or isinstance(self.data_dir, str), "data_dir", "a path string or None", TypeError)
        if isinstance(self.image_size, tuple):
            self.image_size = list(self.image_size)
        need(self.image_size is None or (is_int(self.image_size) and self.image_size > 0)
             or (isinstance(self.image_size, list) and len(self.image_size) == 2
                 and all(is_int(v) and v > 0 for v in self.image_size)),
             "image_size", "None, a positive int or [H, W]")
        need(is_int(self.epochs) and self.epochs >= 0, "epochs", "an int >= 0")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an int >= 1")
        need(is_int(self.eval_batch_size) and self.eval_batch_size >= 1, "eval_batch_size", "an int >= 1")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(is_num(self.momentum) and 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(isinstance(self.nesterov, bool), "nesterov", "a bool", TypeError)
        need(not (self.nesterov and self.optimizer == "sgd" and self.momentum == 0), "nesterov",
             "False when momentum is 0 (Nesterov needs momentum)")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        if isinstance(self.milestones, tuple):
            self.milestones = list(self.milestones)
        need(isinstance(self.milestones, list) and all(is_num(m) and m > 0 for m in self.milestones)
             and list(self.milestones) == sorted(self.milestones), "milestones", "an increasing list of epochs > 0")
        need(is_num(self.gamma) and 0 < self.gamma <= 1, "gamma", "a number in (0, 1]")
        need(is_num(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs", "a number >= 0")
        need(is_num(self.label_smoothing) and 0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)")
        unknown_aug = [k for k in self.augment if k not in ("crop_padding", "flip")]
        need(not unknown_aug, "augment", "a dict with keys crop_padding (int >= 0) and flip (bool)")
        pad = self.augment.get("crop_padding")
        need(pad is None or (is_int(pad) and pad >= 0), "augment", "crop_padding an int >= 0")
        flip = self.augment.get("flip")
        need(flip is None or isinstance(flip, bool), "augment", "flip a bool")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0")
        for name in ("deterministic", "amp", "compile", "sync_bn"):
            need(isinstance(getattr(self, name), bool), name, "a bool", TypeError)
        need(self.channels_last is None or isinstance(self.channels_last, bool), "channels_last",
             "a bool or None (automatic: on for CUDA only)", TypeError)
        need(is_num(self.stn_lr_scale) and self.stn_lr_scale > 0, "stn_lr_scale", "a number > 0")
        need(is_int(self.max_bad_steps) and self.max_bad_steps >= 0, "max_bad_steps", "an int >= 0")
        need(is_int(self.checkpoint_every) and self.checkpoint_every >= 0, "checkpoint_every", "an int >= 0 (epochs)")
        need(is_int(self.checkpoint_every_steps) and self.checkpoint_every_steps >= 0, "checkpoint_every_steps",
             "an int >= 0 (steps)")
        need(is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1, "keep_checkpoints", "an int >= 1")
        need(self.device in DEVICES or (isinstance(self.device, str) and self.device.startswith("cuda:")),
             "device", f"one of {', '.join(DEVICES)} or cuda:N")
        need(is_int(self.num_workers) and self.num_workers >= 0, "num_workers", "an int >= 0")
        need(self.threads is None or (is_int(self.threads) and self.threads >= 1), "threads", "None or an int >= 1")
        return self
