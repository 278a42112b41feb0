"""Does each hand-written speed path pay for itself? A/B of whole training steps, interleaved.

For every custom path of the library this times a whole training step (forward, backward, SGD
update) of ResNet-20 at 32x32, batch 128, channels_last, with the path on (the library as it is)
and off (the same computation in plain PyTorch, patched in for the duration of the measurement),
alternating A and B so that both see the same machine load. The gain is the ratio of the medians
(B / A - 1: positive means the custom path is faster).

    python benchmarks/speed_hacks.py [--rounds 7] [--steps 3] [--threads 2] [--compile] [--json F]

A path is kept only if it wins at least 5% of a whole step in one mode users run and loses in
none (benchmarks/RESULTS.md, section speed_hacks).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import attnlab
from attnlab.attention import cbam as cbam_mod, eca as eca_mod, se as se_mod, gc as gc_mod, _gating
from attnlab.models import resnet as resnet_mod


def _plain_gate_scale(x, excite, over_channels=False, with_max=False, residual=None):
    pooled = _gating.pooled(x, over_channels, with_max)
    gate = excite(*pooled)
    return x * gate if residual is None else residual + x * gate


@contextlib.contextmanager
def patched(pairs):
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in pairs]
    for obj, name, value in pairs:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _eca_conv_excite(self, descriptor):
    y = self.conv(descriptor.reshape(-1, 1, self.channels))
    return torch.sigmoid(y).view(-1, self.channels, 1, 1)


def _gc_plain_add(self, x):
    return x + self.transform(self.context(x))[:, :, None, None]


# (name, attention of the model it is measured on, the patch that turns it off)
HACKS = {
    "gate_scale (SE)": ("se", [(se_mod, "gate_scale", _plain_gate_scale)]),
    "gate_scale (ECA)": ("eca", [(eca_mod, "gate_scale", _plain_gate_scale)]),
    "gate_scale (CBAM)": ("cbam", [(cbam_mod, "gate_scale", _plain_gate_scale)]),
    "scale_add (SE)": ("se", [(se_mod.SqueezeExcite, "_fused_scale_add", lambda self, x, r: None)]),
    "GC one-pass backward": ("gc", [(gc_mod.GlobalContextBlock, "_fused_add", _gc_plain_add)]),   # deleted
    "ECA unfold": ("eca", [(eca_mod.EfficientChannelAttention, "excite", _eca_conv_excite)]),          # deleted
    "attend (empty slots)": (None, [(resnet_mod, "attend", lambda attn, x: attn(x))]),
    "set_flush_denormal": (None, "denormal"),
}


def make_step(attention, batch, size, compiled):
    torch.manual_seed(0)
    model = attnlab.create_model("resnet20", attention=attention, num_classes=10)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    fwd = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fwd(x), y).backward()
        opt.step()
    return step


def time_steps(step, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def measure(name, rounds, steps, batch, size, compiled):
    attention, patch = HACKS[name]
    if patch == "denormal":
        on = contextlib.nullcontext
        step_on = make_step(attention, batch, size, compiled)
        step_off = step_on
        contexts = (lambda: _denormals(True), lambda: _denormals(False))
    else:
        # Each side gets its own model, built (and compiled) with the patch as it will run.
        step_on = make_step(attention, batch, size, compiled)
        with patched(patch):
            step_off = make_step(attention, batch, size, compiled)
        contexts = (contextlib.nullcontext, lambda: patched(patch))
    times = {"on": [], "off": []}
    for warm in range(2):   # warm-up (and compilation) of both sides
        with contexts[0]():
            step_on()
        with contexts[1]():
            step_off()
    for r in range(rounds):
        order = (("on", step_on, contexts[0]), ("off", step_off, contexts[1]))
        for label, step, ctx in (order if r % 2 == 0 else order[::-1]):
            with ctx():
                times[label].append(time_steps(step, steps))
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {"path": name, "model": f"resnet20+{attention}" if attention else "resnet20",
            "mode": "compiled fp32" if compiled else "eager fp32", "on_ms": 1e3 * on, "off_ms": 1e3 * off,
            "gain": off / on - 1, "on_runs_ms": [1e3 * t for t in times["on"]],
            "off_runs_ms": [1e3 * t for t in times["off"]]}


@contextlib.contextmanager
def _denormals(flag):
    torch.set_flush_denormal(flag)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def keep_freed_memory_ab(rounds, steps, batch, size):
    """keep_freed_memory lasts for the life of a process: A/B in fresh processes, alternating."""
    code = ("import sys,time,torch; sys.path.insert(0, %r); from speed_hacks import make_step, time_steps;"
            "from attnlab.train.process import keep_freed_memory;"
            "flag=sys.argv[1]=='1'; flag and keep_freed_memory(); torch.set_num_threads(int(sys.argv[2]));"
            "s=make_step(None,%d,%d,False); s(); s(); print(time_steps(s,%d))") % (
        os.path.dirname(os.path.abspath(__file__)), batch, size, steps)
    times = {"on": [], "off": []}
    for r in range(rounds):
        for flag in (("1", "0") if r % 2 == 0 else ("0", "1")):
            env = dict(os.environ, ATTNLAB_KEEP_FREED_MEMORY="1" if flag == "1" else "0")
            out = subprocess.run([sys.executable, "-c", code, flag, str(torch.get_num_threads())],
                                 capture_output=True, text=True, env=env, check=True)
            times["on" if flag == "1" else "off"].append(float(out.stdout.strip().splitlines()[-1]))
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {"path": "keep_freed_memory", "model": "resnet20", "mode": "eager fp32", "on_ms": 1e3 * on,
            "off_ms": 1e3 * off, "gain": off / on - 1, "on_runs_ms": [1e3 * t for t in times["on"]],
            "off_runs_ms": [1e3 * t for t in times["off"]]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time the paths under torch.compile")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or list(HACKS) + ["keep_freed_memory"]
    rows = []
    for name in names:
        modes = [False] + ([True] if args.compile and name != "keep_freed_memory" else [])
        for compiled in modes:
            if name == "keep_freed_memory":
                row = keep_freed_memory_ab(args.rounds, args.steps, args.batch, args.size)
            else:
                row = measure(name, args.rounds, args.steps, args.batch, args.size, compiled)
            rows.append(row)
            print(f"{row['path']:24s} {row['model']:16s} {row['mode']:14s} on {row['on_ms']:7.1f} ms  "
                  f"off {row['off_ms']:7.1f} ms  gain {100 * row['gain']:+5.1f}%", flush=True)
    meta = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
            "batch": args.batch, "size": args.size, "rounds": args.rounds, "steps": args.steps,
            "load_avg": os.getloadavg()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
