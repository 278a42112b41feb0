"""Training throughput of attnlab's Trainer against an idiomatic PyTorch loop (issue 4).

    python benchmarks/trainer_throughput.py [--steps 8] [--batch-size 128] [--json out.json]

Workload: ResNet-20 (He et al. 2016, CIFAR variant), 32x32 RGB inputs, batch 128, SGD with
momentum, CIFAR-like synthetic uint8 images (random pixels and labels: the cost of a step does
not depend on the pixel values), the CIFAR augmentation (4-pixel pad + random crop + flip +
normalise) in both loops.

* attnlab: `Trainer.fit` for two epochs of `--steps` steps; the second epoch's images/s from
  metrics.jsonl (the first warms up). Run with channels_last on and off.
* idiomatic: a `Dataset` whose `__getitem__` transforms one image (to float, pad, crop, flip,
  normalise: what torchvision's transforms do per sample), a shuffling `DataLoader`, and the
  textbook loop (`zero_grad`, forward, `backward`, `step`); best of num_workers 0 and 2.

Each loop runs in a fresh process (spawned), so that none inherits another's state: with
ATTNLAB_KEEP_FREED_MEMORY=1 the Trainer tells malloc to keep freed memory
(`attnlab.train.process.keep_freed_memory`, a setting that lasts for the process), which a plain
script does not do.

Also measured in the same run: the fp32 matrix-multiply throughput (best of several 2048^3
products) and the FLOPs of one training step (torch.utils.flop_counter, forward + backward),
so that the fraction of the matmul peak the Trainer reaches is reported. Nothing is asserted:
this prints a table (and optionally writes JSON); timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import attnlab
from attnlab.data.datasets import DatasetSplits, channel_stats
from attnlab.measure.bench import matmul_sample
from attnlab.train import Trainer, TrainConfig
from _sections import RESULTS, replace_section


def cifar_like(n: int, seed: int = 0) -> DatasetSplits:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    test_x, test_y = x[:128].clone(), y[:128].clone()
    mean, std = channel_stats(x)
    return DatasetSplits("cifar-like", x, y, test_x, test_y, 10, 3, (32, 32), mean, std,
                         [str(i) for i in range(10)], {"crop_padding": 4, "flip": True})


def trainer_images_per_s(data: DatasetSplits, batch_size: int, channels_last: bool) -> float:
    config = TrainConfig(model="resnet20", dataset="synthetic", epochs=2, batch_size=batch_size, lr=0.05,
                         schedule="constant", channels_last=channels_last, checkpoint_every=0,
                         augment={"crop_padding": 4, "flip": True})
    torch.manual_seed(0)
    model = attnlab.create_model("resnet20", num_classes=10, in_chans=3)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False, data=data, model=model)
        trainer.fit()
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_s"]


class PerSampleCifar(torch.utils.data.Dataset):
    """The idiomatic pipeline: one image at a time through the transforms."""

    def __init__(self, x, y, mean, std):
        self.x, self.y = x, y
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float() / 255.0                      # ToTensor
        img = F.pad(img, (4, 4, 4, 4))                        # RandomCrop(32, padding=4)
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img[:, dy:dy + 32, dx:dx + 32]
        if torch.rand(()) < 0.5:                              # RandomHorizontalFlip
            img = img.flip(2)
        return (img - self.mean) / self.std, self.y[i]        # Normalize


def idiomatic_images_per_s(data: DatasetSplits, batch_size: int, steps: int, workers: int) -> float:
    torch.manual_seed(0)
    model = attnlab.create_model("resnet20", num_classes=10, in_chans=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(PerSampleCifar(data.train_x, data.train_y, data.mean, data.std),
                                         batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
    model.train()
    timed_images, start = 0, None
    for epoch in range(2):                                     # the first epoch warms up, as for the Trainer
        if epoch == 1:
            start = time.perf_counter()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            if epoch == 1:
                timed_images += len(yb)
    return timed_images / (time.perf_counter() - start)


def _call_with_threads(threads: int, fn, *args):
    torch.set_num_threads(threads)
    return fn(*args)


def in_fresh_process(fn, threads: int, *args):
    """fn(*args) in a new interpreter: each loop starts from the same process state (the Trainer
    may change malloc's settings for its process, `keep_freed_memory`; the idiomatic loop must not
    inherit them)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_call_with_threads, threads, fn, *args).result()


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best of `repeats` timed fp32 products (attnlab.measure.bench.matmul_sample), in GFLOP/s."""
    best = min(matmul_sample(size, torch.device("cpu")) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def step_flops(batch_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = attnlab.create_model("resnet20", num_classes=10, in_chans=3)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop (one epoch)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, the core count)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--write-results", action="store_true",
                        help="replace this benchmark's section of benchmarks/RESULTS.md with the results")
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="only rebuild the RESULTS.md section from earlier --json outputs (one row each)")
    args = parser.parse_args(argv)
    if args.render:
        runs = [json.loads(Path(p).read_text()) for p in args.render]
        write_section(runs, [run.get("command", "python benchmarks/trainer_throughput.py") for run in runs])
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    data = cifar_like(args.steps * args.batch_size)
    load_before = os.getloadavg()[0]
    peak = matmul_gflops()
    flops = step_flops(args.batch_size)
    results = {"command": "python benchmarks/trainer_throughput.py " + " ".join(a for a in (argv or [])
                                                                           if a != "--write-results"),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
               "load_average_1min_before": load_before, "matmul_gflops": peak, "step_gflop": flops / 1e9}
    threads = torch.get_num_threads()
    results["trainer_channels_last"] = in_fresh_process(trainer_images_per_s, threads, data, args.batch_size, True)
    results["trainer_contiguous"] = in_fresh_process(trainer_images_per_s, threads, data, args.batch_size, False)
    results["idiomatic_workers0"] = in_fresh_process(idiomatic_images_per_s, threads, data, args.batch_size, args.steps, 0)
    results["idiomatic_workers2"] = in_fresh_process(idiomatic_images_per_s, threads, data, args.batch_size, args.steps, 2)
    results["load_average_1min_after"] = os.getloadavg()[0]
    trainer = max(results["trainer_channels_last"], results["trainer_contiguous"])
    baseline = max(results["idiomatic_workers0"], results["idiomatic_workers2"])
    results["speedup_vs_idiomatic"] = trainer / baseline
    achieved = trainer / args.batch_size * flops / 1e9
    results["trainer_gflops"] = achieved
    results["fraction_of_matmul_peak"] = achieved / peak
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.write_results:
        write_section([results], [results["command"]])
    return results


def render_section(runs: list[dict], commands: list[str]) -> str:
    """The Markdown section of RESULTS.md for one or more runs (e.g. 2 threads and 1 thread)."""
    lines = ["## Trainer throughput vs an idiomatic DataLoader loop (ResNet-20, 32x32, batch 128, CPU)", "",
             "Training images/s in the second epoch (the first warms up). attnlab: `Trainer.fit` (in-memory uint8 "
             "batches, batched crop + flip + normalise). Idiomatic: per-sample transforms in a `Dataset`, a "
             "shuffling `DataLoader` (best of 0 and 2 workers), the textbook step. Fraction of peak = the "
             "Trainer's FLOP rate (torch.utils.flop_counter FLOPs of one forward + backward x steps/s) over the "
             "fp32 2048^3 matmul rate measured in the same run. Each loop runs in its own fresh process; the "
             "load average before and after each run is shown (2 cores).", "",
             "| threads | load avg (before/after) | matmul GFLOP/s | step GFLOP | Trainer channels_last img/s | "
             "Trainer contiguous img/s | idiomatic 0 workers img/s | idiomatic 2 workers img/s | speed-up | "
             "fraction of matmul peak |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['threads']} | {r['load_average_1min_before']:.1f} / {r['load_average_1min_after']:.1f} | "
                     f"{r['matmul_gflops']:.1f} | {r['step_gflop']:.2f} | {r['trainer_channels_last']:.0f} | "
                     f"{r['trainer_contiguous']:.0f} | {r['idiomatic_workers0']:.0f} | {r['idiomatic_workers2']:.0f} | "
                     f"{r['speedup_vs_idiomatic']:.2f}x | {r['fraction_of_matmul_peak']:.0%} |")
    lines += ["", "Issue 4 targets (speed-up >= 1.2x, fraction of the matmul rate >= 60%), the range over the runs "
              "of each thread count:"]
    for threads in sorted({r["threads"] for r in runs}, reverse=True):
        rs = [r for r in runs if r["threads"] == threads]
        speed = sorted(r["speedup_vs_idiomatic"] for r in rs)
        frac = sorted(r["fraction_of_matmul_peak"] for r in rs)
        lines.append(f"- {threads} thread(s): speed-up {speed[0]:.2f}x to {speed[-1]:.2f}x "
                     f"({'met' if speed[0] >= 1.2 else 'met in some runs' if speed[-1] >= 1.2 else 'NOT met'}); "
                     f"{frac[0]:.0%} to {frac[-1]:.0%} of the matmul rate "
                     f"({'met' if frac[0] >= 0.6 else 'NOT met'}).")
    lines += ["", "benchmarks/profile_step.py shows why the matmul fraction stays near 50%: batch norm and "
              "element-wise ops take ~30% of an eager fp32 step and convolution backward runs below matmul speed.",
              "", "Commands: " + "; ".join(f"`{c}`" for c in commands),
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"Python {platform.python_version()}"]
    return "\n".join(lines)


def write_section(runs: list[dict], commands: list[str], path: Path = RESULTS) -> None:
    replace_section("trainer_throughput", render_section(runs, [c.strip() for c in commands]), path)


if __name__ == "__main__":
    main(sys.argv[1:])
