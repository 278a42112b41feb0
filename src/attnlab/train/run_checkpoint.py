"""A training run's checkpoint: the file reader of `attnlab.io.checkpoint` with the stored config
checked as a `TrainConfig`.

    ckpt = load_checkpoint("runs/se", needs="run")     # CheckpointError naming a bad config field

The file format knows nothing of training; what makes a stored config valid is this package's
`TrainConfig`, so every reader of a run (evaluation, resume, `load_trained`, the CLI) loads
through here.
"""
from __future__ import annotations

import os
from typing import Optional

from ..io.checkpoint import Checkpoint
from ..io.checkpoint import load_checkpoint as load_checkpoint_file
from .config import TrainConfig


def load_checkpoint(path: str | os.PathLike, expect_config: Optional[dict] = None,
                    ignore_fields: tuple[str, ...] = (), needs: str = "tensors") -> Checkpoint:
    """`attnlab.io.checkpoint.load_checkpoint` whose 'run' and 'resume' levels also check that the
    stored config makes a valid TrainConfig (CheckpointError naming the field otherwise)."""
    return load_checkpoint_file(path, expect_config, ignore_fields, needs, check_config=TrainConfig.from_dict)


__all__ = ["load_checkpoint"]
