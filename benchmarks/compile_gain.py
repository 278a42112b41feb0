"""What torch.compile costs and gains in training: the first compiled step (compilation) and the
steady-state step, eager against compiled, interleaved, for ResNet-20 with and without SE.

    python benchmarks/compile_gain.py [--attentions none se] [--batch 128] [--size 32] [--json F]

The break-even is the number of steps after which compiling has paid for itself: first compiled
step / (eager step - compiled step). It chose `Trainer`'s `compile=None` rule (COMPILE_MIN_STEPS).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from speed_hacks import make_step   # the same whole training step, built eager or compiled


def measure(attention, batch, size, rounds):
    eager, compiled = make_step(attention, batch, size, False), make_step(attention, batch, size, True)
    start = time.perf_counter()
    compiled()
    first = time.perf_counter() - start
    eager()
    times = {"eager": [], "compiled": []}
    for r in range(rounds):
        pairs = [("eager", eager), ("compiled", compiled)]
        for label, step in (pairs if r % 2 == 0 else pairs[::-1]):
            start = time.perf_counter()
            step()
            step()
            times[label].append((time.perf_counter() - start) / 2)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {"model": f"resnet20+{attention}" if attention else "resnet20", "batch": batch, "size": size,
            "first_compiled_step_s": first, "eager_step_s": e, "compiled_step_s": c, "gain": e / c,
            "break_even_steps": first / (e - c) if e > c else None, "eager_runs_s": times["eager"],
            "compiled_runs_s": times["compiled"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attentions", nargs="+", default=["none", "se"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for attention in args.attentions:
        row = measure(None if attention == "none" else attention, args.batch, args.size, args.rounds)
        rows.append(row)
        print(f"{row['model']}: first compiled step {row['first_compiled_step_s']:.1f} s; eager "
              f"{1e3 * row['eager_step_s']:.0f} ms, compiled {1e3 * row['compiled_step_s']:.0f} ms "
              f"({row['gain']:.2f}x); break-even after {row['break_even_steps'] or float('inf'):.0f} steps", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
