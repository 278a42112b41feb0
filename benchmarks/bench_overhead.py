"""Attention overhead on ResNet-20 as a function of batch size and resolution.

For every (batch size, resolution) of the grid, attnlab's ResNet-20 without attention, with each
attention module, and with timm's SE / ECA / CBAM / GC modules swapped into the same network
(`attnlab.measure.reference`) are timed interleaved (`attnlab.measure.bench.run_bench`); the
overhead is step time with the module / without - 1 (min / median / max over repeats), for the
training step and for inference at that batch size.

    python benchmarks/bench_overhead.py --batch-sizes 32 128 --resolutions 32 64
    python benchmarks/bench_overhead.py --quick        # tiny: checks the script only

Writes overhead_<UTC time>.md / .csv under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import shlex
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

from attnlab.measure import bench, reference

COLUMNS = ("model", "memory_format", "batch", "image_size", "attention", "implementation", "label",
           "overhead_train_min", "overhead_train_median", "overhead_train_max", "overhead_train_best",
           "overhead_infer_large_min", "overhead_infer_large_median", "overhead_infer_large_max",
           "overhead_infer_large_best", "train_img_s", "infer_large_img_s", "train_frac_matmul",
           "train_frac_matmul_best", "matmul_gflop_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--attentions", nargs="+", default=["se", "eca", "cbam", "gc"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    p.add_argument("--resolutions", nargs="+", type=int, default=[32, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--memory-format", default="channels_last", choices=sorted(bench.MEMORY_FORMATS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-reference", action="store_true", help="skip timm's modules")
    p.add_argument("--min-sample-s", type=float, default=0.5)
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--tag", default=None)
    p.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch_sizes, args.resolutions, args.repeats, args.min_sample_s = [2], [8, 16], 1, 0.0
    load_before = os.getloadavg()[0]
    table = []
    for batch in args.batch_sizes:
        for res in args.resolutions:
            print(f"[bench_overhead] batch {batch} at {res}x{res} ...", file=sys.stderr, flush=True)
            rows = bench.run_bench(
                models=[args.model], attentions=[None, *args.attentions], batch_sizes=(batch,),
                image_size=res, repeats=args.repeats, reference=not args.no_reference,
                memory_formats=(args.memory_format,),
                modes=("train", "infer_large"), measure_memory=False, min_sample_s=args.min_sample_s,
                matmul_size=256 if args.quick else 2048, warmup=1 if args.quick else 2)
            for r in rows:
                table.append({k: r.get(k) for k in COLUMNS} | {"batch": batch, "image_size": res})
    info = bench.machine_info()
    if not args.no_reference:
        info.update(reference.versions())
    info["load_average_1m_at_start"] = round(load_before, 2)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + (argv or sys.argv[1:]))
    stem = args.tag or "overhead_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, stem + ".csv"), "w", newline="") as fh:
        fh.write(f"# command: {command}\n# machine: " + "; ".join(f"{k}={v}" for k, v in info.items()) + "\n")
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(table)
    md = markdown(table, info, command, args.memory_format)
    with open(os.path.join(args.out_dir, stem + ".md"), "w") as fh:
        fh.write(md)
    print(md)
    return table


def _pct(row, key):
    vals = [row.get(f"{key}_{s}") for s in ("min", "median", "max")]
    if vals[1] is None:
        return ""
    return f"{vals[1]:+.1%} [{vals[0]:+.1%}, {vals[2]:+.1%}] best {row[key + '_best']:+.1%}"


def markdown(table, info, command, memory_format) -> str:
    """One line per (batch, resolution, module): attnlab's overhead next to timm's module."""
    lines = [f"Command: `{command}`", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
             f"Overhead = step time with the module / without - 1, median [min, max] over repeats, and "
             f"the ratio of the fastest repeats (best); "
             f"{memory_format}, fp32. timm: timm's module swapped into attnlab's network.", "",
             "| batch | image | module | attnlab train | timm train | attnlab inference | timm inference |"
             " plain train img/s | plain train / matmul |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["batch"], r["image_size"]) for r in table})
    for batch, res in keys:
        group = [r for r in table if (r["batch"], r["image_size"]) == (batch, res)]
        plain = next((r for r in group if r["attention"] == "none" and r["implementation"] == "attnlab"), {})
        for att in dict.fromkeys(r["attention"] for r in group if r["attention"] != "none"):
            ours = next((r for r in group if r["attention"] == att and r["implementation"] == "attnlab"), {})
            theirs = next((r for r in group if r["attention"] == att and r["implementation"] != "attnlab"), {})
            frac = plain.get("train_frac_matmul")
            lines.append(f"| {batch} | {res}x{res} | {att} | {_pct(ours, 'overhead_train')} | "
                         f"{_pct(theirs, 'overhead_train')} | {_pct(ours, 'overhead_infer_large')} | "
                         f"{_pct(theirs, 'overhead_infer_large')} | {plain.get('train_img_s') or 0:.0f} | "
                         f"{'' if frac is None else f'{frac:.0%}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
