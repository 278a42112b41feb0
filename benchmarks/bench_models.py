"""attnlab's models next to timm / torchvision: speed, memory, parameters, FLOPs, matmul limit.

Runs `attnlab.measure.bench.run_bench` once per model (each model with its own batch sizes and
input size: CIFAR nets at 32 px, ImageNet nets at their native size), with the reference
builders of `attnlab.measure.reference`, and writes one Markdown table and one CSV under
benchmarks/results/ (with the machine, library versions, load and the command).

    python benchmarks/bench_models.py                          # the default set (long on a CPU)
    python benchmarks/bench_models.py --models resnet20 resnet50 --repeats 3 --imagenet-train-batch 8 \
        --imagenet-image-size 128
    python benchmarks/bench_models.py --quick                  # tiny sizes: checks the script only

Never pass/fail: the floors of issue 6 are printed next to the numbers for a reader to judge.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

import attnlab
from attnlab.measure import bench, reference

SMALL_INPUT = 64  # models whose native input is at most this (CIFAR, MNIST) use the "small" settings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="attnlab model names (default: bench.default_models())")
    p.add_argument("--attentions", nargs="+", default=None,
                   help="attention names, 'none' for none (default: none se eca cbam gc non_local for ResNets)")
    p.add_argument("--cifar-batch-sizes", nargs=2, type=int, default=(1, 128), metavar=("SMALL", "LARGE"),
                   help="inference batches of models with a native input <= 64 px (CIFAR, MNIST)")
    p.add_argument("--imagenet-batch-sizes", nargs=2, type=int, default=(1, 32), metavar=("SMALL", "LARGE"))
    p.add_argument("--cifar-train-batch", type=int, default=128)
    p.add_argument("--imagenet-train-batch", type=int, default=32)
    p.add_argument("--imagenet-image-size", type=int, default=None,
                   help="input size of the models with a larger native input (default: native)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-formats", nargs="+", default=["channels_last", "contiguous"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--min-sample-s", type=float, default=0.5)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--tag", default=None, help="file stem (default: models_<UTC time>)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: checks the script, not speed")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models or bench.default_models()
    attentions = None if args.attentions is None else [None if a == "none" else a for a in args.attentions]
    load_before = os.getloadavg()[0]
    rows, failed = [], []
    for name in models:
        small = max(attnlab.create_model(name).input_size[1:]) <= SMALL_INPUT
        sizes = args.cifar_batch_sizes if small else args.imagenet_batch_sizes
        train = args.cifar_train_batch if small else args.imagenet_train_batch
        kw = dict(batch_sizes=tuple(sizes), train_batch_size=train, image_size=None if small else args.imagenet_image_size,
                  repeats=args.repeats, min_sample_s=args.min_sample_s, matmul_size=args.matmul_size,
                  warmup=args.warmup)
        if args.quick:
            kw.update(batch_sizes=(1, 2), train_batch_size=2, image_size=None if small else 96,
                      repeats=1, min_sample_s=0.0, matmul_size=256, warmup=1)
        print(f"[bench_models] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += bench.run_bench(models=[name], attentions=attentions, device=args.device,
                                    reference=not args.no_reference,
                                    memory_formats=tuple(args.memory_formats),
                                    measure_memory=not args.no_memory, **kw)
        except (NotImplementedError, RuntimeError, ValueError, TypeError) as err:  # keep the other models
            failed.append(f"{name}: {type(err).__name__}: {err}".splitlines()[0][:200])
            print(f"[bench_models] {name} failed: {failed[-1]}", file=sys.stderr, flush=True)
    info = bench.machine_info(args.device)
    if not args.no_reference:
        info.update(reference.versions())
    info["load_average_1m_at_start"] = round(load_before, 2)
    if failed:
        info["not_measured"] = " | ".join(failed)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + (argv or sys.argv[1:]))
    stem = args.tag or "models_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    csv_path, md_path = bench.write_results(rows, args.out_dir, command=command, info=info, stem=stem)
    with open(md_path) as fh:
        print(fh.read())
    print(floors_summary(rows))
    print(f"wrote {csv_path} and {md_path}", file=sys.stderr)
    return rows


def floors_summary(rows) -> str:
    """The floors of issue 6 next to what this run measured (for a reader; nothing fails)."""
    lines = ["", "Floors of issue 6 (this run, medians over repeats):"]
    for r in rows:
        if r["implementation"] in ("timm", "torchvision") and r.get("ratio_train_median") is not None:
            modes = [m for m in ("train", "infer_bs1", "infer_large") if r.get(f"ratio_{m}_median") is not None]
            worst = min(modes, key=lambda m: r[f"ratio_{m}_median"])
            lines.append(f"- {r['memory_format']:>13} {r['label']:<32} worst median ratio attnlab/ref "
                         f"{r[f'ratio_{worst}_median']:.3f} ({worst}; best-of-repeats "
                         f"{r[f'ratio_{worst}_best']:.3f}) (floor 0.97) "
                         f"{'ok' if r[f'ratio_{worst}_median'] >= 0.97 else 'BELOW'}")
    limits = {"se": 0.08, "eca": 0.08, "cbam": 0.15}
    for r in rows:
        if r["model"] == "resnet20" and r["attention"] in limits and r.get("overhead_train_median") is not None:
            lim = limits[r["attention"]]
            lines.append(f"- {r['memory_format']:>13} {r['label']:<32} train overhead "
                         f"{r['overhead_train_median']:+.1%} (best-of-repeats {r['overhead_train_best']:+.1%}) "
                         f"(floor {lim:.0%}) "
                         f"{'ok' if r['overhead_train_median'] <= lim else 'ABOVE'}")
        if r["implementation"] == "timm-modules" and r.get("overhead_train_median") is not None:
            ours = next((o for o in rows if o["implementation"] == "attnlab" and o["model"] == r["model"]
                         and o["attention"] == r["attention"] and o["memory_format"] == r["memory_format"]), None)
            if ours is not None:
                lines.append(f"- {r['memory_format']:>13} {r['attention']} overhead attnlab "
                             f"{ours['overhead_train_median']:+.1%} vs timm's module {r['overhead_train_median']:+.1%} "
                             f"{'ok' if ours['overhead_train_median'] <= r['overhead_train_median'] else 'HIGHER'}")
        if r["model"] == "resnet20" and r["label"] == "attnlab:resnet20" and r.get("train_frac_matmul"):
            lines.append(f"- {r['memory_format']:>13} resnet20 training at {r['train_frac_matmul']:.0%} of "
                         f"fp32 matmul ({r['matmul_gflop_s']:.1f} GFLOP/s; best-of-repeats "
                         f"{r['train_frac_matmul_best']:.0%}) (floor 65%) "
                         f"{'ok' if r['train_frac_matmul'] >= 0.65 else 'BELOW'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
