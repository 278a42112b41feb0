"""Does bf16 autocast train as well as float32? Paired runs over seeds, same recipe, same data.

For each data set and seed this trains the same model twice with the Trainer, once with
`precision="fp32"` and once with `precision="bf16"` (bf16 autocast; the attention math stays
float32 inside the modules), and reports the paired difference of test accuracy (bf16 - fp32)
with its 95% t interval over the seeds (attnlab.measure.stats.paired_difference). The answer is
about arithmetic, not speed: on a CPU without bf16 units the bf16 runs are emulated and slow,
but they round exactly as on a CPU or GPU that has them.

    python benchmarks/bf16_parity.py [--seeds 0 1 2 3 4] [--json F] [--markdown F]

Data sets: the embedded digits (the main job's model and recipe, 16x16) and, when installed,
Fashion-MNIST (a training subset of `--fmnist-train` images, the full test set, a few epochs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace

import torch

from attnlab.data import load_dataset
from attnlab.data.datasets import DatasetError
from attnlab.measure.stats import paired_difference
from attnlab.train import Trainer
from attnlab.train.config import TrainConfig

RECIPE = dict(model="resnet_cifar", model_kwargs={"depth": 8, "width": 16}, attention="se",
              attention_kwargs={"reduction": 4}, batch_size=64, lr=0.05, weight_decay=5e-4, warmup_epochs=1,
              threads=2, compile=False)


def subset(data, n: int):
    """The first `n` training images of an in-memory data set (its order is already shuffled per class)."""
    if n >= data.num_train:
        return data
    generator = torch.Generator().manual_seed(0)
    keep = torch.randperm(data.num_train, generator=generator)[:n]
    return replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])


def run(dataset: str, data, seeds, epochs: int, image_size=None) -> dict:
    accs = {"fp32": [], "bf16": []}
    seconds = {"fp32": 0.0, "bf16": 0.0}
    for seed in seeds:
        for precision in ("fp32", "bf16"):
            config = TrainConfig(**RECIPE, dataset=dataset, image_size=image_size, epochs=epochs, seed=seed,
                                 precision=precision)
            start = time.perf_counter()
            result = Trainer(config, None, progress=False, data=data).fit()
            seconds[precision] += time.perf_counter() - start
            accs[precision].append(result["test_acc"])
            print(f"{dataset} seed {seed} {precision}: {100 * result['test_acc']:.2f}%", flush=True)
    paired = paired_difference(accs["bf16"], accs["fp32"])
    return {"dataset": dataset, "train_images": data.num_train, "test_images": len(data.test_y), "epochs": epochs,
            "seeds": list(seeds), "acc_fp32": accs["fp32"], "acc_bf16": accs["bf16"], "diff_mean": paired["mean_diff"],
            "diff_ci": [paired["ci_low"], paired["ci_high"]], "p_value": paired["p_value"], "seconds": seconds}


def markdown(rows, meta) -> str:
    lines = ["## bf16 autocast vs float32: accuracy parity (paired over seeds)", "",
             f"SE-ResNet-8 (width 16, SE reduction 4), the main job's recipe (SGD, lr 0.05, batch 64, cosine), "
             f"trained once in fp32 and once under bf16 autocast per seed. Difference = bf16 - fp32 test accuracy, "
             f"95% t interval over the seeds.", "",
             "| data | train / test images | epochs | seeds | fp32 mean | bf16 mean | bf16 - fp32 (points) | 95% CI | p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mean = lambda v: 100 * sum(v) / len(v)   # noqa: E731
        lines.append(f"| {r['dataset']} | {r['train_images']:,} / {r['test_images']:,} | {r['epochs']} | {len(r['seeds'])} "
                     f"| {mean(r['acc_fp32']):.2f}% | {mean(r['acc_bf16']):.2f}% | {100 * r['diff_mean']:+.2f} "
                     f"| [{100 * r['diff_ci'][0]:+.2f}, {100 * r['diff_ci'][1]:+.2f}] | {r['p_value']:.2f} |")
    lines += ["", f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; bf16 here is "
              f"{'native' if meta['native_bf16'] else 'emulated (same rounding, slower)'}"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--digits-epochs", type=int, default=15)
    ap.add_argument("--fmnist-epochs", type=int, default=3)
    ap.add_argument("--fmnist-train", type=int, default=12000)
    ap.add_argument("--fmnist-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    from attnlab.train.device import describe_machine
    from attnlab.train.precision import cpu_bf16_flags

    rows = [run("digits", load_dataset("digits", image_size=16), args.seeds, args.digits_epochs, image_size=16)]
    try:
        fmnist = subset(load_dataset("fashion-mnist"), args.fmnist_train)
    except DatasetError as err:
        print(f"Fashion-MNIST skipped: {err}")
    else:
        rows.append(run("fashion-mnist", fmnist, args.fmnist_seeds, args.fmnist_epochs))
    meta = {"command": "python benchmarks/bf16_parity.py " + " ".join(os.sys.argv[1:]),
            "machine": describe_machine("cpu"), "native_bf16": bool(cpu_bf16_flags()),
            "python": platform.python_version()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    text = markdown(rows, meta)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
