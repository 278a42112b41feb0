"""One Trainer for every attnlab model: fit, evaluate, checkpoint, resume.

    result = train(TrainConfig(model="resnet20", attention="se", dataset="digits", epochs=5), "runs/se")

Not a paper module. The loop is shaped after airbench / nanoGPT: the data stay in memory as
uint8 tensors on the training device; each step gathers a batch by index, augments it as a whole
(`data.augment`), runs forward/backward, and sets the learning rate from the step number. No
DataLoader is used for in-memory sets (it would collate samples one by one in Python); lazily
decoded image folders use one with workers. Speed choices: channels_last by default (ResNet-20,
batch 128, one CPU thread: 0.35 s against 0.42 s a step, interleaved; benchmarks/RESULTS.md),
`zero_grad(set_to_none=True)`, the precision of train.precision (`precision="auto"`: bf16
autocast where the hardware runs it natively and a probe confirms it is faster, fp16 with a
GradScaler on GPUs without bf16, float32 otherwise; printed at start, recorded in config.yaml and
final.json), torch.compile for runs long enough to repay it, and the process-wide settings of
train.process (the thread count, from the cores other processes leave free), set for `fit` and
restored after it.

Where the parts live: the progress bar and epoch lines in train.progress, `evaluate` in
train.evaluate, `build_model` / `load_trained` in train.loading, the process-wide settings and
signal handling in train.process, devices in train.device, data-parallel helpers in
train.distributed. This file holds the loop (`fit` -> `_run_epoch` -> `train_step`) and, after
it, its checkpoint / resume bookkeeping.

Writes into `out_dir`: config.yaml, metrics.jsonl (one JSON line per epoch), final.json,
test_predictions.json (the final model's predicted class for every test example, for paired
per-example tests across runs), and
checkpoints/ (see io.checkpoint), holding the folder's lock while it does (io.run_folder: one
writer per run folder; a second one is refused naming the holder). Resume restores weights,
optimizer, every RNG stream and the data-order position (epoch and batch), so in deterministic mode
on CPU a resumed run ends with the same weights as an uninterrupted one. SIGINT / SIGTERM finish the
step, write a checkpoint and raise `TrainingInterrupted` with the command to resume. A non-finite
loss skips the step while `max_bad_steps` allows, then stops with `NonFiniteLossError` naming the
step, the batch and the last good checkpoint. A checkpoint is never written with non-finite weights
or BatchNorm statistics (these can overflow while the training loss still looks finite): that also
stops with `NonFiniteLossError`, so the last checkpoint on disk is always a usable one.

Under torchrun the same Trainer runs data-parallel (DistributedDataParallel, see
train.distributed and docs/distributed.md): `batch_size` is per rank, each rank trains on its
slice of the single-process global batch, metrics are reduced over ranks and only rank 0 writes.

Choices that differ from common recipes: the last incomplete batch of an epoch is dropped (a
batch of one breaks BatchNorm, and a fixed step count keeps schedules and resume simple); the
data order of epoch e is a permutation drawn from (seed, e) alone, so resuming needs no sampler
state beyond the batch index.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..data.augment import BatchAugment
from ..data.datasets import DatasetSplits, load_dataset
from ..io.checkpoint import (CHECKPOINT_SUBDIR, CheckpointError, atomic_write, list_checkpoints,
                             remove_stale_temporaries, rotate_checkpoints, save_checkpoint, write_failed)
from ..io.run_folder import (CONFIG_FILE, FINAL_FILE, METRICS_FILE, PREDICTIONS_FILE, RunFolderInUse, lock_run_folder,
                             read_metrics)
from . import distributed
from .config import RESUMABLE_CHANGES, TrainConfig
from .device import describe_machine, resolve_device
from .evaluate import evaluate
from .loading import build_model, current_keys
from .optim import LRSchedule, build_optimizer
from .precision import PrecisionChoice, resolve_precision
from .process import FreeCores, check_threads, stop_signals, training_settings
from .progress import ProgressBar, epoch_line
from .run_checkpoint import load_checkpoint


# `compile=None` (auto) compiles runs of at least this many optimizer steps (Trainer._choose_compile).
COMPILE_MIN_STEPS = 4000


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf more often than `max_bad_steps` allows."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after a checkpoint was written; `.checkpoint` is its path."""

    def __init__(self, message: str, checkpoint: Optional[Path]):
        super().__init__(message)
        self.checkpoint = checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- the Trainer
class Trainer:
    """Trains one model on one dataset as a `TrainConfig` says.

    `data` and `model` may be given (tests, benchmarks); otherwise they are loaded / built from
    the config. `out_dir=None` trains without writing anything.
    """

    def __init__(self, config: TrainConfig, out_dir: Optional[str | os.PathLike] = None, progress: bool = True,
                 data: Optional[DatasetSplits] = None, model: Optional[nn.Module] = None,
                 dist_context: Optional[distributed.DistributedContext] = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer expects a TrainConfig, got {type(config).__name__}")
        self.config = config.validate()
        check_threads(config.threads, "TrainConfig.threads")
        # torchrun: the initialised process group (train.distributed); otherwise a single process.
        self.dist = dist_context if dist_context is not None else distributed.current_context()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.writes = self.out_dir is not None and self.dist.is_main   # only rank 0 writes files
        self.progress = progress and self.dist.is_main
        self.device = distributed.rank_device(resolve_device(config.device), self.dist)
        seed_everything(config.seed)
        if data is not None and not isinstance(data, DatasetSplits):
            raise TypeError(f"Trainer: data must be a DatasetSplits (attnlab.data.load_dataset), got {type(data).__name__}")
        if data is not None:
            data.validate()           # shapes, dtypes, empty splits, labels within 0..num_classes-1
        self.data = data if data is not None else load_dataset(config.dataset, config.data_dir, seed=config.seed,
                                                               image_size=config.image_size)
        self.model = model if model is not None else build_model(config, self.data.num_classes, self.data.in_chans)
        self.model.to(self.device)
        self.channels_last = config.channels_last if config.channels_last is not None else True
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward_model = distributed.wrap_model(self.model, self.device, self.dist, config.sync_bn)
        self.precision = self._choose_precision()
        self.scaler = self.precision.scaler()
        # threads=None on a CPU: the cores other processes leave free, chosen again before each
        # epoch (train.process.FreeCores); deterministic runs keep one count (it changes the sums).
        self.free_cores = (FreeCores() if config.threads is None and not config.deterministic
                           and self.device.type == "cpu" and not self.dist.enabled else None)
        augment = {**self.data.default_augment, **{k: v for k, v in config.augment.items() if v is not None}}
        side = min(self.data.image_size)
        if augment["crop_padding"] > side:   # a crop could then miss the image entirely
            raise ValueError(f"TrainConfig.augment crop_padding = {augment['crop_padding']} is larger than the "
                             f"{self.data.image_size[0]}x{self.data.image_size[1]} images; expected 0 .. {side}")
        self.augment = BatchAugment(self.data.mean, self.data.std, augment["crop_padding"], augment["flip"],
                                    channels_last=self.channels_last)
        self.augment_settings = augment
        self.augment_generator = torch.Generator(device=self.device).manual_seed(
            distributed.augment_seed(config.seed, self.dist.rank))
        self.optimizer = build_optimizer(self.model, config)
        n = self.data.num_train
        # batch_size is per rank; a step consumes batch_size * world_size images of the global order.
        self.steps_per_epoch = max(1, n // (config.batch_size * self.dist.world_size))
        self.schedule = LRSchedule(config, self.steps_per_epoch)
        self.compiled, self.compile_reason = self._choose_compile()
        if self.compiled:
            self.forward_model = torch.compile(self.forward_model)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        if self.data.in_memory:
            self.train_x = self.data.train_x.to(self.device)
            self.train_y = self.data.train_y.to(self.device)
        self.params = count_parameters(self.model)
        # Position and counters (restored on resume).
        self.epoch = 0                # completed epochs
        self.batch_in_epoch = 0       # batches done in the current epoch
        self.global_step = 0          # optimizer steps taken (+ skipped bad steps)
        self.bad_steps = 0
        self.seconds = 0.0
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.best_acc = -1.0
        self.last_checkpoint: Optional[Path] = None
        self.device_changes: list[dict] = []   # each resume on another device type (kept in checkpoints)
        self.test_predictions: Optional[tuple[torch.Tensor, torch.Tensor]] = None   # (labels, predicted) of the last test
        self._stop_signal: Optional[int] = None
        self._progress_start: Optional[tuple[float, int]] = None   # (time, epoch) this process began training

    # ------------------------------------------------------------------ the loop: fit -> _run_epoch -> train_step
    def fit(self, resume: bool = False) -> dict:
        """Train for `config.epochs` epochs (continuing from the newest checkpoint with
        `resume=True`) and return final.json's content.

        The process that writes `out_dir` holds its lock (io.run_folder) from the start to the
        end of `fit`: a second writer gets `RunFolderInUse` naming the holder, before it writes
        anything. Temporary files left by a writer killed mid-write are removed at the start. A
        file that cannot be written (disk full) raises `RunWriteError` (an OSError) naming the
        folder; the checkpoints written before stay intact."""
        lock = self._lock_run_folder()
        try:
            if lock is not None:
                remove_stale_temporaries(self.out_dir)
                remove_stale_temporaries(self.out_dir / CHECKPOINT_SUBDIR)
            return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool) -> dict:
        cfg = self.config
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume:
                self._resume()
            else:
                if list_checkpoints(self.out_dir):
                    raise CheckpointError(f"{self.out_dir} already holds checkpoints of a run; pass resume=True "
                                          "(--resume) to continue it, or choose a new output folder")
                if (self.out_dir / FINAL_FILE).is_file():   # a finished run kept without its checkpoints
                    raise CheckpointError(f"{self.out_dir} holds a finished run ({FINAL_FILE}), which a new run "
                                          "would replace; choose a new output folder")
                if self.writes:
                    self._write_run_file(METRICS_FILE, "")
            if self.writes:
                self._write_config()
        elif resume:
            raise ValueError("resume=True needs an out_dir holding checkpoints")
        self.model.train()
        if self.progress:
            print(f"precision {self.precision.name} ({self.precision.reason}); "
                  f"compile {'on' if self.compiled else 'off'} ({self.compile_reason})", file=sys.stderr, flush=True)
        with training_settings(cfg.threads, cfg.deterministic, self.device), stop_signals(self._note_signal):
            while self.epoch < cfg.epochs:
                self._run_epoch()
        return self._finish()

    def _run_epoch(self) -> None:
        cfg = self.config
        epoch = self.epoch
        bar = ProgressBar(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", self.progress)
        bar.count = self.batch_in_epoch
        if self._progress_start is None:
            self._progress_start = (time.perf_counter(), epoch)
        if self.free_cores is not None:
            torch.set_num_threads(self.free_cores.threads())
        sums = self.epoch_sums
        t0 = time.perf_counter()
        try:
            for batch_index, xb, yb in self._train_batches(epoch, self.batch_in_epoch):
                loss, logits = self.train_step(xb, yb)
                self.global_step += 1
                self.batch_in_epoch = batch_index + 1
                if loss is None:
                    self._bad_step(batch_index)
                else:
                    sums["loss"] += float(loss) * len(yb)
                    sums["correct"] += int((logits.argmax(1) == yb).sum())
                    sums["seen"] += len(yb)
                now = time.perf_counter()
                sums["seconds"] += now - t0
                t0 = now
                bar.update(1, len(yb), loss=float(loss) if loss is not None else float("nan"),
                           lr=self.schedule.lr(self.global_step - 1))
                if self.dist.enabled:
                    self._stop_signal = distributed.agree_stop_signal(self._stop_signal, self.dist, self.device)
                if self._stop_signal is not None:
                    bar.close()
                    self._interrupt()
                if cfg.checkpoint_every_steps and self.global_step % cfg.checkpoint_every_steps == 0 \
                        and self.batch_in_epoch < self.steps_per_epoch:
                    self._checkpoint({})
            sums = distributed.reduce_epoch_sums(sums, self.dist, self.device)
            train_seconds = sums["seconds"]
            test = self._evaluate_test(predictions=epoch + 1 >= cfg.epochs)
        except BaseException:
            bar.close()              # the error's message starts on a line of its own
            raise
        self._end_epoch(sums, train_seconds, test, bar)

    def _end_epoch(self, sums: dict, train_seconds: float, test: dict, bar: ProgressBar) -> None:
        """Count the finished epoch, log its metrics row and line, checkpoint when due."""
        cfg = self.config
        self.epoch += 1
        self.batch_in_epoch = 0
        self.seconds += train_seconds
        row = {"epoch": self.epoch, "step": self.global_step, "lr": self.schedule.lr(max(0, self.global_step - 1)),
               "train_loss": sums["loss"] / max(1, sums["seen"]), "train_acc": sums["correct"] / max(1, sums["seen"]),
               "test_loss": test["loss"], "test_acc": test["acc"], "seconds": train_seconds,
               "images_per_s": sums["seen"] / train_seconds if train_seconds > 0 else 0.0,
               "threads": torch.get_num_threads()}
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.best_acc = max(self.best_acc, test["acc"])
        if self.writes:
            self._write_run_file(METRICS_FILE, json.dumps(row) + "\n", append=True)
        self.last_row = row
        started, first_epoch = self._progress_start
        bar.finish(epoch_line(self.epoch, cfg.epochs, row, time.perf_counter() - started, self.epoch - first_epoch))
        due = cfg.checkpoint_every and (self.epoch % cfg.checkpoint_every == 0)
        if due or self.epoch == cfg.epochs:
            self._checkpoint({"test_acc": test["acc"], "test_loss": test["loss"]})

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """Augment, forward, backward, update. Returns (loss or None when non-finite, logits)."""
        inputs = self.augment(xb, self.augment_generator, train=True)
        self.schedule.apply(self.optimizer, self.global_step)
        with self.precision.autocast():
            logits = self._forward(inputs)
            if logits.shape[-1] < self.data.num_classes:
                raise ValueError(f"the model predicts {logits.shape[-1]} classes but dataset {self.data.name!r} has "
                                 f"{self.data.num_classes}; build it with num_classes={self.data.num_classes}")
            loss = self.criterion(logits.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        if distributed.any_rank_nonfinite(loss, self.dist):
            return None, logits
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach(), logits.detach()

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The training forward; with compile chosen by `auto`, a model that torch.compile cannot
        build here (no C++ compiler, an unsupported operation) trains eagerly instead, said once."""
        if not (self.compiled and self.config.compile is None):
            return self.forward_model(inputs)
        try:
            return self.forward_model(inputs)
        except Exception as err:  # noqa: BLE001 - any compiler failure: the eager model is the fallback
            if not self._compile_failure(err):
                raise
            failure = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        self.forward_model = self.forward_model._orig_mod
        self.compiled = False
        self.compile_reason = "auto: torch.compile failed here, trained eagerly"
        warnings.warn(f"compile: {self.compile_reason} ({failure})", stacklevel=3)
        return self.forward_model(inputs)

    @staticmethod
    def _compile_failure(err: Exception) -> bool:
        return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))

    def _choose_compile(self) -> tuple[bool, str]:
        """Whether to torch.compile the training forward, and why (`config.compile`; None = auto).

        auto compiles a run of at least `COMPILE_MIN_STEPS` optimizer steps: compiling costs
        about a minute on a CPU before the first step (with an empty compiler cache), and a
        compiled ResNet-20 step gained 13% there (4% with SE, whose eager gate path is already
        lean): repaid after 1,100 and 3,000 steps (benchmarks/RESULTS.md, section compile).
        Shorter runs would lose time. The same rule applies on a GPU, where it has not been
        measured.
        Under torchrun auto stays off (compiling inside DDP is the user's explicit choice)."""
        if self.config.compile is not None:
            return self.config.compile, "requested" if self.config.compile else "off as requested"
        steps = self.config.epochs * self.steps_per_epoch
        if self.dist.enabled:
            return False, "auto: off under torchrun"
        if steps >= COMPILE_MIN_STEPS:
            return True, f"auto: {steps:,} steps >= {COMPILE_MIN_STEPS:,}, long enough to repay compiling"
        return False, f"auto: {steps:,} steps < {COMPILE_MIN_STEPS:,}, too short to repay compiling"

    # ------------------------------------------------------------------ data order
    def epoch_permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(self.data.num_train, generator=gen)

    def _train_batches(self, epoch: int, start_batch: int):
        bs = self.config.batch_size
        perm = distributed.shard_permutation(self.epoch_permutation(epoch), bs, self.steps_per_epoch, self.dist)
        if self.data.in_memory:
            perm = perm.to(self.device)
            for b in range(start_batch, self.steps_per_epoch):
                idx = perm[b * bs:(b + 1) * bs]
                yield b, self.train_x[idx], self.train_y[idx]
            return
        order = perm[start_batch * bs:self.steps_per_epoch * bs].tolist()
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.data.train_set, order),
                                             batch_size=min(bs, len(order)) or 1, shuffle=False,
                                             num_workers=self.config.num_workers, drop_last=True,
                                             pin_memory=self.device.type == "cuda")
        for offset, (xb, yb) in enumerate(loader):
            yield (start_batch + offset, xb.to(self.device, non_blocking=True),
                   torch.as_tensor(yb, dtype=torch.int64).to(self.device, non_blocking=True))

    # ------------------------------------------------------------------ evaluation and bad steps
    def _evaluate_test(self, predictions: bool = True) -> dict:
        """Test accuracy and loss; with `predictions` (the run's last evaluation) it also keeps the
        per-example predictions that test_predictions.json records."""
        if self.dist.enabled:   # each rank evaluates its share of the test set, then the sums are merged
            return distributed.reduce_evaluation(self._evaluate_shard(), self.dist, self.device)
        if self.data.in_memory:
            result = evaluate(self.model, self.data.test_x, self.data.test_y, self.config.eval_batch_size,
                              self.device, self.data.mean, self.data.std, channels_last=self.channels_last,
                              precision=self.precision, predictions=predictions)
        else:
            result = evaluate(self.model, self.data.test_set, None, self.config.eval_batch_size, self.device,
                              self.data.mean, self.data.std, channels_last=self.channels_last,
                              precision=self.precision, num_workers=self.config.num_workers, predictions=predictions)
        if predictions:
            self.test_predictions = (result.pop("labels"), result.pop("predictions"))
        return result

    def _evaluate_shard(self) -> dict:
        count = len(self.data.test_y) if self.data.in_memory else len(self.data.test_set)
        shard = list(distributed.shard_evaluation_indices(count, self.dist))
        if not shard:
            return {"acc": 0.0, "loss": 0.0, "count": 0}
        if self.data.in_memory:
            index = torch.tensor(shard, dtype=torch.long)
            x, y = self.data.test_x[index], self.data.test_y[index]
        else:
            x, y = torch.utils.data.Subset(self.data.test_set, shard), None
        return evaluate(self.model, x, y, self.config.eval_batch_size, self.device, self.data.mean, self.data.std,
                        channels_last=self.channels_last, precision=self.precision)

    def _bad_step(self, batch_index: int) -> None:
        self.bad_steps += 1
        if self.bad_steps > self.config.max_bad_steps:
            good = self.last_checkpoint or (list_checkpoints(self.out_dir)[-1] if self.out_dir and
                                            list_checkpoints(self.out_dir) else None)
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step} (epoch {self.epoch + 1}, batch {batch_index}); "
                f"{self.bad_steps} bad step(s), budget max_bad_steps={self.config.max_bad_steps}; last good checkpoint: "
                f"{good or 'none'}. Hint: lower the learning rate (lr={self.config.lr}), add warm-up "
                "(--warmup-epochs), or raise --max-bad-steps to skip such batches")

    # ------------------------------------------------------------------ final result
    def _finish(self) -> dict:
        if self.config.epochs == 0 or not hasattr(self, "last_row") or (
                self.writes and not self.dist.enabled and self.test_predictions is None):
            test = self._evaluate_test()   # (also when a resumed, finished run has no predictions yet)
        else:
            test = {"acc": self.last_row["test_acc"], "loss": self.last_row["test_loss"]}
        result = {
            "model": self.config.model, "attention": self.config.attention, "dataset": self.data.name,
            "seed": self.config.seed, "epochs": self.epoch, "steps": self.global_step,
            "test_acc": test["acc"], "test_loss": test["loss"], "best_test_acc": max(self.best_acc, test["acc"]),
            "params": self.params, "seconds": self.seconds, "bad_steps": self.bad_steps,
            "image_size": list(self.data.image_size), "num_classes": self.data.num_classes,
            "history": str(self.out_dir / METRICS_FILE) if self.out_dir else None,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "precision": self.precision.name, "precision_reason": self.precision.reason,
            "compile": self.compiled, "compile_reason": self.compile_reason,
            "train_size": self.data.num_train, "machine": describe_machine(self.device),
        }
        if self.device_changes:
            result["device_changes"] = self.device_changes
        if self.writes:
            if self.test_predictions is not None:
                labels, predicted = self.test_predictions
                self._write_run_file(PREDICTIONS_FILE, json.dumps(
                    {"labels": labels.tolist(), "predictions": predicted.tolist()}, separators=(",", ":")) + "\n")
            self._write_run_file(FINAL_FILE, json.dumps(result, indent=2) + "\n")
        return result

    # ------------------------------------------------------------------ run files
    def _lock_run_folder(self):
        """The lock of `out_dir` (None when this process does not write); RunFolderInUse, or
        RunWriteError when the folder cannot be made, before anything is written. Under torchrun
        rank 0 locks and every rank stops if it could not."""
        lock, refused = None, None
        if self.writes:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                lock = lock_run_folder(self.out_dir)
            except OSError as err:
                refused = write_failed("the run folder", self.out_dir.parent, err)
            except CheckpointError as err:
                refused = err
        if self.dist.enabled:
            message = self.dist.broadcast_object(str(refused) if refused is not None else None)
            if message is not None and refused is None:
                refused = RunFolderInUse(message)
        if refused is not None:
            raise refused
        return lock

    def _write_run_file(self, name: str, text: str, append: bool = False) -> None:
        """Write (atomically) or append to a file of the run folder; RunWriteError if that fails."""
        path = self.out_dir / name
        try:
            if append:
                with open(path, "a") as fh:
                    fh.write(text)
            else:
                atomic_write(path, text.encode())
        except OSError as err:
            raise write_failed(name, self.out_dir, err) from err

    def _write_config(self) -> None:
        import yaml

        note = f"# precision: {self.precision.name} ({self.precision.reason})\n"
        self._write_run_file(CONFIG_FILE, note + yaml.safe_dump(self.recorded_config(), sort_keys=False))

    def recorded_config(self) -> dict:
        """The config as run: `precision` is the one chosen (never 'auto'), so that the file
        reproduces the arithmetic; the reason is config.yaml's first line and final.json's."""
        return {**self.config.to_dict(), "precision": self.precision.name}

    def _choose_precision(self, stored: Optional[str] = None) -> PrecisionChoice:
        """The run's precision (train.precision): `config.precision`, where 'auto' resolves for this
        device, or on resume becomes `stored`, the one the checkpoint's run chose. The older
        `amp=True` still means float16 autocast on CUDA and nothing on other devices."""
        requested = self.config.precision
        if requested == "auto" and stored is not None:
            return PrecisionChoice(stored, self.device.type, f"{stored}, as the run being resumed chose")
        if requested == "auto" and self.config.amp:
            if self.device.type == "cuda":
                return PrecisionChoice("fp16", "cuda", "amp=True: fp16 with loss scaling on CUDA")
            warnings.warn("amp=True ignored: it means float16 autocast on CUDA only; on other devices "
                          "use precision='bf16' or 'fp16'", stacklevel=3)
        return resolve_precision(requested, self.device)

    # ------------------------------------------------------------------ checkpoints
    def state(self, metrics: dict) -> dict:
        """Everything but the model weights that a resume needs (tensors go to safetensors)."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "augment": self.augment_generator.get_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        epoch_sums = dict(self.epoch_sums)
        if self.dist.enabled:   # collectives: every rank calls state() at the same step
            rng["per_rank"] = self.dist.gather_objects({"torch": torch.get_rng_state(),
                                                        "augment": self.augment_generator.get_state().cpu()})
            epoch_sums = distributed.reduce_epoch_sums(epoch_sums, self.dist, self.device)
        return {
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.global_step,
            "world_size": self.dist.world_size,
            "bad_steps": self.bad_steps, "seconds": self.seconds, "epoch_sums": epoch_sums,
            "best_acc": self.best_acc, "steps_per_epoch": self.steps_per_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng, "device": self.device.type, "device_changes": self.device_changes,
            "config": self.recorded_config(), "metrics": metrics,
            "data": {"name": self.data.name, "num_classes": self.data.num_classes, "in_chans": self.data.in_chans,
                     "image_size": list(self.data.image_size), "mean": list(self.data.mean),
                     "std": list(self.data.std), "num_train": self.data.num_train, "classes": list(self.data.classes)},
            "params": self.params,
        }

    def _checkpoint(self, metrics: dict) -> Optional[Path]:
        if self.out_dir is None:
            return None
        directory = self.out_dir / CHECKPOINT_SUBDIR
        model_state = self.model.state_dict()
        broken = [name for name, value in model_state.items()
                  if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if broken:  # e.g. BatchNorm running statistics overflow while the training loss still looks finite
            raise NonFiniteLossError(
                f"non-finite weights or statistics after step {self.global_step} ({', '.join(broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''}): checkpoint not written; last good checkpoint: "
                f"{self.last_checkpoint or 'none'}. Hint: lower the learning rate (lr={self.config.lr}) or add "
                "warm-up (--warmup-epochs)")
        state = self.state(metrics)
        if self.writes:
            self.last_checkpoint = save_checkpoint(directory, self.global_step, state, model_state)
            rotate_checkpoints(directory, self.config.keep_checkpoints)
        self.dist.barrier()   # no rank runs ahead of a checkpoint it may need to resume from
        if not self.writes:
            self.last_checkpoint = self.dist.broadcast_object(None)
        else:
            self.dist.broadcast_object(self.last_checkpoint)
        return self.last_checkpoint

    def _resume(self) -> None:
        found = list_checkpoints(self.out_dir)
        if not found:
            raise CheckpointError(f"nothing to resume: no checkpoint in {self.out_dir / CHECKPOINT_SUBDIR}")
        metrics_path = self.out_dir / METRICS_FILE
        records = read_metrics(metrics_path)   # a line cut short by a kill is dropped; other damage is refused
        auto = self.config.precision == "auto"
        ckpt = load_checkpoint(found[-1], expect_config=self.recorded_config(),
                               ignore_fields=RESUMABLE_CHANGES + (("precision",) if auto else ()), needs="resume")
        state = ckpt.state
        if auto:   # keep the arithmetic of the run being resumed (runs before `precision` existed: fp32 or amp)
            stored = state["config"].get("precision") or ("fp16" if state["config"].get("amp")
                                                          and self.device.type == "cuda" else "fp32")
            self.precision = self._choose_precision(stored if stored in ("fp32", "bf16", "fp16") else None)
            self.scaler = self.precision.scaler()
        distributed.check_resume_world_size(state.get("world_size"), self.dist, ckpt.path)
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(f"checkpoint {ckpt.path} has {state['steps_per_epoch']} steps per epoch, this run "
                                  f"{self.steps_per_epoch}: the dataset changed; resume with the same data")
        _restore(ckpt, "model tensors", lambda: self.model.load_state_dict(current_keys(self.model, ckpt.model_state())))
        _restore(ckpt, "state.optimizer", lambda: self.optimizer.load_state_dict(state["optimizer"]))
        if self.scaler is not None and state.get("scaler"):
            _restore(ckpt, "state.scaler", lambda: self.scaler.load_state_dict(state["scaler"]))
        self.epoch, self.batch_in_epoch, self.global_step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.device_changes = list(state.get("device_changes", []))
        _restore(ckpt, "state.rng", lambda: self._restore_rng(state["rng"], state.get("device")))
        self.bad_steps, self.seconds, self.best_acc = state["bad_steps"], state["seconds"], state["best_acc"]
        self.epoch_sums = dict(state["epoch_sums"])   # the world's sums: kept by rank 0 alone
        if not self.dist.is_main:
            self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.last_checkpoint = ckpt.path
        # Drop metric lines written after this checkpoint (they will be written again).
        for record in records:
            if isinstance(record.get("epoch", 0), bool) or not isinstance(record.get("epoch", 0), int):
                raise CheckpointError(f"metrics log {metrics_path}: a record's epoch is {record.get('epoch')!r}, "
                                      "expected an integer")
        if metrics_path.exists():
            self.dist.barrier()   # every rank reads the file before rank 0 rewrites it
            kept = [record for record in records if record.get("epoch", 0) <= self.epoch]
            if self.writes:
                self._write_run_file(METRICS_FILE, "".join(json.dumps(record) + "\n" for record in kept))
            if kept:
                self.last_row = kept[-1]

    def _restore_rng(self, rng: dict, stored_device: Optional[str]) -> None:
        """Put the random streams back. The augmentation generator lives on the training device,
        and a CUDA generator's state (Philox) does not fit a CPU one (Mersenne Twister): a run
        checkpointed on one device type and resumed on another gets a fresh augmentation stream,
        seeded from (seed, rank, step), and records the change in final.json's `device_changes`
        (such a run cannot be bit-identical to an uninterrupted one on either device anyway)."""
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        augment = rng["augment"]
        if self.dist.enabled and "per_rank" in rng:
            own = rng["per_rank"][self.dist.rank]
            torch.set_rng_state(own["torch"])
            augment = own["augment"]
        here = self.augment_generator.get_state()
        moved = (stored_device is not None and stored_device != self.device.type) or augment.numel() != here.numel()
        if moved:
            self.augment_generator.manual_seed(
                (distributed.augment_seed(self.config.seed, self.dist.rank) * 1_000_003 + self.global_step) % 2 ** 63)
            change = {"from": stored_device or "another device type", "to": self.device.type,
                      "at_step": self.global_step}
            self.device_changes.append(change)
            if self.progress:
                print(f"resuming on {self.device.type} a run checkpointed on {change['from']} at step "
                      f"{self.global_step}: the augmentation stream starts afresh, so the run is not bit-identical "
                      "to an uninterrupted one", file=sys.stderr, flush=True)
        else:
            self.augment_generator.set_state(augment.to(here.device))
        if "cuda" in rng and self.device.type == "cuda" and stored_device in (None, "cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])

    # ------------------------------------------------------------------ signals
    def _note_signal(self, signum: int) -> None:
        self._stop_signal = signum

    def _interrupt(self) -> None:
        name = signal.Signals(self._stop_signal).name
        path = self._checkpoint({})
        where = f"checkpoint written: {path}; resume with: attnlab train ... --out {self.out_dir} --resume" \
            if path else "no output folder, nothing saved"
        raise TrainingInterrupted(f"training stopped by {name} at step {self.global_step} "
                                  f"(epoch {self.epoch + 1}, batch {self.batch_in_epoch}); {where}", path)


# ---------------------------------------------------------------------------- functional API
def train(config: TrainConfig | dict, out_dir: Optional[str | os.PathLike] = None, progress: bool = True,
          resume: bool = False) -> dict:
    """Train as `config` says, write the run into `out_dir` (if given), return final.json's content."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    return Trainer(config, out_dir, progress).fit(resume=resume)


def _restore(ckpt, field: str, apply) -> None:
    """Run `apply` (put one part of checkpoint `ckpt` back); a part that does not fit (a forged or
    hand-edited record) raises CheckpointError naming the file and the field."""
    try:
        apply()
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise CheckpointError(f"checkpoint {ckpt.path}: field {field} cannot be restored ({reason})") from None


__all__ = ["Trainer", "train", "NonFiniteLossError", "TrainingInterrupted"]
