"""The passes over the feature map that a gating module cannot skip, timed inside real training steps.

Issue 6 asks SE and ECA to cost at most 8% of a ResNet-20 training step. A gate needs, per
block, at least: the squeeze (one read of the map), the gate's gradient sum(dy * x) (two reads)
and the input gradient dy * s + dz / HW (two reads, one write); `attention/_gating.py` does each
in one pass. This script times exactly those calls inside ordinary training steps of the model
with the module, by wrapping `_gating._pools`, `_gating._product_sum` and
`_gating._PoolForGate.backward` with timers, and times the plain model in the same loop
(interleaved rounds) for the overhead. What the three passes take is what remains even when
nothing else of the module costs anything. malloc keeps freed memory, as in the Trainer with
ATTNLAB_KEEP_FREED_MEMORY=1 (`attnlab.train.process.keep_freed_memory`). Between processes the total step time of the gated model varied by up to
8% here while the three passes did not; run it more than once.

    python benchmarks/gate_passes.py --attention se --threads 1
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

import torch
from torch.nn import functional as F

import attnlab
from attnlab.attention import _gating
from attnlab.train.process import keep_freed_memory
from profile_step import print_report  # benchmarks/, the script's own folder

PASSES = {"_pools": "squeeze (pooling, forward)", "_product_sum": "gate gradient sum(dy * x)",
          "backward": "input gradient dy * s + dz / HW (+ max scatter)"}


def _timed(fn, key, totals):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        totals[key] += time.perf_counter() - start
        return out
    return wrapper


def _train_step(model_name, attention, batch, channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = attnlab.create_model(model_name, num_classes=10, attention=attention).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, *model.input_size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--attention", default="se", help="a gating module: se, eca or cbam")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=4, help="steps per model per round")
    p.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last")
    p.add_argument("--out", default=None, help="also write the report (Markdown) to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    plain = _train_step(args.model, None, args.batch, not args.contiguous)
    gated = _train_step(args.model, args.attention, args.batch, not args.contiguous)

    totals = collections.Counter()
    _gating._pools = _timed(_gating._pools, "_pools", totals)
    _gating._product_sum = _timed(_gating._product_sum, "_product_sum", totals)
    _gating._PoolForGate.backward = staticmethod(_timed(_gating._PoolForGate.backward, "backward", totals))

    for step in (plain, gated, plain, gated):   # warm-up
        step()
    times = {"plain": [], "gated": []}
    passes = collections.defaultdict(list)
    for _ in range(args.rounds):
        for name, step in (("plain", plain), ("gated", gated)):
            totals.clear()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
            if name == "gated":
                for key in PASSES:
                    passes[key].append(totals[key] / args.steps)

    base, with_gate = statistics.median(times["plain"]), statistics.median(times["gated"])
    paired = statistics.median(g / b - 1 for g, b in zip(times["gated"], times["plain"]))
    lines = [f"Command: `python benchmarks/gate_passes.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n",
             f"{args.model} + {args.attention}, batch {args.batch}, "
             f"{'contiguous' if args.contiguous else 'channels_last'}, {torch.get_num_threads()} thread(s), "
             f"{args.rounds} interleaved rounds of {args.steps} steps; load {os.getloadavg()[0]:.1f}",
             f"\nStep without the module {base * 1e3:.1f} ms, with it {with_gate * 1e3:.1f} ms: overhead "
             f"{with_gate / base - 1:+.1%} (median of the paired rounds {paired:+.1%}).",
             "\n| pass (all blocks together) | ms / step | share of the plain step |\n|---|---|---|"]
    floor = 0.0
    for key, label in PASSES.items():
        ms = statistics.median(passes[key])
        floor += ms
        lines.append(f"| {label} | {ms * 1e3:.1f} | {ms / base:.1%} |")
    lines.append(f"| the three together | {floor * 1e3:.1f} | {floor / base:.1%} |")
    lines.append(f"\nEverything else the module adds (its MLP or convolution, autograd bookkeeping, and the "
                 f"cache misses it causes elsewhere): {(with_gate - base - floor) * 1e3:.1f} ms "
                 f"({(with_gate - base - floor) / base:+.1%}).")
    print_report(lines, args.out)


if __name__ == "__main__":
    main()
