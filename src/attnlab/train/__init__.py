"""Training: `TrainConfig`, the `Trainer`, `train()`, `evaluate()`, `load_trained()`, checkpoints."""
from ..io.checkpoint import CheckpointError, save_checkpoint
from .config import TrainConfig
from .run_checkpoint import load_checkpoint
from .evaluate import evaluate
from .loading import load_trained
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted, train

__all__ = ["TrainConfig", "Trainer", "train", "evaluate", "load_trained", "CheckpointError",
           "load_checkpoint", "save_checkpoint", "NonFiniteLossError", "TrainingInterrupted"]
