"""Where a training step's time goes: torch.profiler breakdown of one model's step by op kind.

Answers "why is ResNet-20 training far from the matmul limit?" and "what does an attention
module cost, op by op?". The step is forward + cross-entropy + backward + SGD (momentum), fp32,
as in `attnlab.measure.bench`. Ops are grouped into convolution (forward and backward), batch
norm, element-wise and pooling/reductions, attention-only ops (those that the plain model does
not run), optimizer and the rest; for convolution the achieved GFLOP/s is printed next to a
square fp32 matmul timed just before and after the profile, and an upper bound: the fraction of
the matmul limit the step would reach if every convolution ran at matmul speed and the other
ops kept their time.

    python benchmarks/profile_step.py --model resnet20 --attention se --batch 128 --threads 1
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import torch
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attnlab.measure import bench  # noqa: E402

GROUPS = (
    ("convolution", ("convolution", "conv2d", "mkldnn_convolution", "convolution_backward", "_convolution")),
    ("batch norm", ("batch_norm", "native_batch_norm", "native_batch_norm_backward", "_batch_norm")),
    ("matmul / linear", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("pool / reduce", ("avg_pool", "max_pool", "adaptive_avg_pool", "mean", "sum", "amax", "max")),
    ("element-wise", ("relu", "clamp_min", "threshold_backward", "add", "mul", "sigmoid", "sigmoid_backward",
                      "div", "sub", "copy_", "fill_", "zero_", "softmax", "_softmax_backward_data")),
)


def classify(name: str) -> str:
    base = name.split("::")[-1].rstrip("_") if "::" in name else name
    for group, keys in GROUPS:
        if any(base == k.rstrip("_") or base.startswith(k + "_") for k in keys):
            return group
    return "other"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--attention", default=None)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--memory-format", default="channels_last", choices=sorted(bench.MEMORY_FORMATS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--top", type=int, default=12, help="how many ops to list")
    p.add_argument("--out", default=None, help="also write the report (Markdown) to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fmt = bench.MEMORY_FORMATS[args.memory_format]
    torch.manual_seed(0)
    attention = None if args.attention in (None, "none") else args.attention
    model = bench._create_attnlab(args.model, attention).to(memory_format=fmt)
    size = bench._image_size(model, args.image_size)
    x = torch.randn(args.batch, *size).contiguous(memory_format=fmt)
    y = torch.randint(0, bench._num_classes(model), (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step_flops, conv_flops = _train_flops(model, x)
    for _ in range(2):
        step()
    mm_before = bench.matmul_sample(args.matmul_size, x.device, iters=3)
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - t0) / args.steps
    mm_after = bench.matmul_sample(args.matmul_size, x.device, iters=3)
    mm_gflops = 2 * args.matmul_size ** 3 / min(mm_before, mm_after) / 1e9

    by_group = collections.Counter()
    by_op = collections.Counter()
    for evt in prof.key_averages():
        if evt.key.startswith("aten::"):
            by_group[classify(evt.key)] += evt.self_cpu_time_total / 1e6 / args.steps
            by_op[evt.key] += evt.self_cpu_time_total / 1e6 / args.steps
    total = sum(by_group.values())
    lines = []
    emit = lines.append  # the report is collected, then printed and saved
    emit(f"Command: `python benchmarks/profile_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    emit(f"{args.model} + {attention or 'no attention'}, batch {args.batch}, {size[1]}x{size[2]}, "
          f"{args.memory_format}, {torch.get_num_threads()} thread(s); load {os.getloadavg()[0]:.1f}")
    emit(f"step {wall * 1e3:.1f} ms wall (profiled), aten self time {total * 1e3:.1f} ms; "
          f"{step_flops / 1e9:.2f} GFLOP fwd+bwd per step -> {step_flops / wall / 1e9:.1f} GFLOP/s; "
          f"fp32 matmul {mm_gflops:.1f} GFLOP/s -> {step_flops / wall / 1e9 / mm_gflops:.0%} of it")
    emit("\n| op kind | ms / step | share | note |\n|---|---|---|---|")
    for group, secs in by_group.most_common():
        note = ""
        if group == "convolution" and secs > 0:
            note = f"{conv_flops / secs / 1e9:.1f} GFLOP/s = {conv_flops / secs / 1e9 / mm_gflops:.0%} of matmul"
        emit(f"| {group} | {secs * 1e3:.1f} | {secs / total:.0%} | {note} |")
    conv_secs = by_group.get("convolution", 0.0)
    ideal = (total - conv_secs) + conv_flops / (mm_gflops * 1e9)
    emit(f"\nBound: with every convolution at matmul speed the step would take {ideal * 1e3:.1f} ms = "
          f"{step_flops / ideal / 1e9 / mm_gflops:.0%} of the matmul limit (other ops unchanged).")
    emit("\nTop ops:\n| op | ms / step |\n|---|---|")
    for op, secs in by_op.most_common(args.top):
        emit(f"| {op} | {secs * 1e3:.2f} |")
    print_report(lines, args.out)


def print_report(lines: list[str], out: str | None = None) -> None:
    """Print the report's lines and, with `out`, also write them to that Markdown file."""
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(report)


def _train_flops(model, x) -> tuple[int, int]:
    """Training FLOPs of one step, all and convolutions only: 3 x the train-mode forward (see
    bench.TRAIN_FLOPS_PER_FORWARD: the counter's backward count is wrong for grouped convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    conv = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(k))
    return (bench.TRAIN_FLOPS_PER_FORWARD * counter.get_total_flops(), bench.TRAIN_FLOPS_PER_FORWARD * conv)


if __name__ == "__main__":
    main()
