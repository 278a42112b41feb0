"""What a model costs: parameters, FLOPs, element-wise work, latency, step time, peak memory.

No paper is implemented here; the report puts these figures next to each other because they
disagree for attention (the SE paper, Sec. 4 and Table 2: SE-ResNet-50 adds under 1% of the
FLOPs yet 10% to the GPU training time). How each figure is measured:

* Parameters: the number of elements of ``model.parameters()`` (shared tensors counted once).
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass in eval mode. It
  counts matrix products and convolutions, including the attention products (``bmm``,
  ``matmul``, scaled-dot-product attention), as 2 FLOPs per multiply-accumulate. Papers usually
  quote multiply-accumulates as "FLOPs" (ResNet-50: 3.86 G), so ``macs = flops / 2`` is reported
  too.
* Pooling and element-wise work: FlopCounterMode ignores them, so `count_elementwise` runs the
  forward pass under a small ``TorchDispatchMode`` that sees every aten op and classifies it by
  name: pooling and reductions (avg/max/adaptive pooling, mean, sum, amax, ...) count one op per
  *input* element; element-wise ops (activations, add, mul, sigmoid, softmax, batch norm, ...)
  count one op per *output* element (batch norm 2 in eval: scale and shift as after folding;
  softmax, sigmoid and a few others several per element, see
  `_ELEMENTWISE_COST`). Shape-only ops (views, copies, cat) count nothing.
* Latency: wall time of a no-grad forward pass in eval mode at batch 1 and at a large batch; the
  median over `repeats` timed calls after `warmup` untimed ones (``time.perf_counter``; on CUDA
  with a synchronisation before each clock read). `measure_costs` times on one CPU thread by
  default (see there) and keeps every timed call beside the median, so that a reader sees the
  spread (on a shared machine the slowest call can be many times the fastest).
* Training step time: forward, cross-entropy loss, backward and an SGD-with-momentum step in
  train mode, median over repeats after warm-up (every repeat kept as for latency).
* Peak memory: on CUDA ``torch.cuda.max_memory_allocated``. On the CPU there is no allocator
  statistic, so `PeakMemoryTracker` (a ``TorchDispatchMode``) records every storage an aten op
  outputs, keyed by a weak reference to the storage, and after each op drops the storages that
  have been freed; the peak of the live bytes seen is added to the bytes of the state that
  existed before (parameters, buffers, gradients, optimizer state, the input batch). Storages
  created outside the dispatcher (none in a plain forward/backward) would be missed, and
  allocator padding is not seen, so this is a lower bound of what the process needs.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable, Optional

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from ..checks import check_int, check_positive_int
from ..train.process import num_threads


# --------------------------------------------------------------------------------------------- input

def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")


def _check_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (3, 4)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_shape)):
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) of positive ints, got {input_shape!r}")
    return tuple(input_shape)


def _model_device_dtype(model: nn.Module, device=None, dtype=None):
    p = next(iter(model.parameters()), None)
    if device is None:
        device = p.device if p is not None else torch.device("cpu")
    if dtype is None:
        dtype = p.dtype if (p is not None and p.is_floating_point()) else torch.float32
    return torch.device(device), dtype


def make_input(model: nn.Module, input_shape, batch_size: Optional[int] = None, device=None, dtype=None,
               seed: int = 0) -> torch.Tensor:
    """A random batch on the model's device and dtype: shape (C, H, W) gets `batch_size` (default 1)."""
    _check_model(model)
    shape = _check_shape(input_shape)
    if len(shape) == 3:
        shape = (batch_size or 1,) + shape
    elif batch_size is not None:
        shape = (batch_size,) + shape[1:]
    device, dtype = _model_device_dtype(model, device, dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    if x.dim() == 4 and _is_channels_last(model):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _is_channels_last(model: nn.Module) -> bool:
    """True when the model's first 4-d weight whose two layouts differ (not 1x1, more than one
    input channel) is stored channels_last: the model was moved with
    `.to(memory_format=torch.channels_last)`, so its inputs are made so too."""
    for p in model.parameters():
        if p.dim() == 4 and p.is_contiguous() != p.is_contiguous(memory_format=torch.channels_last):
            return p.is_contiguous(memory_format=torch.channels_last)
    return False


class _EvalMode:
    """Put a model in eval (or train) mode and restore each submodule's flag afterwards."""

    def __init__(self, model: nn.Module, train: bool = False):
        self.model, self.train = model, train

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.train(self.train)
        return self.model

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


# --------------------------------------------------------------------------------------------- counts

def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    _check_model(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape, by_op: bool = False) -> dict:
    """FLOPs of one eval-mode forward pass, counted by torch.utils.flop_counter.FlopCounterMode.

    `input_shape` is (C, H, W) (batch 1) or (N, C, H, W). Returns {'flops', 'macs'} and, with
    `by_op`, 'by_op': {aten op name: flops}.
    """
    x = make_input(model, input_shape)
    with _EvalMode(model), torch.no_grad():
        return count_flops_of(lambda: model(x), by_op=by_op)


def count_flops_of(fn: Callable[[], object], by_op: bool = False) -> dict:
    """FLOPs of the convolutions and matrix products that `fn()` executes, counted by
    torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs). Returns {'flops', 'macs'}
    and, with `by_op`, 'by_op': {aten op name: flops}. The caller sets the mode (train / eval)
    and the grad mode: a backward run inside `fn` is counted too."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    flops = int(counter.get_total_flops())
    out = {"flops": flops, "macs": flops // 2}
    if by_op:
        per_op: dict[str, int] = {}
        for ops in counter.get_flop_counts().values():
            for op, n in ops.items():
                per_op[str(op)] = max(per_op.get(str(op), 0), int(n))
        out["by_op"] = per_op
    return out


# Element-wise ops and the operations they cost per output element; everything not listed and
# not a pooling/reduction op counts 0 (shape ops, copies, and the products FlopCounterMode counts).
_ELEMENTWISE_COST = {
    "add": 1, "sub": 1, "mul": 1, "div": 1, "rsub": 1, "neg": 1, "reciprocal": 1, "pow": 1,
    "sqrt": 1, "rsqrt": 1, "exp": 1, "log": 1, "abs": 1, "clamp": 1, "clamp_min": 1, "clamp_max": 1,
    "relu": 1, "threshold": 1, "threshold_backward": 1, "relu6": 1, "hardtanh": 1, "leaky_relu": 1,
    "gelu": 8, "silu": 4, "hardswish": 3, "hardsigmoid": 3, "sigmoid": 4, "tanh": 4, "elu": 4,
    "where": 1, "maximum": 1, "minimum": 1, "addcmul": 2, "addcdiv": 2, "lerp": 2, "fill": 0,
    "_softmax": 5, "softmax": 5, "_log_softmax": 5, "log_softmax": 5,
    "_native_batch_norm_legit_no_training": 2, "_native_batch_norm_legit": 2, "native_batch_norm": 2,
    "batch_norm": 2, "native_layer_norm": 5, "native_group_norm": 5, "grid_sampler_2d": 8,
    "affine_grid_generator": 6, "upsample_bilinear2d": 8, "upsample_nearest2d": 0,
}
# Pooling and reductions: one op per input element.
_POOLING_OPS = {
    "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum", "amax", "amin", "max", "min",
    "avg_pool1d", "max_pool1d", "var", "std", "var_mean", "logsumexp",
}


def _op_base_name(func) -> str:
    """aten.add_.Tensor -> 'add' (in-place suffix dropped); aten._softmax.default -> '_softmax'."""
    name = getattr(func, "__name__", str(func)).split(".")[0]
    return name[:-1] if name.endswith("_") else name


class _ElementwiseCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.elementwise = 0
        self.pooling = 0
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _op_base_name(func)
        if name in _POOLING_OPS:
            first = next((a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)), None)
            n = first.numel() if first is not None else 0
            self.pooling += n
            self.by_op[name] = self.by_op.get(name, 0) + n
        elif name in _ELEMENTWISE_COST and _ELEMENTWISE_COST[name]:
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            n = (outs[0].numel() if outs else 0) * _ELEMENTWISE_COST[name]
            self.elementwise += n
            self.by_op[name] = self.by_op.get(name, 0) + n
        return out


def count_elementwise(model: nn.Module, input_shape, by_op: bool = False) -> dict:
    """Pooling/reduction ops and element-wise ops of one eval-mode forward pass (see module doc).

    Returns {'pooling_ops', 'elementwise_ops'} and, with `by_op`, 'by_op'.
    """
    x = make_input(model, input_shape)
    counter = _ElementwiseCounter()
    with _EvalMode(model), torch.no_grad(), counter:
        model(x)
    out = {"pooling_ops": int(counter.pooling), "elementwise_ops": int(counter.elementwise)}
    if by_op:
        out["by_op"] = dict(sorted(counter.by_op.items()))
    return out


# --------------------------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    """Wait for the work queued on `device` (CUDA runs asynchronously; the CPU needs no wait), so
    that a clock read after it sees the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _threads(n: Optional[int], owner: str):
    """A block run with `n` intra-op CPU threads (None: torch's setting), restored after it."""
    return num_threads(n if n is None else check_int(owner, "threads", n, 1))


def _timed_runs(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int, owner: str) -> list[float]:
    """Seconds of each of `repeats` calls of `fn` after `warmup` untimed ones."""
    check_int(owner, "repeats", repeats, 1)
    check_int(owner, "warmup", warmup, 0)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def inference_timings(model: nn.Module, input_shape, batch_size: int = 1, repeats: int = 20,
                      warmup: int = 3, threads: Optional[int] = None) -> list[float]:
    """Seconds of each of `repeats` no-grad eval-mode forward passes of a batch of `batch_size`,
    in the order they ran (`threads`: CPU threads during the measurement; None keeps torch's
    setting)."""
    x = make_input(model, input_shape, batch_size=batch_size)
    with _EvalMode(model), torch.no_grad(), _threads(threads, "inference_timings"):
        return _timed_runs(lambda: model(x), x.device, repeats, warmup, "inference_timings")


def inference_latency(model: nn.Module, input_shape, batch_size: int = 1, repeats: int = 20,
                      warmup: int = 3, threads: Optional[int] = None) -> float:
    """Median seconds of one no-grad eval-mode forward pass of a batch of `batch_size`: the
    median of `inference_timings`."""
    return float(statistics.median(inference_timings(model, input_shape, batch_size, repeats, warmup, threads)))


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    with _EvalMode(model), torch.no_grad():
        y = model(x[:1])
    if y.dim() != 2:
        raise ValueError(f"training step needs a classifier with (N, classes) output, got output shape {tuple(y.shape)}")
    return y.shape[1]


def train_step_timings(model: nn.Module, input_shape, batch_size: int = 32, repeats: int = 10,
                       warmup: int = 2, threads: Optional[int] = None) -> list[float]:
    """Seconds of each of `repeats` training steps (forward, cross-entropy, backward, SGD step),
    in the order they ran.

    Works on a deep copy so that the caller's weights and BN statistics stay untouched.
    """
    import copy

    _check_model(model)
    work = copy.deepcopy(model)
    x = make_input(work, input_shape, batch_size=batch_size)
    classes = _num_outputs(work, x)
    target = torch.arange(x.shape[0], device=x.device) % classes
    opt = _sgd(work)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(work(x), target)
        loss.backward()
        opt.step()

    with _EvalMode(work, train=True), _threads(threads, "train_step_timings"):
        return _timed_runs(step, x.device, repeats, warmup, "train_step_timings")


def train_step_time(model: nn.Module, input_shape, batch_size: int = 32, repeats: int = 10,
                    warmup: int = 2, threads: Optional[int] = None) -> float:
    """Median seconds of one training step: the median of `train_step_timings`."""
    return float(statistics.median(train_step_timings(model, input_shape, batch_size, repeats, warmup, threads)))


# --------------------------------------------------------------------------------------------- memory

def tensor_bytes(tensors: Iterable[Optional[torch.Tensor]]) -> int:
    """Bytes of the storages behind `tensors`, each storage counted once (None entries skipped)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        s = t.untyped_storage()
        key = (s.data_ptr(), s.nbytes())
        if key not in seen:
            seen.add(key)
            total += s.nbytes()
    return total


class PeakMemoryTracker(TorchDispatchMode):
    """Track the bytes of storages created under this mode that are still alive; keep the peak.

        with PeakMemoryTracker() as mem:
            loss = model(x).sum(); loss.backward()
        mem.peak_bytes
    """

    def __init__(self):
        super().__init__()
        self.live: dict[StorageWeakRef, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def _sweep(self) -> None:
        dead = [ref for ref in self.live if ref.expired()]
        for ref in dead:
            self.live_bytes -= self.live.pop(ref)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()  # storages freed since the last op no longer count
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                ref = StorageWeakRef(t.untyped_storage())
                if ref not in self.live:
                    n = t.untyped_storage().nbytes()
                    self.live[ref] = n
                    self.live_bytes += n
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out


def _measure_peak(fn: Callable[[], object], device: torch.device,
                  live_tensors: Iterable[torch.Tensor]) -> tuple[int, int, str]:
    """(bytes before, peak bytes while `fn()` runs, method); see `peak_memory_bytes`."""
    if device.type == "cuda":
        sync(device)
        state = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(state), int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    state = tensor_bytes(live_tensors)
    tracker = PeakMemoryTracker()
    with tracker:
        fn()
    return int(state), int(state + tracker.peak_bytes), "dispatch-mode live storages"


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu",
                      live_tensors: Iterable[torch.Tensor] = ()) -> int:
    """Peak bytes of tensor memory while `fn()` runs, plus the bytes of `live_tensors`.

    CUDA: the caching allocator's peak (`torch.cuda.max_memory_allocated`, reset first), which
    already includes every live tensor, so `live_tensors` is ignored. CPU: the allocator keeps
    no peak, so `PeakMemoryTracker` gives the transient peak, and the tensors that existed before
    (`live_tensors`: parameters, buffers, optimizer state, inputs; each storage once) are added.
    Allocator padding is not seen: a lower bound of what the process needs.
    """
    return _measure_peak(fn, torch.device(device), live_tensors)[1]


def _state_tensors(model: nn.Module, opt: Optional[torch.optim.Optimizer] = None) -> list[torch.Tensor]:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if opt is not None:
        for state in opt.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def peak_memory(model: nn.Module, input_shape, batch_size: int = 32, training: bool = True) -> dict:
    """Peak bytes of one training step (training=True) or one no-grad forward pass.

    Returns {'peak_bytes', 'state_bytes', 'transient_bytes', 'method'} where peak = state (what
    lived before the step: weights, buffers, input, and in training the gradients and momentum
    from a previous step) + the transient peak seen during the step (see module doc).
    """
    import copy

    _check_model(model)
    work = copy.deepcopy(model)
    x = make_input(work, input_shape, batch_size=batch_size)
    if training:
        classes = _num_outputs(work, x)
        target = torch.arange(x.shape[0], device=x.device) % classes
        opt = _sgd(work)

        def step():
            opt.zero_grad(set_to_none=False)
            nn.functional.cross_entropy(work(x), target).backward()
            opt.step()

        with _EvalMode(work, train=True):
            # One untracked step first so gradients and momentum exist, as in a running loop.
            nn.functional.cross_entropy(work(x), target).backward()
            opt.step()
            state, peak, method = _measure_peak(step, x.device, _state_tensors(work, opt) + [x, target])
    else:
        with _EvalMode(work), torch.no_grad():
            state, peak, method = _measure_peak(lambda: work(x), x.device, _state_tensors(work) + [x])
    return {"peak_bytes": peak, "state_bytes": state, "transient_bytes": peak - state, "method": method}


# --------------------------------------------------------------------------------------------- all

def measure_costs(model: nn.Module, input_shape, large_batch: int = 64, train_batch: int = 32,
                  repeats: int = 10, warmup: int = 2, threads: Optional[int] = 1,
                  channels_last: bool = False) -> dict:
    """Every figure of the report's cost table for one model, as a flat dict.

    Keys: params, flops, macs, pooling_ops, elementwise_ops, latency_b1_s, latency_large_s,
    large_batch, train_step_s, train_batch, peak_train_bytes, peak_infer_bytes, input_shape,
    threads, memory_format, and the timings behind each median (seconds, in the order they ran):
    latency_b1_runs (2 * `repeats` calls: a batch-1 call is short, so it gets twice as many),
    latency_large_runs and train_step_runs (`repeats` each). `input_shape` is (C, H, W); the
    model's weights are not changed.
    `channels_last`: time and measure a channels_last copy of the model with channels_last
    inputs (what the Trainer trains by default), instead of the model's own layout.

    Timings are single-threaded by default (`threads=1`): on a small or shared CPU, two-thread
    timings of small models measure thread hand-offs and the other processes more than the
    model (we saw the same ResNet-8 forward take 0.4 ms and 120 ms minutes apart). `threads=None`
    keeps torch's setting (use it on a dedicated machine to time multi-threaded inference).
    """
    _check_model(model)
    shape = _check_shape(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    check_positive_int("measure_costs", "large_batch", large_batch)
    check_positive_int("measure_costs", "train_batch", train_batch)
    if channels_last:
        import copy

        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out = {"params": count_params(model), "input_shape": list(shape),
           "memory_format": "channels_last" if _is_channels_last(model) else "contiguous"}
    out.update(count_flops(model, shape))
    out.update(count_elementwise(model, shape))
    timings = {"latency_b1": inference_timings(model, shape, 1, repeats * 2, warmup, threads),
               "latency_large": inference_timings(model, shape, large_batch, repeats, warmup, threads),
               "train_step": train_step_timings(model, shape, train_batch, repeats, warmup, threads)}
    for name, runs in timings.items():
        out[f"{name}_s"] = float(statistics.median(runs))
        out[f"{name}_runs"] = runs
    out["large_batch"] = large_batch
    out["train_batch"] = train_batch
    out["peak_train_bytes"] = peak_memory(model, shape, train_batch, training=True)["peak_bytes"]
    out["peak_infer_bytes"] = peak_memory(model, shape, large_batch, training=False)["peak_bytes"]
    out["threads"] = threads if threads is not None else torch.get_num_threads()
    return out


__all__ = ["count_params", "count_flops", "count_flops_of", "count_elementwise", "inference_latency",
           "inference_timings", "train_step_time", "train_step_timings", "peak_memory", "peak_memory_bytes",
           "PeakMemoryTracker", "tensor_bytes", "sync", "measure_costs", "make_input"]
