"""`TrainConfig`: every setting of one training run, validated, and round-tripped through dicts
(config.yaml of a run, the JSON state of a checkpoint, the presets of `attnlab compare`).

Not a paper module. Defaults follow the CIFAR ResNet recipe of He et al. 2016 (SGD, momentum
0.9, batch 128, lr 0.1) with a cosine schedule instead of the paper's steps (the step schedule is
`schedule='step'`, `milestones=[...]` in epochs, `gamma=0.1`), and Nesterov momentum on by
default (switch `nesterov`). `channels_last=None` (the default) turns the channels-last memory
format on, on CPU and CUDA alike (ResNet-20 training steps measured about 20% faster on a CPU,
one thread, interleaved with the contiguous layout; benchmarks/RESULTS.md); `channels_last=False`
keeps the contiguous layout. The spatial transformer's localisation network trains at
`stn_lr_scale` times the base learning rate (the STN paper lowers it for the localisation net).
The attention fields (`attention`, `attention_kwargs`, `attention_stages`,
`attention_position`) together make the model's `Placement` (`TrainConfig.placement`).
`precision="auto"` (default) lets train.precision pick the arithmetic for the hardware (bf16 where
it runs natively and faster, fp16 with loss scaling on older GPUs, else fp32); the run records
what it chose. `compile=None` (default) compiles runs of at least 4,000 steps
(`trainer.COMPILE_MIN_STEPS`). `threads=None` follows the cores that other processes leave free,
epoch by epoch, except in deterministic runs (the thread count changes float sums).

Validation happens in one place, `TrainConfig.validate`, which every way of making a config goes
through (the constructor, `from_dict` and `from_yaml`, `replace`, the CLI flags): first the type
of every field, read from the annotations below (an int field refuses a bool, a float field takes
an int, `Optional[X]` also takes None, `list[X]` checks each item), then the values (ranges,
names, finite floats). A wrong type raises a TypeError, a wrong value a ValueError; both name the
field, the value and what is accepted.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..attention.stn import localisation_parameters
from ..models.layers import Placement
from .precision import PRECISIONS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Seeds feed numpy's legacy seeding (0 .. 2**32 - 1) and torch generators; the Trainer derives
# per-epoch seeds seed * 1_000_003 + epoch, which stay far inside torch's 64-bit range.
SEED_MAX = 2**32 - 1
# Every other int field is a count (epochs, steps, pixels, images, threads, workers): bounded by the
# largest C int, which the libraries below take (thread pools, semaphores) and which keeps sizes
# such as (2 * crop_padding + H) far inside torch's 64-bit range.
COUNT_MAX = 2**31 - 1
# Fields that may change between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("epochs", "data_dir", "checkpoint_every", "checkpoint_every_steps", "keep_checkpoints",
                     "eval_batch_size", "num_workers", "max_bad_steps", "device", "compile", "threads")


@dataclass
class TrainConfig:
    """One training run, validated when made. See `TrainConfig.validate` for the accepted values."""

    model: str = "resnet20"
    attention: Optional[str] = None
    attention_kwargs: dict = field(default_factory=dict)
    attention_stages: Optional[list[int]] = None
    attention_position: Optional[str] = None
    model_kwargs: dict = field(default_factory=dict)
    dataset: str = "digits"
    data_dir: Optional[str] = None
    image_size: Optional[Union[int, list[int]]] = None
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: dict = field(default_factory=dict)       # {"crop_padding": int, "flip": bool}; missing -> dataset default
    seed: int = 0
    deterministic: bool = False
    channels_last: Optional[bool] = None             # None: on (CPU and CUDA: faster convolutions)
    precision: str = "auto"                          # auto | fp32 | bf16 | fp16 (train.precision)
    amp: bool = False                                # older name: True = fp16 autocast on CUDA only
    compile: Optional[bool] = None                   # None: auto, on for runs long enough to repay it
    sync_bn: bool = False                            # torchrun only: BatchNorm statistics over all ranks
    stn_lr_scale: float = 0.1
    max_bad_steps: int = 0
    checkpoint_every: int = 1                        # epochs; 0 = only at the end
    checkpoint_every_steps: int = 0                  # also every N optimizer steps; 0 = off
    keep_checkpoints: int = 2
    device: str = "auto"
    num_workers: int = 2                             # DataLoader workers, lazily decoded sets only
    threads: Optional[int] = None                    # torch intra-op threads while training; None = torch's default

    def __post_init__(self):
        self.validate()

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
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "TrainConfig":
        """Build from a YAML file holding a mapping of fields (`read_yaml_mapping` says what is refused)."""
        return cls.from_dict(read_yaml_mapping(path, "TrainConfig file"))

    def to_dict(self) -> dict:
        """Plain JSON/YAML-able dict (lists, not tuples)."""
        out = dataclasses.asdict(self)
        for key in ("attention_stages", "milestones", "image_size"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        return out

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def placement(self) -> Placement:
        """The model's attention placement made of the four attention fields (a ValueError or
        TypeError naming the field when they do not make one)."""
        return Placement(self.attention, self.attention_kwargs, self.attention_stages, self.attention_position)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise a TypeError (wrong type) or ValueError (wrong value) naming the bad field, its
        value and what is accepted; types are checked first, for every field, then values."""
        from ..data.datasets import resolve_dataset_name

        hints = _field_types()
        for name in ("attention_stages", "milestones", "image_size"):   # tuples are welcome, stored as lists
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        if isinstance(self.data_dir, os.PathLike):                       # a Path is welcome, stored as a str
            self.data_dir = os.fspath(self.data_dir)
        check_field_types({name: getattr(self, name) for name in hints}, "TrainConfig.")
        for name in hints:
            if not _finite(getattr(self, name)):
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r} is invalid; expected a finite number "
                                 "(not inf or nan)")
            if name != "seed" and _largest_int(getattr(self, name)) > COUNT_MAX:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r} is out of range; expected ints up to "
                                 f"2**31 - 1 = {COUNT_MAX}")

        def need(cond: bool, name: str, expected: str):
            if not cond:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r} is invalid; expected {expected}")

        need(bool(self.model), "model", "a model name (attnlab list models)")
        resolve_dataset_name(self.dataset)
        size = self.image_size if isinstance(self.image_size, list) else [self.image_size]
        need(self.image_size is None or (len(size) in (1, 2) and all(v > 0 for v in size)),
             "image_size", "None, a positive int or [H, W]")
        need(self.epochs >= 0, "epochs", "an int >= 0")
        need(self.batch_size >= 1, "batch_size", "an int >= 1")
        need(self.eval_batch_size >= 1, "eval_batch_size", "an int >= 1")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(self.lr > 0, "lr", "a number > 0")
        need(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(not (self.nesterov and self.optimizer == "sgd" and self.momentum == 0), "nesterov",
             "False when momentum is 0 (Nesterov needs momentum)")
        need(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        need(all(m > 0 for m in self.milestones) and self.milestones == sorted(self.milestones), "milestones",
             "an increasing list of epochs > 0")
        need(0 < self.gamma <= 1, "gamma", "a number in (0, 1]")
        need(self.warmup_epochs >= 0, "warmup_epochs", "a number >= 0")
        need(self.epochs == 0 or self.warmup_epochs <= self.epochs, "warmup_epochs",
             f"at most epochs ({self.epochs}): a longer warm-up never reaches the base learning rate")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)")
        unknown_aug = [k for k in self.augment if k not in ("crop_padding", "flip")]
        need(not unknown_aug, "augment", "a dict with keys crop_padding (int >= 0) and flip (bool)")
        pad = self.augment.get("crop_padding")
        need(pad is None or (_type_ok(pad, int) and pad >= 0), "augment", "crop_padding an int >= 0")
        flip = self.augment.get("flip")
        need(flip is None or isinstance(flip, bool), "augment", "flip true or false")
        need(0 <= self.seed <= SEED_MAX, "seed", f"an int in 0 .. 2**32 - 1 = {SEED_MAX}")
        need(self.stn_lr_scale > 0, "stn_lr_scale", "a number > 0")
        need(self.max_bad_steps >= 0, "max_bad_steps", "an int >= 0")
        need(self.checkpoint_every >= 0, "checkpoint_every", "an int >= 0 (epochs)")
        need(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "an int >= 0 (steps)")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "an int >= 1")
        need(self.device in DEVICES or re.fullmatch(r"cuda:\d+", self.device) is not None,
             "device", f"one of {', '.join(DEVICES)} or cuda:N")
        need(self.num_workers >= 0, "num_workers", "an int >= 0")
        need(self.threads is None or self.threads >= 1, "threads", "None or an int >= 1")
        need(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        return self

    def unused_settings(self, model=None) -> dict[str, str]:
        """{field: why it has no effect in this config} for the fields that the other fields make
        unused: the step schedule's `milestones` and `gamma` under another schedule, SGD's
        `momentum` and `nesterov` under AdamW, `amp` (float16 autocast on CUDA) when `precision`
        is not 'auto' or the device is not CUDA ('auto' without a GPU present). Given the built `model`, also the attention
        fields when the model has no attention (its `placement` names no mechanism) and
        `stn_lr_scale` when it holds no spatial transformer (`attention.stn.localisation_parameters`).

        Not refused by `validate`: a checkpoint or study folder written before may hold such a
        value, and must still load. The `attnlab train` command refuses a flag, or a --config
        key holding a value other than the default, that this lists."""
        unused = {}
        if self.schedule != "step":
            for name in ("milestones", "gamma"):
                unused[name] = f"only the step schedule uses it (schedule is {self.schedule!r})"
        if self.optimizer != "sgd":
            for name in ("momentum", "nesterov"):
                unused[name] = f"only SGD uses it (optimizer is {self.optimizer!r})"
        if self.precision != "auto":
            unused["amp"] = (f"precision {self.precision!r} decides the arithmetic (amp only means fp16 on CUDA "
                             "when precision is 'auto'; ask for precision 'fp16' instead)")
        elif self.device in ("cpu", "mps") or (self.device == "auto" and not torch.cuda.is_available()):
            unused["amp"] = (f"it means float16 autocast on CUDA only (device {self.device!r} is not CUDA here; "
                             "precision 'bf16' or 'fp16' asks for reduced precision elsewhere)")
        if model is not None:
            placement = getattr(model, "placement", None)
            if placement is not None and placement.name is None:
                for name in ("attention_kwargs", "attention_stages", "attention_position"):
                    unused[name] = f"model {self.model!r} as configured has no attention (set attention)"
            if not localisation_parameters(model):
                unused["stn_lr_scale"] = (f"model {self.model!r} as configured has no spatial transformer, whose "
                                          "localisation network it scales (set attention 'stn' or "
                                          "spatial_transformer)")
        return unused


def check_seed(value, what: str = "seed") -> int:
    """`value` as a seed (an int in 0 .. SEED_MAX, not a bool), else a TypeError / ValueError naming `what`."""
    if not _type_ok(value, int):
        raise TypeError(f"{what} = {value!r} has the wrong type ({type(value).__name__}); expected an int")
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{what} = {value!r} is out of range; expected an int in 0 .. 2**32 - 1 = {SEED_MAX}")
    return value


def check_field_types(values: dict, where: str = "TrainConfig.") -> None:
    """Raise a TypeError naming `where` + the field, its value and the type expected for the first
    of `values` ({TrainConfig field: value}; other keys are skipped) whose type its annotation
    refuses (None included, for a field that does not take None)."""
    hints = _field_types()
    for name, value in values.items():
        hint = hints.get(name)
        if hint is not None and not _type_ok(value, hint):
            raise TypeError(f"{where}{name} = {value!r} has the wrong type ({type(value).__name__}); "
                            f"expected {_describe(hint)}{_type_hint(value, hint)}")


@functools.cache
def _unique_key_loader():
    """PyYAML's SafeLoader, but a mapping that holds a key twice is an error (plain YAML keeps the
    last silently); keys merged in with `<<` may still be overridden. Made on first use, so that
    importing this module does not import PyYAML."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:   # an unhashable key: SafeLoader names it
                        continue
                    if first is None:
                        seen[key] = key_node.start_mark.line
                    else:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {key!r} is given twice (lines {first + 1} and "
                            f"{key_node.start_mark.line + 1}); expected each key once", key_node.start_mark)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml_mapping(path: str | os.PathLike, what: str = "YAML file") -> dict:
    """The mapping a YAML file holds (an empty file is {}). A file that is missing, unreadable,
    not UTF-8, not valid YAML, that gives a key twice in one mapping, or whose top level is not a
    mapping raises a ValueError naming the file (`what` says what it was meant to be) and what
    was expected."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r} cannot be read ({err.strerror or err}); "
                         "expected a readable YAML file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                         f"{err.start}); expected a YAML file") from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader())   # SafeLoader's types only
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{what} {str(path)!r} is not valid YAML{where}: {' '.join(str(problem).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a mapping of field: value at its top level, "
                         f"got a {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------- type checks from annotations
_HINTS: dict = {}


def _field_types() -> dict:
    """{field name: resolved annotation} of TrainConfig, in field order."""
    if not _HINTS:
        resolved = typing.get_type_hints(TrainConfig)
        _HINTS.update((f.name, resolved[f.name]) for f in dataclasses.fields(TrainConfig))
    return _HINTS


def _type_ok(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Union:
        return any(_type_ok(value, h) for h in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is list or origin is list:
        return isinstance(value, list) and (not args or all(_type_ok(v, args[0]) for v in value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _finite(value) -> bool:
    """False when a float (or a float in a list) is inf or nan."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _largest_int(value) -> int:
    """The largest int in `value` (itself, a list's items or a dict's values, as in `augment`);
    0 when there is none. A bool is not counted."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((_largest_int(v) for v in items), default=0)


def _describe(hint, plural: bool = False) -> str:
    """The annotation `hint` in words: "an int", "a list of numbers", "a string or None"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        parts = [_describe(h, plural) for h in args if h is not type(None)]
        return " or ".join(parts) + (" or None" if type(None) in args else "")
    if origin is list:
        return ("lists" if plural else "a list") + f" of {_describe(args[0], plural=True)}"
    names = {int: ("an int", "ints"), float: ("a number", "numbers"), bool: ("a bool (true or false)", "bools"),
             str: ("a string", "strings"), dict: ("a mapping", "mappings"), list: ("a list", "lists")}
    one, many = names.get(hint, (getattr(hint, "__name__", str(hint)),) * 2)
    return many if plural else one


def _type_hint(value, hint) -> str:
    """A hint for two traps: a bool where an int is expected (True is an int to Python), and
    PyYAML reading 1e-3 (no dot) as a string, not a number."""
    if isinstance(value, bool) and _type_ok(1, hint):
        return " (a bool is not accepted as an int)"
    if isinstance(value, str) and _type_ok(1.5, hint):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads a number like 1e-3 as a string; write 1.0e-3)"
    return ""


__all__ = ["TrainConfig", "check_field_types", "check_seed", "read_yaml_mapping", "SEED_MAX", "COUNT_MAX"]
