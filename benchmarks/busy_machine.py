"""Training throughput on an idle machine and beside one CPU-bound process, before and after the
Trainer chose its thread count from the free cores.

Each measurement trains ResNet-20 (32x32 digits, batch 128, channels_last, fp32) with the
Trainer in a fresh process for a few epochs and takes the median images/s of the epochs after
the first. "fixed" is the old default (torch's thread count: every core); "auto" is
`threads=None` now (train.process.FreeCores: the cores the other processes leave free, chosen
before each epoch). "busy" runs one other process spinning on one core at the same time. The
four settings alternate over `--rounds`, so that all see the same machine.

    python benchmarks/busy_machine.py [--rounds 2] [--epochs 4] [--json F]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, torch
from attnlab.data import load_dataset
from attnlab.train import Trainer
from attnlab.train.config import TrainConfig
threads = None if sys.argv[1] == "auto" else int(sys.argv[1])
config = TrainConfig(model="resnet20", dataset="digits", image_size=32, epochs=int(sys.argv[2]), batch_size=128,
                     threads=threads, precision="fp32", compile=False, checkpoint_every=0)
out = sys.argv[3]
Trainer(config, out, progress=False, data=load_dataset("digits", image_size=32)).fit()
rows = [json.loads(line) for line in open(out + "/metrics.jsonl")]
print(json.dumps([[r["images_per_s"], r.get("threads")] for r in rows]))
"""


def spin(stop):
    while not stop.is_set():
        pass


def measure(threads: str, epochs: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, threads, str(epochs), tmp + "/run"], capture_output=True,
                             text=True, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    return statistics.median(r[0] for r in rows[1:]), [r[1] for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = [("idle", "fixed"), ("idle", "auto"), ("busy", "fixed"), ("busy", "auto")]
    results = {s: [] for s in settings}
    threads_seen = {s: [] for s in settings}
    for r in range(args.rounds):
        for load, mode in (settings if r % 2 == 0 else settings[::-1]):
            stop = multiprocessing.Event()
            hog = multiprocessing.Process(target=spin, args=(stop,)) if load == "busy" else None
            if hog:
                hog.start()
                time.sleep(1.0)
            try:
                ips, threads = measure(str(cores) if mode == "fixed" else "auto", args.epochs)
            finally:
                if hog:
                    stop.set()
                    hog.join()
            results[(load, mode)].append(ips)
            threads_seen[(load, mode)].append(threads)
            print(f"round {r}: {load:4s} {mode:5s} {ips:7.0f} img/s  threads per epoch {threads}", flush=True)
    summary = {f"{load}/{mode}": statistics.median(v) for (load, mode), v in results.items()}
    for mode in ("fixed", "auto"):
        ratio = summary[f"busy/{mode}"] / summary[f"idle/{mode}"]
        summary[f"busy_over_idle/{mode}"] = ratio
        print(f"{mode}: busy {summary[f'busy/{mode}']:.0f} / idle {summary[f'idle/{mode}']:.0f} img/s = {100 * ratio:.0f}%")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cores": cores, "summary": summary, "runs": {f"{k[0]}/{k[1]}": v for k, v in results.items()},
                       "threads": {f"{k[0]}/{k[1]}": v for k, v in threads_seen.items()}}, fh, indent=1)


if __name__ == "__main__":
    main()
