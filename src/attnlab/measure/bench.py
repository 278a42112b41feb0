"""`attnlab bench`: speed, memory and cost of attnlab's models side by side with reference builds.

Not a paper's method: a measurement protocol of its own. For every model (and attention) it
measures, in one process and interleaved with the reference implementations of the same
architecture (timm, torchvision: A B A B ...):

* training step throughput (images/s): forward, cross-entropy, backward and an SGD step
  (momentum 0.9), gradients set to None each step, random inputs and labels;
* inference throughput at batch 1 and at a large batch (eval mode, `torch.inference_mode`);
* peak memory of one training step and of one large-batch inference (measure/cost.py's
  `peak_memory_bytes`);
* parameters and FLOPs (measure/cost.py's `count_flops_of`: a multiply-add counts 2 FLOPs,
  convolutions and matrix products only; papers' "GFLOPs" are usually multiply-adds, i.e. half of
  this);
* the machine's limit: a large square fp32 matrix product timed as one more member of the
  training loop's interleaving, and each model's achieved training FLOP/s as a fraction of it
  (computed per repeat, then the median).

Definitions used in the table (``r`` = one repeat; every candidate is timed once per repeat):

Each round times every candidate once, starting one candidate later than the previous round.

* ``ratio_<mode>`` of a reference row = throughput(attnlab)_r / throughput(reference)_r, i.e.
  time(reference)_r / time(attnlab)_r, summarised by min / median / max over the repeats.
  Above 1: attnlab is faster. The attnlab row compared is the one with the same attention.
* ``overhead_<mode>`` = time(model with attention)_r / time(same implementation without)_r - 1.
  A reference without its own plain twin (timm modules plugged into attnlab's ResNet-20) is
  compared with attnlab's plain model.
* ``speedup_vs_contiguous_<mode>`` (rows of other memory formats) = median over r of
  time(same model, contiguous)_r / time(this row)_r: the memory formats are interleaved too.
* ``*_best``: the same ratio of each candidate's fastest repeat (min time). On a shared machine
  other processes only ever add time, so the fastest repeat is the least disturbed estimate; it
  is reported next to the paired statistics, which assume the load is equal within a round.
* ``train_frac_matmul`` = (training FLOPs per step / step time)_r / (matmul FLOP/s)_r, median
  over r; ``train_frac_matmul_best`` divides the fastest step by the fastest matmul.

Protocol choices (not from a paper): by default bf16 autocast rows are added where training's
`precision="auto"` would choose bf16 (train.precision: a GPU with native bf16, or a CPU with bf16
matrix instructions that a probe confirms faster; elsewhere bf16 is emulated, several times
slower, and measured only when asked for), and `torch.compile` rows on CUDA.
channels_last and contiguous are both measured by default, each on its own copy of the weights,
interleaved in the same loop. Each sample runs enough iterations to last ``min_sample_s`` (the
count is calibrated once per candidate after warm-up and then kept fixed). The reference
implementations come from measure/reference.py (``reference_builders``), which imports timm and
torchvision only when reference rows are asked for; any other callable of the same shape can be
passed instead.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._version import __version__
from ..checks import check_int, check_number
from ..models.registry import create_model, list_models, model_family
from ..train.precision import resolve_precision
from . import reference as reference_twins
from .cost import count_flops_of, peak_memory_bytes, sync

RESNET_DEFAULTS = ("resnet20", "resnet50")
RESNET_ATTENTIONS = (None, "se", "eca", "cbam", "gc", "non_local")
# One model of every other family, first registered name wins; families whose preferred names
# are all missing fall back to their first registered model.
OTHER_FAMILY_PREFERENCES = {
    "vgg": ("vgg16_bn", "vgg16", "vgg11_bn"),
    "densenet": ("densenet121",),
    "inception": ("inception_v3",),
    "shufflenet": ("shufflenet_v2_x1_0", "shufflenet_v2"),
    "xception": ("xception",),
    "nasnet": ("nasnet_mobile", "nasnet_a_mobile", "nasnetamobile"),
    "ran": ("attention56", "attention_56", "ran56"),
    "stn_cnn": ("stn_cnn",),
}
MODES = ("train", "infer_bs1", "infer_large")
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}

# A reference builder: (model_name, attention, num_classes) -> {label: module}, where label is
# "implementation:name" (e.g. "timm:seresnet50"). Return {} when there is no twin.
ReferenceBuilders = Callable[[str, Optional[str], int], dict]


class BenchArgumentError(ValueError):
    """A bad argument of `run_bench` (a value, a device that is not present, a model that cannot
    take the image size), raised before anything is timed."""


# --------------------------------------------------------------------------- small measurements
def _min_median_max(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def _paired(times_a: Sequence[float], times_b: Sequence[float], what: str) -> None:
    if len(times_a) != len(times_b) or not times_a:
        raise ValueError(f"{what}: need two equally long non-empty lists of per-repeat times, got "
                         f"{len(times_a)} and {len(times_b)}")


def throughput_ratio(times_a: Sequence[float], times_b: Sequence[float]) -> tuple[float, float, float]:
    """min, median, max over repeats r of throughput(a)_r / throughput(b)_r = times_b[r] / times_a[r].

    `times_a` and `times_b` hold one time per repeat, in their interleaving order."""
    _paired(times_a, times_b, "throughput_ratio")
    return _min_median_max([tb / ta for ta, tb in zip(times_a, times_b)])


def overhead(times_with: Sequence[float], times_without: Sequence[float]) -> tuple[float, float, float]:
    """min, median, max over repeats r of times_with[r] / times_without[r] - 1."""
    _paired(times_with, times_without, "overhead")
    return _min_median_max([tw / t0 - 1.0 for tw, t0 in zip(times_with, times_without)])


def matmul_sample(size: int, device: torch.device, iters: int = 1) -> float:
    """Seconds per fp32 (size x size) @ (size x size) product (2 * size**3 FLOPs)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b)
    sync(device)
    return (time.perf_counter() - t0) / iters


# --------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One model in an interleaved group."""

    label: str                      # "attnlab:resnet50+se", "timm:seresnet50", ...
    implementation: str             # "attnlab", "timm", "torchvision", "timm-modules"
    model_name: str                 # attnlab's name of the architecture
    attention: Optional[str]
    model: nn.Module
    times: dict = field(default_factory=dict)     # mode -> [seconds per iteration, per repeat]
    iters: dict = field(default_factory=dict)     # mode -> iterations per sample
    peak_bytes: dict = field(default_factory=dict)
    params: int = 0
    flops_fwd_per_image: int = 0
    flops_train_per_image: int = 0


def _first_output(out):
    """The logits of a model that may return (logits, aux...) or a namedtuple in train mode."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "logits"):
        return out.logits
    raise TypeError(f"model returned {type(out).__name__}; expected a tensor or a tuple of tensors")


def _num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(fc, nn.Linear):
        return fc.out_features
    raise ValueError(f"cannot tell the number of classes of {type(model).__name__}")


class _Runner:
    """Closures for one candidate under one variant (memory format, precision, compile)."""

    def __init__(self, cand: Candidate, image_size: tuple[int, int, int], batches: dict,
                 num_classes: int, device: torch.device, memory_format, precision: str,
                 compiled: bool, seed: int):
        self.cand, self.device = cand, device
        model = cand.model.to(device=device, memory_format=memory_format)
        self.model = model
        self.run_model = torch.compile(model) if compiled else model
        self.autocast = (precision == "bf16")
        gen = torch.Generator().manual_seed(seed)

        def batch(n):
            x = torch.randn((n, *image_size), generator=gen).to(device).contiguous(memory_format=memory_format)
            y = torch.randint(0, max(num_classes, 1), (n,), generator=gen).to(device)
            return x, y

        self.inputs = {mode: batch(n) for mode, n in batches.items()}
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def _forward(self, x):
        if self.autocast:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.run_model(x)
        return self.run_model(x)

    def step(self, mode: str) -> Callable[[], None]:
        x, y = self.inputs[mode]
        if mode == "train":
            def train_step():
                self.model.train()
                self.optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(_first_output(self._forward(x)).float(), y)
                loss.backward()
                self.optimizer.step()
            return train_step

        def infer_step():
            self.model.eval()
            with torch.inference_mode():
                self._forward(x)
        return infer_step

    def live_tensors(self, mode: str) -> list[torch.Tensor]:
        live = list(self.model.parameters()) + list(self.model.buffers()) + list(self.inputs[mode])
        if mode == "train":
            for state in self.optimizer.state.values():
                live += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return live


def _time_iters(fn: Callable[[], None], iters: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def _interleave(runners: list[_Runner], mode: str, repeats: int, warmup: int, min_sample_s: float,
                device: torch.device, matmul_size: int = 0) -> list[float]:
    """Time `mode` for every runner, interleaved, `repeats` rounds; a matmul sample leads each
    round when `matmul_size` > 0. Round r starts at runner r mod n (A B C, B C A, C A B, ...) so
    that no runner always holds the same place in the round. Returns the matmul times."""
    steps = [r.step(mode) for r in runners]
    for r, fn in zip(runners, steps):
        for _ in range(warmup):
            fn()
        once = _time_iters(fn, 1, device)
        r.cand.iters[mode] = max(1, math.ceil(min_sample_s / max(once, 1e-9)))
        r.cand.times[mode] = []
    mm_times = []
    if matmul_size:
        mm_once = matmul_sample(matmul_size, device)
        mm_iters = max(1, math.ceil(min_sample_s / max(mm_once, 1e-9)))
    n = len(runners)
    for round_index in range(repeats):
        if matmul_size:
            mm_times.append(matmul_sample(matmul_size, device, mm_iters))
        for k in range(n):
            i = (round_index + k) % n
            runners[i].cand.times[mode].append(_time_iters(steps[i], runners[i].cand.iters[mode], device))
    return mm_times


# --------------------------------------------------------------------------- model selection
def default_models() -> list[str]:
    """ResNet-20, ResNet-50 and one registered model of every other family."""
    names = list_models()
    chosen = [n for n in RESNET_DEFAULTS if n in names]
    for family, preferred in OTHER_FAMILY_PREFERENCES.items():
        pick = next((n for n in preferred if n in names), None)
        if pick is None:
            pick = next((n for n in names if model_family(n) == family), None)
        if pick is not None and pick not in chosen:
            chosen.append(pick)
    return chosen


def _default_attentions(model_name: str) -> tuple:
    return RESNET_ATTENTIONS if model_name in RESNET_DEFAULTS else (None,)


# --------------------------------------------------------------------------- the benchmark
def _check_args(models, attentions, batch_sizes, image_size, repeats, device, precisions,
                memory_formats, modes, train_batch_size=None, warmup=0, min_sample_s=1.0, matmul_size=0):
    """TypeError for a wrong kind of list; BenchArgumentError (a ValueError) for a bad value."""
    if models is not None and (isinstance(models, str) or not all(isinstance(m, str) for m in models)):
        raise TypeError(f"run_bench: models must be a list of model names, got {models!r}")
    if attentions is not None and (isinstance(attentions, str)
                                   or not all(a is None or isinstance(a, str) for a in attentions)):
        raise TypeError(f"run_bench: attentions must be a list of names or None, got {attentions!r}")
    if (isinstance(batch_sizes, (int, str)) or not batch_sizes
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes)):
        raise BenchArgumentError(f"run_bench: batch_sizes must be a non-empty list of ints >= 1, got {batch_sizes!r}")
    if image_size is not None:
        ok = isinstance(image_size, int) and not isinstance(image_size, bool) and image_size >= 1
        ok = ok or (isinstance(image_size, (tuple, list)) and len(image_size) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in image_size))
        if not ok:
            raise BenchArgumentError(f"run_bench: image_size must be None, an int >= 1 or (H, W), got {image_size!r}")
    try:
        check_int("run_bench", "repeats", repeats, 1)
        if train_batch_size is not None:
            check_int("run_bench", "train_batch_size", train_batch_size, 1)
        check_int("run_bench", "warmup", warmup, 0)
        check_number("run_bench", "min_sample_s", min_sample_s, low=0)
        check_int("run_bench", "matmul_size", matmul_size, 0)
    except ValueError as err:
        raise BenchArgumentError(str(err)) from None
    train_batch = train_batch_size if train_batch_size is not None else max(batch_sizes)
    if "train" in modes and train_batch < 2:
        raise BenchArgumentError(f"run_bench: the training batch (train_batch_size, else the largest of batch_sizes "
                                 f"{list(batch_sizes)}) must hold 2 or more images: batch norm needs them in training")
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        raise BenchArgumentError(f"run_bench: unknown precision(s) {bad}; expected 'fp32' or 'bf16'")
    bad = [m for m in memory_formats if m not in MEMORY_FORMATS]
    if bad:
        raise BenchArgumentError(f"run_bench: unknown memory format(s) {bad}; expected {list(MEMORY_FORMATS)}")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise BenchArgumentError(f"run_bench: modes {modes!r} invalid; expected a non-empty subset of {MODES}")


def _check_models_take_size(models: Sequence[str], image_size) -> None:
    """Build each model (without attention) and push one zero image of the size it is to be timed
    at through it, so that a model too small for `image_size` is refused before any timing."""
    for name in models:
        model = _create_attnlab(name, None).eval()
        size = _image_size(model, image_size)
        try:
            with torch.no_grad():
                model(torch.zeros(1, *size))
        except (ValueError, RuntimeError) as err:
            need = getattr(model, "min_size", None)
            raise BenchArgumentError(f"run_bench: model {name!r} cannot take {size[1]}x{size[2]} images"
                                     + (f"; it needs H, W >= {need}" if need else "")
                                     + f" ({' '.join(str(err).split())[:200]})") from None


def run_bench(models: Optional[Sequence[str]] = None, attentions: Optional[Sequence[Optional[str]]] = None,
              batch_sizes: Sequence[int] = (1, 64), image_size=None, repeats: int = 5,
              device: str | torch.device = "cpu", reference: bool = False, out_dir: Optional[str] = None,
              reference_builders: Optional[ReferenceBuilders] = None, train_batch_size: Optional[int] = None,
              memory_formats: Sequence[str] = ("channels_last", "contiguous"),
              precisions: Optional[Sequence[str]] = None, compile: Optional[bool] = None,
              modes: Sequence[str] = MODES, measure_memory: bool = True, measure_flops: bool = True,
              matmul_size: int = 2048, warmup: int = 2, min_sample_s: float = 0.25, seed: int = 0,
              command: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Measure attnlab's models next to their timm / torchvision twins; one row per candidate.

    Args:
        models: attnlab model names; None = ResNet-20, ResNet-50 and one model of every other
            family (`default_models()`).
        attentions: attention names (None in the list = no attention) applied to every model;
            None = none/se/eca/cbam/gc/non_local for the ResNets and none for the others.
        batch_sizes: inference batch sizes; the smallest is the "batch 1" mode and the largest
            the "large batch" mode (and the training batch unless `train_batch_size` is given).
        image_size: input H = W (int) or (H, W); None = each model's native `input_size`.
        repeats: interleaved rounds; ratios and overheads are summarised over them.
        device: "cpu" or "cuda[:i]"; the inputs, models and timings live there.
        reference: also build the reference implementations: `reference_builders`, by default
            measure/reference.py's timm and torchvision twins (BenchArgumentError, before any
            timing, when those packages are not installed).
        out_dir: when given, results.csv and results.md are written there (`write_results`).
        reference_builders: callable (model_name, attention, num_classes) -> {label: module};
            labels are "implementation:name". Default: measure/reference.py's.
        train_batch_size: the training batch (default: the largest of `batch_sizes`).
        memory_formats: subset of ("channels_last", "contiguous"); each is a separate variant.
        precisions: subset of ("fp32", "bf16"); default ("fp32", "bf16") where training's auto
            precision is bf16 on `device` (train.precision.resolve_precision), else ("fp32",).
        compile: add a `torch.compile` variant; default True on CUDA, False on CPU.
        modes: subset of ("train", "infer_bs1", "infer_large").
        measure_memory, measure_flops: switch off the (untimed) memory and FLOP passes.
        matmul_size: side of the square fp32 matmul that measures the machine's limit (0 = skip).
        warmup: untimed iterations per candidate and mode before calibration.
        min_sample_s: each timed sample runs enough iterations to last about this long.
        seed: seeds the inputs and the model initialisation.
        command: the command line to record in the results (default: sys.argv).
        progress: a function that receives one line when the run starts and one per model as it
            finishes (its time and the ETA of the rest); None = silent.

    Returns:
        A list of dicts, one per (model, attention, implementation, variant); see `COLUMNS`.
    """
    from ..train.device import resolve_device

    try:
        device = resolve_device(device)
    except ValueError as err:
        raise BenchArgumentError(f"run_bench: {err}") from None
    if precisions is None:
        precisions = ("fp32", "bf16") if resolve_precision("auto", device).name == "bf16" else ("fp32",)
    if compile is None:
        compile = device.type == "cuda"
    _check_args(models, attentions, batch_sizes, image_size, repeats, device, precisions,
                memory_formats, modes, train_batch_size, warmup, min_sample_s, matmul_size)
    if models is None:
        models = default_models()
    known = set(list_models())
    unknown = [m for m in models if m not in known]
    if unknown:
        raise BenchArgumentError(f"run_bench: unknown model(s) {unknown}; see attnlab.list_models()")
    if image_size is not None:    # each model's native size always fits it
        _check_models_take_size(models, image_size)
    if reference and reference_builders is None:
        try:
            reference_twins.require_packages()
        except ValueError as err:
            raise BenchArgumentError(f"run_bench: {err}") from None
        reference_builders = reference_twins.reference_builders
    small_batch, large_batch = min(batch_sizes), max(batch_sizes)
    train_batch = train_batch_size or large_batch
    batches = {"train": train_batch, "infer_bs1": small_batch, "infer_large": large_batch}
    compiled_variants = (False, True) if compile else (False,)

    if progress is not None and not callable(progress):
        raise TypeError(f"run_bench: progress must be a function of one line (str) or None, got {progress!r}")
    say = progress or (lambda line: None)
    say(f"bench: {len(models)} model(s) on {device}, {repeats} interleaved repeat(s) each; one line per model")
    started = time.perf_counter()
    rows: list[dict] = []
    for model_index, model_name in enumerate(models, 1):
        model_started = time.perf_counter()
        atts = attentions if attentions is not None else _default_attentions(model_name)
        torch.manual_seed(seed)
        candidates = _build_group(model_name, atts, reference, reference_builders)
        first = candidates[0].model
        num_classes = _num_classes(first)
        size = _image_size(first, image_size)
        for cand in candidates:
            cand.params = sum(p.numel() for p in cand.model.parameters())
        if measure_flops:
            _count_group_flops(candidates, size)
        # every memory format gets its own copy of each model, and all of them are interleaved
        # in one loop, so that the formats are compared under the same load as the models
        by_format = {fmt: candidates if i == 0 else [_copy_candidate(c) for c in candidates]
                     for i, fmt in enumerate(memory_formats)}
        for precision in precisions:
            for compiled in compiled_variants:
                runners = [_Runner(c, size, batches, num_classes, device, MEMORY_FORMATS[fmt],
                                   precision, compiled, seed)
                           for fmt, cands in by_format.items() for c in cands]
                mm_times = []
                for mode in modes:
                    mm = _interleave(runners, mode, repeats, warmup, min_sample_s, device,
                                     matmul_size if (mode == "train" and precision == "fp32") else 0)
                    mm_times = mm or mm_times
                    if measure_memory and mode in ("train", "infer_large"):
                        for r in runners:
                            r.optimizer.zero_grad(set_to_none=True)  # no stale grads to free
                            r.cand.peak_bytes[mode] = peak_memory_bytes(
                                r.step(mode), device, r.live_tensors(mode))
                for fmt, cands in by_format.items():
                    group = _group_rows(cands, model_name, dict(
                        memory_format=fmt, precision=precision, compiled=compiled, device=str(device),
                        image_size=f"{size[1]}x{size[2]}", train_batch=train_batch,
                        small_batch=small_batch, large_batch=large_batch, repeats=repeats),
                        modes, mm_times, matmul_size)
                    if fmt != "contiguous" and "contiguous" in by_format:
                        for row, c, c0 in zip(group, cands, by_format["contiguous"]):
                            for mode in modes:
                                row[f"speedup_vs_contiguous_{mode}"] = statistics.median(
                                    t0 / t for t0, t in zip(c0.times[mode], c.times[mode]))
                    rows += group
                for cands in by_format.values():
                    for c in cands:
                        c.times, c.iters, c.peak_bytes = {}, {}, {}
        elapsed = time.perf_counter() - started
        left = elapsed / model_index * (len(models) - model_index)
        say(f"bench [{model_index}/{len(models)}] {model_name}: {len(candidates)} candidate(s) timed in "
            f"{time.perf_counter() - model_started:.0f} s (elapsed {elapsed:.0f} s"
            + (f", ETA {left:.0f} s)" if model_index < len(models) else ", done)"))
    if out_dir is not None:
        write_results(rows, out_dir, command=command)
    return rows


def _copy_candidate(cand: Candidate) -> Candidate:
    """An independent copy (its own weights) of `cand` for another memory format."""
    return dataclasses.replace(cand, model=copy.deepcopy(cand.model), times={}, iters={}, peak_bytes={})


def _image_size(model: nn.Module, image_size) -> tuple[int, int, int]:
    native = tuple(getattr(model, "input_size", (3, 224, 224)))
    chans = getattr(model, "in_chans", native[0])
    if image_size is None:
        return (chans, native[1], native[2])
    if isinstance(image_size, int):
        return (chans, image_size, image_size)
    return (chans, int(image_size[0]), int(image_size[1]))


def _create_attnlab(model_name: str, attention: Optional[str]) -> nn.Module:
    """attnlab's `model_name` with `attention`; non-local blocks go between blocks, so "non_local"
    selects the registered `nl_<model_name>` (the non-local paper's placement) when there is one."""
    if attention in ("non_local", "nl", "nonlocal") and f"nl_{model_name}" in list_models():
        return create_model(f"nl_{model_name}")
    return create_model(model_name, attention=attention)


def _build_group(model_name: str, attentions, reference: bool, reference_builders) -> list[Candidate]:
    """attnlab's model with every attention, then the references; attnlab's plain model first."""
    cands = []
    for att in attentions:
        model = _create_attnlab(model_name, att)
        label = f"attnlab:{model_name}" + (f"+{att}" if att else "")
        cands.append(Candidate(label, "attnlab", model_name, att, model))
    if reference and reference_builders is not None:
        num_classes = _num_classes(cands[0].model)
        for att in attentions:
            for label, module in (reference_builders(model_name, att, num_classes) or {}).items():
                if not isinstance(module, nn.Module):
                    raise TypeError(f"reference_builders returned {type(module).__name__} for {label!r}; "
                                    f"expected an nn.Module")
                impl = label.split(":", 1)[0]
                cands.append(Candidate(label, impl, model_name, att, module))
    return cands


TRAIN_FLOPS_PER_FORWARD = 3  # forward + gradient w.r.t. the input + gradient w.r.t. the weights


def _count_group_flops(candidates: list[Candidate], size) -> None:
    """Forward FLOPs per image (eval mode), and training FLOPs = 3 x forward FLOPs in train mode.

    The backward is not counted directly: torch.utils.flop_counter (torch 2.13) counts the
    backward of a grouped convolution `groups` times too high (a depthwise 64-channel conv:
    forward + backward = 66 x forward instead of 3 x), which would inflate the achieved FLOP/s of
    Xception, ShuffleNet and NASNet many times over."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, *size), generator=gen)
    for c in candidates:
        m = c.model
        was_training = m.training
        with torch.no_grad():
            m.eval()
            c.flops_fwd_per_image = count_flops_of(lambda: m(x[:1]))["flops"]
            m.train()  # batch 2: train-mode batch norm needs more than one value per channel
            c.flops_train_per_image = TRAIN_FLOPS_PER_FORWARD * count_flops_of(lambda: m(x))["flops"] // 2
        m.train(was_training)


COLUMNS = (
    "model", "attention", "implementation", "label", "device", "memory_format", "precision", "compiled",
    "image_size", "train_batch", "small_batch", "large_batch", "repeats", "params", "gflops_fwd_per_image",
    "train_img_s", "infer_bs1_img_s", "infer_large_img_s", "train_peak_mb", "infer_large_peak_mb",
    "ratio_train_min", "ratio_train_median", "ratio_train_max", "ratio_train_best",
    "ratio_infer_bs1_min", "ratio_infer_bs1_median", "ratio_infer_bs1_max", "ratio_infer_bs1_best",
    "ratio_infer_large_min", "ratio_infer_large_median", "ratio_infer_large_max", "ratio_infer_large_best",
    "overhead_train_min", "overhead_train_median", "overhead_train_max", "overhead_train_best",
    "overhead_infer_bs1_min", "overhead_infer_bs1_median", "overhead_infer_bs1_max", "overhead_infer_bs1_best",
    "overhead_infer_large_min", "overhead_infer_large_median", "overhead_infer_large_max",
    "overhead_infer_large_best", "overhead_baseline",
    "matmul_gflop_s", "train_gflop_s", "train_frac_matmul", "train_frac_matmul_best",
    "speedup_vs_contiguous_train", "speedup_vs_contiguous_infer_bs1", "speedup_vs_contiguous_infer_large",
)


def _group_rows(candidates: list[Candidate], model_name: str, variant: dict, modes, mm_times,
                matmul_size: int) -> list[dict]:
    attnlab_by_att = {c.attention: c for c in candidates if c.implementation == "attnlab"}
    plain_by_impl = {c.implementation: c for c in candidates if c.attention is None}
    mm_flops = 2.0 * matmul_size ** 3
    rows = []
    for c in candidates:
        row = dict.fromkeys(COLUMNS)
        row.update(variant)
        row.update(model=model_name, attention=c.attention or "none", implementation=c.implementation,
                   label=c.label, params=c.params, gflops_fwd_per_image=c.flops_fwd_per_image / 1e9)
        for mode in modes:
            batch = {"train": variant["train_batch"], "infer_bs1": variant["small_batch"],
                     "infer_large": variant["large_batch"]}[mode]
            row[f"{mode}_img_s"] = batch / statistics.median(c.times[mode])
            twin = attnlab_by_att.get(c.attention)
            if c.implementation != "attnlab" and twin is not None:
                row[f"ratio_{mode}_min"], row[f"ratio_{mode}_median"], row[f"ratio_{mode}_max"] = \
                    throughput_ratio(twin.times[mode], c.times[mode])
                row[f"ratio_{mode}_best"] = min(c.times[mode]) / min(twin.times[mode])
        if "train" in c.peak_bytes:
            row["train_peak_mb"] = c.peak_bytes["train"] / 2 ** 20
        if "infer_large" in c.peak_bytes:
            row["infer_large_peak_mb"] = c.peak_bytes["infer_large"] / 2 ** 20
        base = plain_by_impl.get(c.implementation) or plain_by_impl.get("attnlab")
        if c.attention is not None and base is not None:
            row["overhead_baseline"] = base.label
            for mode in modes:
                row[f"overhead_{mode}_min"], row[f"overhead_{mode}_median"], row[f"overhead_{mode}_max"] = \
                    overhead(c.times[mode], base.times[mode])
                row[f"overhead_{mode}_best"] = min(c.times[mode]) / min(base.times[mode]) - 1.0
        if "train" in modes and c.flops_train_per_image:
            step_flops = c.flops_train_per_image * variant["train_batch"]
            row["train_gflop_s"] = step_flops / statistics.median(c.times["train"]) / 1e9
            if mm_times:
                fracs = [(step_flops / t) / (mm_flops / m) for t, m in zip(c.times["train"], mm_times)]
                row["train_frac_matmul"] = statistics.median(fracs)
                row["train_frac_matmul_best"] = (step_flops / min(c.times["train"])) / (mm_flops / min(mm_times))
        if mm_times:
            row["matmul_gflop_s"] = statistics.median(mm_flops / m for m in mm_times) / 1e9
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- output
def machine_info(device: str | torch.device = "cpu") -> dict:
    """The machine and library versions, recorded with every run."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
        if model:
            info["cpu_model"] = model
    except OSError:
        pass
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    for name in ("timm", "torchvision", "numpy"):
        mod = sys.modules.get(name)
        if mod is not None:
            info[name] = getattr(mod, "__version__", "?")
    info["attnlab"] = __version__
    device = torch.device(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _spread(key: str, percent: bool) -> Callable[[dict], str]:
    """A cell 'min / median / max (best b)' of the `<key>_min/_median/_max/_best` columns."""
    def cell(row: dict) -> str:
        vals = [row.get(f"{key}_{s}") for s in ("min", "median", "max")]
        if vals[1] is None:
            return ""
        fmt = "{:+.1%}" if percent else "{:.2f}"
        best = row.get(f"{key}_best")
        return " / ".join(fmt.format(v) for v in vals) + ("" if best is None else f" (best {fmt.format(best)})")
    return cell


def _value(key: str, fmt: str, scale: float = 1.0) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        v = row.get(key)
        return "" if v is None else fmt.format(v * scale if scale != 1.0 else v)
    return cell


def _matmul_fraction(row: dict) -> str:
    median, best = row.get("train_frac_matmul"), row.get("train_frac_matmul_best")
    if median is None:
        return ""
    return f"{median:.0%}" + ("" if best is None else f" (best {best:.0%})")


def _markdown_columns(rows: list[dict]) -> list[tuple[str, Callable[[dict], str], str]]:
    """(header, cell of a row, legend sentence or "") of every column the table can show; the
    batch sizes in the headers are those of the rows (all rows of one run share them). The first
    five describe the row; the others are measurements."""
    small = {r.get("small_batch") for r in rows}
    large = {r.get("large_batch") for r in rows}
    train = {r.get("train_batch") for r in rows}
    bs1 = f"batch {small.pop()}" if len(small) == 1 else "small batch"
    big = f"batch {large.pop()}" if len(large) == 1 else "large batch"
    step = f"batch {train.pop()}" if len(train) == 1 else "training batch"
    return [
        ("image (H x W)", _value("image_size", "{}"), ""),
        ("model", _value("label", "{}"), "**model**: implementation:name, +attention when it has a mechanism."),
        ("memory format", _value("memory_format", "{}"), ""),
        ("precision", _value("precision", "{}"), ""),
        ("torch.compile", lambda row: "" if row.get("compiled") is None else "yes" if row["compiled"] else "no", ""),
        ("params (M)", _value("params", "{:.2f}", 1e-6), ""),
        ("forward GFLOP / image", _value("gflops_fwd_per_image", "{:.3f}"),
         "**GFLOP**: convolutions and matrix products counted by `torch.utils.flop_counter`, a multiply-add "
         "as 2 FLOPs (papers' GFLOPs are usually multiply-adds, half of this)."),
        (f"training, {step} (img/s)", _value("train_img_s", "{:.1f}"),
         "**img/s**: images per second, the median over the repeats; a training step is forward, "
         "cross-entropy, backward and an SGD step."),
        (f"inference, {bs1} (img/s)", _value("infer_bs1_img_s", "{:.1f}"), ""),
        (f"inference, {big} (img/s)", _value("infer_large_img_s", "{:.1f}"), ""),
        ("training peak memory (MB)", _value("train_peak_mb", "{:.0f}"),
         "**peak memory**: the most tensor memory one step needs, weights, optimizer state and inputs "
         "included (a lower bound on the CPU: allocator padding is not seen)."),
        (f"inference peak memory, {big} (MB)", _value("infer_large_peak_mb", "{:.0f}"), ""),
        ("speed vs reference, training: min / median / max (x)", _spread("ratio_train", False),
         "**speed vs reference**: attnlab's throughput / the reference twin's, per repeat (above 1: attnlab "
         "is faster); *best* compares the fastest repeat of each, the least disturbed on a shared machine."),
        (f"speed vs reference, inference {bs1} (x)", _spread("ratio_infer_bs1", False), ""),
        (f"speed vs reference, inference {big} (x)", _spread("ratio_infer_large", False), ""),
        ("attention overhead, training step time: min / median / max", _spread("overhead_train", True),
         "**attention overhead**: step time with the attention mechanism / without it - 1, per repeat "
         "(*best*: of the fastest repeats)."),
        ("training FLOP/s as % of fp32 matmul: median (best)", _matmul_fraction,
         "**% of fp32 matmul**: the training step's FLOP/s as a fraction of a large square fp32 matrix "
         "product's, timed in the same interleaving (the machine's practical limit)."),
        ("speed-up over contiguous, training (x)", _value("speedup_vs_contiguous_train", "{:.2f}x"),
         "**speed-up over contiguous**: the contiguous copy's time / this memory format's, per repeat, median."),
        (f"speed-up over contiguous, inference {big} (x)",
         _value("speedup_vs_contiguous_infer_large", "{:.2f}x"), ""),
    ]


def format_markdown(rows: list[dict], info: Optional[dict] = None, command: Optional[str] = None) -> str:
    """The rows as a Markdown table, headed by the machine, the versions and the command.

    A column that is empty in every row (the reference ratios without reference twins, for
    example) is left out; a legend under the table defines each column that is shown."""
    lines = []
    if command:
        lines += [f"Command: `{command}`", ""]
    if info:
        lines += ["Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    if rows:
        r0 = rows[0]
        mm = [r["matmul_gflop_s"] for r in rows if r.get("matmul_gflop_s")]
        lines += [f"Device {r0['device']}; train batch {r0['train_batch']}, inference batches "
                  f"{r0['small_batch']} and {r0['large_batch']}; {r0['repeats']} interleaved repeats"
                  + (f"; fp32 matmul: median {statistics.median(mm):.1f} GFLOP/s over the groups" if mm else "")
                  + ".", ""]
    columns = _markdown_columns(rows)
    cells = [[cell(row) for _, cell, _ in columns] for row in rows]
    shown = [i for i in range(len(columns)) if not rows or any(r[i] for r in cells)]
    # a describing column with one value in every row is said once above the table instead
    same = [i for i in shown[:5] if columns[i][0] != "model" and len({r[i] for r in cells}) == 1 and cells]
    if same:
        lines += ["Every row: " + ", ".join(f"{columns[i][0]} {cells[0][i]}" for i in same) + ".", ""]
        shown = [i for i in shown if i not in same]
    lines.append("| " + " | ".join(columns[i][0] for i in shown) + " |")
    lines.append("|" + "---|" * len(shown))
    for row_cells in cells:
        lines.append("| " + " | ".join(row_cells[i] for i in shown) + " |")
    legend = [columns[i][2] for i in shown if columns[i][2]]
    if legend:
        lines += ["", " ".join(legend)]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out_dir: str | os.PathLike, command: Optional[str] = None,
                  info: Optional[dict] = None, stem: str = "results") -> tuple[str, str]:
    """Write `<stem>.csv` (every column) and `<stem>.md` (the table, machine, versions, command)."""
    os.makedirs(out_dir, exist_ok=True)
    command = command if command is not None else " ".join(sys.argv)
    info = info if info is not None else machine_info(rows[0]["device"] if rows else "cpu")
    csv_path = os.path.join(out_dir, f"{stem}.csv")
    with open(csv_path, "w", newline="") as fh:
        fh.write(f"# command: {command}\n")
        fh.write("# machine: " + "; ".join(f"{k}={v}" for k, v in info.items()) + "\n")
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    md_path = os.path.join(out_dir, f"{stem}.md")
    with open(md_path, "w") as fh:
        fh.write(format_markdown(rows, info, command))
    return csv_path, md_path
