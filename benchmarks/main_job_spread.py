"""How much the main job's seeds spread, and what the report could detect, for a recipe and a test size.

The measurements behind configs/quick.yaml's choice: each variant of the quick preset is trained
over several seeds with the preset's recipe (or overrides of it), on the RTS-distorted digits with
K distortion draws of each held-out digit, and the script prints per variant the mean and standard
deviation of test accuracy, and against the baseline the mean and standard deviation of the paired
differences and the minimum detectable effect of the paired t-test (80% power, alpha 0.05, as the
report computes it), once on the first draw of each test digit (360 images) and once on all K.
One thread per process; run it on an otherwise idle machine when the times matter.

    python benchmarks/main_job_spread.py --seeds 0 1 2 3 4 5 --test-copies 10
    python benchmarks/main_job_spread.py --variants none se --epochs 3 --batch-size 64 --lr 0.05

`--out FILE.json` records the per-run accuracies and seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from attnlab.data.datasets import DATASETS, load_dataset, register_dataset
from attnlab.measure.stats import paired_comparison
from attnlab.study.plan import plan_compare, train_config
from attnlab.train import Trainer


def digits_with_test_copies(copies: int) -> str:
    """The name of the RTS digits with `copies` draws of each test digit (registered on first use)."""
    name = f"digits-test{copies}"
    if name not in DATASETS:
        register_dataset(dataclasses.replace(DATASETS["digits"], name=name, variant_aliases=(),
                                             distortion_test_copies=copies))
    return f"{name}-rts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=None, help="variant names of the quick preset (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--test-copies", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=None, help="the RTS canvas (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--stn-lr-scale", type=float, default=None,
                        help="the spatial transformer's localiser learning rate over the backbone's")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    plan = plan_compare("quick")
    dataset = digits_with_test_copies(args.test_copies)
    size = args.image_size or plan.image_size
    data = load_dataset(dataset, image_size=size)
    held_out = len(data.test_y) // args.test_copies
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                             ("stn_lr_scale", args.stn_lr_scale))
                 if v is not None}
    names = args.variants or [v.name for v in plan.variants]
    right, seconds = {}, {}
    for variant in plan.variants:
        if variant.name not in names:
            continue
        for seed in args.seeds:
            config = dataclasses.replace(train_config(plan, variant, seed), dataset=dataset, image_size=size,
                                         threads=1, **overrides)
            start = time.perf_counter()
            trainer = Trainer(config, None, progress=False, data=data)
            trainer.fit()
            labels, predicted = trainer.test_predictions
            right[variant.name, seed] = (labels == predicted).numpy()
            seconds[variant.name, seed] = time.perf_counter() - start
            print(f"{variant.name} seed {seed}: {100 * right[variant.name, seed].mean():.2f}% "
                  f"in {seconds[variant.name, seed]:.1f} s", flush=True)

    baseline = plan.baseline
    for label, count in ((f"first draw of each test digit ({held_out} images)", held_out),
                         (f"all {args.test_copies} draws ({len(data.test_y)} images)", len(data.test_y))):
        print(f"\n{label}")
        accs = {name: {s: 100 * right[name, s][:count].mean() for s in args.seeds} for name in names}
        for name in names:
            values = np.array(list(accs[name].values()))
            line = f"  {name:14s} {values.mean():6.2f} +- {values.std(ddof=1):.2f}"
            if name != baseline and baseline in accs:
                c = paired_comparison(accs[name], accs[baseline], 0.95, 0.8)
                line += f"   diff {c['mean_diff']:+.2f}  sd {c['std_diff']:.2f}  MDE {c['mde']:.2f}"
            print(line)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"args": vars(args), "runs": [{"variant": n, "seed": s, "test_acc": float(r.mean()),
                                                     "first_draw_acc": float(r[:held_out].mean()),
                                                     "seconds": seconds[n, s]} for (n, s), r in right.items()]},
                      fh, indent=1)


if __name__ == "__main__":
    main()
