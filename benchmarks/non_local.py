"""Non-local block: the SDPA path against the naive explicit HW x HW path, forward + backward on CPU.

    python benchmarks/non_local.py                 # the issue's sizes, writes the CSV and RESULTS.md
    python benchmarks/non_local.py --sizes 32 48   # a quick look, writes nothing unless --write

Configuration (issue 2): NonLocalBlock(64) in its default embedded-Gaussian mode, batch 4,
float32, one forward and one backward (loss = sum of the output), square maps 32..128.
Both paths run with `subsample=False`, so they do the same work (every position attends to
every position); they differ only in how the weighted sum is computed:

* sdpa:  `use_sdpa=True`, torch.nn.functional.scaled_dot_product_attention on contiguous
         (N, 1, HW, d) tensors (the fused kernel; the weight matrix is never formed);
* naive: `use_sdpa=False`, the block's explicit path: softmax(theta^T phi) as an (N, HW, HW)
         tensor, then its product with g (what the paper's Figure 2 draws).

How it is measured
* Each (size, path) runs in a fresh Python subprocess, so that one run's allocations cannot
  hide another's. Extra peak memory = peak RSS (getrusage ru_maxrss) after the first full-size
  forward + backward minus peak RSS before it (after building the module and the input and a
  warm-up at 8x8 that loads the kernels): the memory the computation itself needed at its peak.
* Time: the median of `--repeats` further forward + backward passes after that first pass, with
  torch.get_num_threads() threads: wall clock (what the speed-up is computed from) and, less
  disturbed by other jobs on a shared machine, the process's CPU time (all its threads).
* The naive path is skipped where its estimate, 3 (N, HW, HW) float32 tensors alive at once
  (weights, their gradient, the softmax's gradient), exceeds --naive-limit-gb (default 8).

The machine is shared with other jobs: times are noisy (the load average is printed with the
results); memory is not. The script never passes or fails: it reports whether the issue's
floors (at 96x96: SDPA extra peak < 150 MB, >= 3x faster than naive) were met.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHANNELS, BATCH = 64, 4
DEFAULT_SIZES = (32, 48, 64, 96, 128)
PATHS = ("sdpa", "naive")
SECTION_START, SECTION_END = "<!-- non_local:start -->", "<!-- non_local:end -->"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def worker(path: str, size: int, repeats: int) -> dict:
    """One configuration, in this (fresh) process: extra peak memory and median time."""
    import torch

    from attnlab.attention import NonLocalBlock

    torch.manual_seed(0)
    block = NonLocalBlock(CHANNELS, subsample=False, zero_init=False, use_sdpa=(path == "sdpa"))

    def step(x):
        block.zero_grad(set_to_none=True)
        block(x).sum().backward()

    step(torch.randn(BATCH, CHANNELS, 8, 8))            # warm-up: load kernels and thread pools
    x = torch.randn(BATCH, CHANNELS, size, size)
    before = peak_rss_mb()
    step(x)
    extra = peak_rss_mb() - before
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(x)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"size": size, "path": path, "extra_peak_mb": round(extra, 1),
            "time_ms": round(1000 * statistics.median(times), 1),
            "cpu_time_ms": round(1000 * statistics.median(cpu_times), 1), "repeats": repeats,
            "threads": torch.get_num_threads()}


def naive_estimate_gb(size: int) -> float:
    return 3 * BATCH * (size * size) ** 2 * 4 / 1e9


def run_one(path: str, size: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, __file__, "--worker", path, str(size), "--repeats", str(repeats)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {path} {size}x{size} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}; load average at start {load}")


def table(rows: list[dict]) -> str:
    by_key = {(r["size"], r["path"]): r for r in rows}
    lines = ["| map | HW | SDPA time (ms) | naive time (ms) | speed-up | CPU-time speed-up "
             "| SDPA extra peak (MB) | naive extra peak (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in rows}):
        fast, slow = by_key.get((size, "sdpa")), by_key.get((size, "naive"))
        skipped = slow is None or slow.get("skipped")
        speed = "-" if skipped else f"{slow['time_ms'] / fast['time_ms']:.1f}x"
        cpu_speed = "-" if skipped else f"{slow['cpu_time_ms'] / fast['cpu_time_ms']:.1f}x"
        slow_time = f"skipped (est. {naive_estimate_gb(size):.0f} GB)" if skipped else f"{slow['time_ms']:.0f}"
        slow_mem = "-" if skipped else f"{slow['extra_peak_mb']:.0f}"
        lines.append(f"| {size}x{size} | {size * size} | {fast['time_ms']:.0f} | {slow_time} | {speed} | {cpu_speed} | "
                     f"{fast['extra_peak_mb']:.0f} | {slow_mem} |")
    return "\n".join(lines)


def floors(rows: list[dict]) -> str:
    by_key = {(r["size"], r["path"]): r for r in rows}
    fast, slow = by_key.get((96, "sdpa")), by_key.get((96, "naive"))
    if fast is None or slow is None or slow.get("skipped"):
        return "Floors at 96x96: not measured (96 not in --sizes or naive skipped)."
    speed = slow["time_ms"] / fast["time_ms"]
    memory_ok = "met" if fast["extra_peak_mb"] < 150 else "NOT met"
    speed_ok = "met" if speed >= 3 else "NOT met"
    return (f"Floors at 96x96: SDPA extra peak {fast['extra_peak_mb']:.0f} MB < 150 MB: {memory_ok}; "
            f"speed-up {speed:.1f}x >= 3x: {speed_ok}.")


def write_outputs(rows: list[dict], text: str) -> None:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    fields = ["size", "path", "time_ms", "cpu_time_ms", "extra_peak_mb", "repeats", "threads", "skipped"]
    with open(results / "non_local.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**{"skipped": ""}, **row})
    section = f"{SECTION_START}\n{text}\n{SECTION_END}"
    results_md = HERE / "RESULTS.md"
    old = results_md.read_text() if results_md.exists() else "# Benchmark results\n\nRegenerated by the commands below; never typed in.\n"
    if SECTION_START in old and SECTION_END in old:
        head, rest = old.split(SECTION_START, 1)
        new = head + section + rest.split(SECTION_END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    results_md.write_text(new)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-limit-gb", type=float, default=8.0)
    parser.add_argument("--write", action="store_true", help="write the CSV and RESULTS.md (default with the default sizes)")
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats)))
        return
    where = machine()
    rows = []
    for size in args.sizes:
        for path in PATHS:
            if path == "naive" and naive_estimate_gb(size) > args.naive_limit_gb:
                rows.append({"size": size, "path": path, "skipped": f"estimated {naive_estimate_gb(size):.1f} GB"})
                continue
            rows.append(run_one(path, size, args.repeats))
            print(f"  {size}x{size} {path}: {rows[-1]['time_ms']} ms, +{rows[-1]['extra_peak_mb']} MB",
                  file=sys.stderr)
    text = "\n".join([
        "## Non-local block: SDPA vs naive explicit attention (CPU, forward + backward)",
        "",
        f"NonLocalBlock(C={CHANNELS}, embedded Gaussian, subsample=False for both paths), batch {BATCH}, float32; "
        f"time = wall-clock median of {args.repeats} runs after a first run (speed-up also from the "
        "process CPU time, less disturbed by other jobs); extra peak = growth of the process's peak RSS "
        "during the first full-size run, one fresh subprocess per row. The machine is shared, so times are "
        "noisy; memory is not.",
        "",
        table(rows),
        "",
        floors(rows),
        "",
        f"Command: `python benchmarks/non_local.py{'' if args.sizes == list(DEFAULT_SIZES) else ' --sizes ' + ' '.join(map(str, args.sizes))}`  ",
        f"Machine: {where}",
    ])
    print(text)
    if args.write or args.sizes == list(DEFAULT_SIZES):
        write_outputs(rows, text)


if __name__ == "__main__":
    main()
