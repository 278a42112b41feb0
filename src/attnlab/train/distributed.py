"""Data-parallel training with torchrun: one process per device, `DistributedDataParallel`.

    torchrun --nproc_per_node=2 -m attnlab train --model resnet20 --dataset cifar10 --out runs/r20 --sync-bn

Not a paper module: this is PyTorch's own engine (torch.distributed + DDP), used the way its
documentation describes. The process group is initialised from torchrun's environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL when the run uses CUDA, gloo on the
CPU. Without those variables (a plain `attnlab train`) nothing is initialised and the Trainer
behaves exactly as a single process.

Conventions (and where they differ from other recipes):

* `batch_size` is the batch of one rank (DDP's convention); the global batch is
  `batch_size * world_size`. Epoch e's permutation is the same on every rank (drawn from
  (seed, e), as in one process), and global batch b is cut into world_size consecutive
  slices, rank r taking slice r (`shard_permutation`). So each step the world trains on exactly
  the images that one process with batch `batch_size * world_size` would see. The common
  `DistributedSampler` deals indices round-robin instead, which gives each step a different set
  of images than the single-process run; we keep the single-process order so runs compare.
* DDP averages gradients over ranks; with equal per-rank batches that is the gradient of the
  global batch's mean loss, so 2 ranks x B matches 1 process x 2B up to float rounding when the
  batch statistics are global too (`sync_bn=True`: `nn.SyncBatchNorm`). Without SyncBatchNorm
  each rank normalises with its own batch's statistics (the usual, cheaper DDP default).
* PyTorch's `nn.SyncBatchNorm` runs on GPUs only (DDP refuses it on CPU), so on gloo/CPU the
  model's BatchNorm layers become `CpuSyncBatchNorm`: the same statistics (mean, then the
  biased variance of the whole global batch, two all-reduces; running variance unbiased, as
  BatchNorm), its gradient flowing through a differentiable all-reduce. On CUDA the PyTorch layer
  is used.
* Augmentation draws from a per-rank generator seeded `seed + 1 + rank * AUGMENT_SEED_STRIDE`
  (rank 0 keeps the single-process seed `seed + 1`). Random crops and flips therefore differ
  from the single-process run for ranks > 0; the equivalence test turns augmentation off.
* Metrics are summed over ranks (loss, correct, seen; the slowest rank's seconds) and the test
  set is split across ranks for evaluation, then summed. Only rank 0 writes config.yaml,
  metrics.jsonl, final.json and checkpoints; the checkpoint holds every rank's augmentation and
  torch RNG state, so a resume in the same world size continues every rank's stream. A resume in
  a different world size is refused with both sizes named (the global batch, the step count per
  epoch and the RNG streams would all change).
* A non-finite loss on any rank, or a stop signal received by any rank, is agreed by one small
  all-reduce per step, so that all ranks skip or stop at the same step (otherwise one rank would
  wait forever in the next gradient all-reduce).
* `attnlab compare` under torchrun spreads its runs (variant x seed) round-robin over the ranks;
  each run is single-process (`SINGLE_PROCESS`); rank 0 measures costs and writes the report.
  The output folder must be on a filesystem every rank sees.
"""
from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

AUGMENT_SEED_STRIDE = 1_000_003
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in a distributed run. `world_size == 1` means a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collectives (no-ops alone)
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum_values(self, values: list[float], device: torch.device | str = "cpu") -> list[float]:
        """Element-wise sum of `values` over ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._collective_device(device))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def max_value(self, value: float, device: torch.device | str = "cpu") -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._collective_device(device))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def gather_objects(self, obj) -> list:
        """Every rank's `obj`, in rank order (a one-element list alone)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _collective_device(self, device) -> torch.device:
        # NCCL moves only CUDA tensors; gloo only CPU ones.
        return torch.device(device) if self.backend == "nccl" else torch.device("cpu")


SINGLE_PROCESS = DistributedContext()


def launched_by_torchrun() -> bool:
    """True when torchrun (or srun with the same variables) set RANK / WORLD_SIZE / LOCAL_RANK."""
    return all(name in os.environ for name in ENV_VARS)


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} must be an integer (set by torchrun)") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={value} must be >= 0")
    return value


def check_launch_environment() -> Optional[tuple[int, int, int]]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) from the environment torchrun sets, None when none of the
    three is set; nothing is initialised. Only some of them set, one that is not an integer, a
    negative one, WORLD_SIZE 0 or RANK not below WORLD_SIZE raise a ValueError naming the
    variable, its value and what is expected."""
    given = [name for name in ENV_VARS if name in os.environ]
    if not given:
        return None
    if len(given) < len(ENV_VARS):
        missing = [name for name in ENV_VARS if name not in os.environ]
        raise ValueError(f"environment variable(s) {', '.join(f'{n}={os.environ[n]!r}' for n in given)} set without "
                         f"{', '.join(missing)}; expected all of {', '.join(ENV_VARS)} (as torchrun sets them) or none")
    rank, world_size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if world_size < 1:
        raise ValueError(f"environment variable WORLD_SIZE={world_size} must be >= 1 (the number of processes)")
    if rank >= world_size:
        raise ValueError(f"RANK={rank} must be < WORLD_SIZE={world_size}")
    return rank, world_size, local_rank


def init_distributed(device: str = "auto", backend: Optional[str] = None,
                     timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the process group torchrun described in the environment and return this rank's context.

    Without torchrun's variables (or with WORLD_SIZE=1) nothing is initialised: SINGLE_PROCESS.
    `backend`: None picks NCCL when `device` is CUDA (or 'auto' with CUDA present), else gloo.
    With NCCL the current CUDA device becomes LOCAL_RANK, so 'cuda' means this rank's GPU.
    Calling it again in an initialised process returns the existing context.
    """
    if backend is not None and backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or None (automatic), got {backend!r}")
    if dist.is_available() and dist.is_initialized():
        return current_context()
    launch = check_launch_environment()
    if launch is None:
        return SINGLE_PROCESS
    rank, world_size, local_rank = launch
    if world_size == 1:
        return SINGLE_PROCESS
    wants_cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if backend is None:
        backend = "nccl" if wants_cuda else "gloo"
    if wants_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA device(s); "
                             "launch at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return current_context()


def current_context() -> DistributedContext:
    """The context of the initialised process group, or SINGLE_PROCESS when there is none."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE_PROCESS
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def shutdown_distributed() -> None:
    """Leave the process group (a no-op when none is initialised).

    Unreachable objects that still hold the group (a finished Trainer's DDP wrapper in a
    reference cycle) are collected first: a gloo group whose last owner dies only at interpreter
    shutdown can abort the process ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def rank_device(device: torch.device, context: DistributedContext) -> torch.device:
    """`cuda` -> `cuda:LOCAL_RANK` under NCCL (each rank on its own GPU); otherwise `device`."""
    if context.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", context.local_rank)
    return device


def augment_seed(seed: int, rank: int) -> int:
    """Seed of rank `rank`'s augmentation generator; rank 0 keeps the single-process seed + 1."""
    return seed + 1 + rank * AUGMENT_SEED_STRIDE


def shard_permutation(perm: torch.Tensor, batch_size: int, steps: int, context: DistributedContext) -> torch.Tensor:
    """This rank's indices, `steps * batch_size` long, in the order it trains on them.

    `perm` is the epoch's global order; global batch b is `perm[b*G:(b+1)*G]` with
    G = batch_size * world_size, and this rank takes its slice `rank` of every global batch.
    Alone (world size 1) `perm` comes back unchanged.
    """
    if not context.enabled:
        return perm
    global_batch = batch_size * context.world_size
    if len(perm) < steps * global_batch:
        raise ValueError(f"shard_permutation: {len(perm)} indices cannot fill {steps} global batches of "
                         f"{global_batch} ({context.world_size} ranks x {batch_size})")
    blocks = perm[:steps * global_batch].view(steps, context.world_size, batch_size)
    return blocks[:, context.rank].reshape(-1)


def shard_evaluation_indices(count: int, context: DistributedContext) -> range:
    """The test-set indices this rank evaluates (strided, so shards differ by at most one)."""
    return range(context.rank, count, context.world_size)


class _SumOverRanks(torch.autograd.Function):
    """all-reduce (sum) whose gradient is the all-reduced (summed) incoming gradient: the
    derivative of a sum over ranks with respect to this rank's term, seen from every rank's loss."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all ranks, for the
    gloo backend on CPU (where `nn.SyncBatchNorm` is unsupported). Accepts (N, C, ...) inputs.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and the biased var taken over
    every rank's N and spatial positions (Ioffe & Szegedy 2015, Alg. 1, on the global batch).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"CpuSyncBatchNorm expects (N, C, ...) input, got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        # Statistics in float64: a constant channel then gets exactly its value as mean and a
        # zero variance, as in BatchNorm (float32 sums would leave noise that 1/sqrt(eps) amplifies).
        wide = input.double()
        local_count = input.numel() // input.shape[1]
        sums = torch.cat([wide.sum(dims), wide.new_full((1,), float(local_count))])
        sums = _SumOverRanks.apply(sums)
        count = sums[-1].detach()
        mean = (sums[:-1] / count).to(input.dtype)
        centred = input - mean.view(shape)
        var = (_SumOverRanks.apply(centred.double().square().sum(dims)) / count).to(input.dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * (count / (count - 1).clamp(min=1))
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer under `module` by a CpuSyncBatchNorm holding the same
    Parameter objects and buffers; returns the (possibly new) root."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        new_child = convert_cpu_sync_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def wrap_model(model: nn.Module, device: torch.device, context: DistributedContext,
               sync_bn: bool = False) -> nn.Module:
    """`model` converted to SyncBatchNorm (when asked) and wrapped in DDP; alone it comes back as is.

    The conversion keeps the same Parameter objects, so an optimizer built before or after sees
    the same tensors; it must happen before the wrapping (DDP records the modules it syncs).
    """
    if not context.enabled:
        return model
    if sync_bn:
        convert = nn.SyncBatchNorm.convert_sync_batchnorm if device.type == "cuda" else convert_cpu_sync_batchnorm
        converted = convert(model)
        if converted is not model:
            raise ValueError("sync_bn: the model's root module is itself a BatchNorm layer; wrap it in a container")
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def any_rank_nonfinite(loss: torch.Tensor, context: DistributedContext) -> bool:
    """True when the loss is NaN/inf on this rank or any other (one scalar all-reduce)."""
    bad = ~torch.isfinite(loss.detach())
    if not context.enabled:
        return bool(bad)
    flag = bad.to(torch.float32).reshape(1)
    flag = flag.to(context._collective_device(loss.device))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def agree_stop_signal(signum: Optional[int], context: DistributedContext,
                      device: torch.device | str = "cpu") -> Optional[int]:
    """The stop signal any rank received (the largest number), or None; alone `signum` itself."""
    if not context.enabled:
        return signum
    value = context.max_value(float(signum or 0), device)
    return int(value) or None


def reduce_epoch_sums(sums: dict, context: DistributedContext, device: torch.device | str = "cpu") -> dict:
    """Loss, correct and seen summed over ranks; seconds of the slowest rank."""
    if not context.enabled:
        return dict(sums)
    loss, correct, seen = context.sum_values([float(sums["loss"]), float(sums["correct"]), float(sums["seen"])],
                                             device)
    return {"loss": loss, "correct": int(round(correct)), "seen": int(round(seen)),
            "seconds": context.max_value(float(sums["seconds"]), device)}


def reduce_evaluation(result: dict, context: DistributedContext, device: torch.device | str = "cpu") -> dict:
    """Merge per-rank `evaluate` results ({"acc", "loss", "count"}) into the whole set's."""
    if not context.enabled:
        return result
    count = result["count"]
    loss_sum, correct, total = context.sum_values([result["loss"] * count, round(result["acc"] * count), count],
                                                  device)
    if total <= 0:
        raise ValueError("evaluate: no samples to evaluate on any rank")
    return {"acc": correct / total, "loss": loss_sum / total, "count": int(round(total))}


def check_resume_world_size(saved: Optional[int], context: DistributedContext, checkpoint) -> None:
    """Refuse a resume whose world size differs from the checkpoint's, naming both."""
    saved = 1 if saved is None else int(saved)
    if saved != context.world_size:
        from ..io.checkpoint import CheckpointError

        raise CheckpointError(
            f"checkpoint {checkpoint} was written by a run of {saved} process(es), this run has "
            f"{context.world_size}: the world size changed, so the global batch (batch_size x world size), the steps "
            f"per epoch and the per-rank augmentation streams would change. Resume with the same world size "
            f"(torchrun --nproc_per_node/--nnodes giving {saved} processes) or start a new run folder")


def spread_jobs(jobs: list, context: DistributedContext) -> list:
    """This rank's share of `jobs` (round-robin by position); alone, all of them."""
    return list(jobs[context.rank::context.world_size]) if context.enabled else list(jobs)


__all__ = ["DistributedContext", "SINGLE_PROCESS", "check_launch_environment", "init_distributed", "current_context", "shutdown_distributed",
           "launched_by_torchrun", "rank_device", "augment_seed", "shard_permutation", "shard_evaluation_indices",
           "wrap_model", "CpuSyncBatchNorm", "convert_cpu_sync_batchnorm", "any_rank_nonfinite", "agree_stop_signal", "reduce_epoch_sums", "reduce_evaluation",
           "check_resume_world_size", "spread_jobs"]
