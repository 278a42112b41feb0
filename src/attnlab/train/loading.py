"""A trained model back from its run: the model a config describes, and the weights of a
checkpoint put into it (`load_trained`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..checks import check_choice
from ..io.checkpoint import CheckpointError, best_checkpoint, resolve_checkpoint
from ..models import create_model
from .config import TrainConfig
from .device import resolve_device
from .run_checkpoint import load_checkpoint


def build_model(config: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    """The model a config describes, for a dataset with `num_classes` and `in_chans`."""
    return create_model(config.model, num_classes=num_classes, in_chans=in_chans, attention=config.placement,
                        **dict(config.model_kwargs))


def current_keys(model: nn.Module, model_state: dict) -> dict:
    """An attnlab checkpoint's model state under `model`'s current parameter names: a family that
    renamed its modules maps the old names in `remap_pretrained(state, "attnlab")`."""
    remap = getattr(model, "remap_pretrained", None)
    return remap(dict(model_state), "attnlab") if callable(remap) else model_state


def load_trained(path: str | os.PathLike, which: str = "latest", device: str | torch.device = "cpu"):
    """(model in eval mode, TrainConfig) from a run folder, a checkpoints folder or a checkpoint
    file. `which='best'` picks the checkpoint with the best test accuracy in a folder."""
    check_choice("load_trained", "which", which, ("latest", "best"))
    device = resolve_device(device)
    target = Path(path)
    if which == "best" and target.is_dir():
        target = best_checkpoint(target) or resolve_checkpoint(target)
    ckpt = load_checkpoint(target, needs="run")   # the config and the data's shape are checked there
    config = TrainConfig.from_dict(ckpt.state["config"])
    data = ckpt.state["data"]
    try:
        model = build_model(config, data["num_classes"], data["in_chans"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {ckpt.path}: fields state.config / state.data do not build a model "
                              f"({' '.join(str(err).split())})") from None
    missing, unexpected = model.load_state_dict(current_keys(model, ckpt.model_state()), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit model {config.model!r}: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device).eval()
    model.data_info = data
    return model, config


__all__ = ["build_model", "current_keys", "load_trained"]
