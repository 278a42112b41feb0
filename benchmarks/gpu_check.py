"""The checks that need a GPU, in one script of a few minutes (benchmarks/gpu_check.sh runs it).

1. attnlab's models against their timm / torchvision twins in bf16 autocast + channels_last +
   torch.compile (attnlab.measure.bench.run_bench: training and inference throughput ratios).
2. The Trainer's throughput on ResNet-20 (CIFAR size) and ResNet-50 (ImageNet-like 128 px
   synthetic images), with the precision `auto` picks and with fp32, compile on.
3. A short training run per precision (fp32, bf16, fp16) on the embedded digits: it must learn
   (test accuracy well above chance) and record the precision it used.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu     # writes gpu_check.md / .json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attnlab.data import load_dataset
from attnlab.data.splits import DatasetSplits
from attnlab.measure.bench import format_markdown, run_bench
from attnlab.train import Trainer
from attnlab.train.config import TrainConfig
from attnlab.train.device import describe_machine


def synthetic(n: int, side: int, classes: int) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DatasetSplits("synthetic", x, y, x[:256], y[:256], classes, 3, (side, side), (0.5,) * 3, (0.25,) * 3,
                         [str(i) for i in range(classes)])


def trainer_throughput(model: str, data: DatasetSplits, batch: int, precision: str, epochs: int = 2) -> dict:
    config = TrainConfig(model=model, dataset="digits", epochs=epochs, batch_size=batch, precision=precision,
                         compile=True, device="cuda", checkpoint_every=0)
    trainer = Trainer(config, None, progress=False, data=data)
    result = trainer.fit()
    last = trainer.last_row
    return {"model": model, "precision": result["precision"], "compile": result["compile"],
            "images_per_s_last_epoch": last["images_per_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/gpu")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; this script is for a machine with a GPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": describe_machine("cuda"), "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False)}
    t0 = time.time()
    rows = run_bench(models=["resnet50", "resnet20"], attentions=[None, "se", "cbam"], batch_sizes=(1, 128),
                     repeats=5, device="cuda", reference=True, memory_formats=("channels_last",),
                     precisions=("fp32", "bf16"), compile=True, measure_memory=False)
    (out / "twins.md").write_text(format_markdown(rows))
    report["twins_seconds"] = time.time() - t0
    report["throughput"] = []
    for model, side, batch in (("resnet20", 32, 256), ("resnet50", 128, 128)):
        data = synthetic(batch * 20, side, 10)
        for precision in ("fp32", "auto"):
            t = time.time()
            row = trainer_throughput(model, data, batch, precision)
            row["seconds"] = time.time() - t
            report["throughput"].append(row)
            print(row, flush=True)
    report["precision_runs"] = []
    digits = load_dataset("digits", image_size=16)
    for precision in ("fp32", "bf16", "fp16"):
        config = TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 16}, attention="se",
                             attention_kwargs={"reduction": 4}, dataset="digits", image_size=16, epochs=10,
                             batch_size=64, lr=0.05, precision=precision, device="cuda", compile=False)
        result = Trainer(config, None, progress=False, data=digits).fit()
        ok = result["precision"] == precision and result["test_acc"] > 0.8
        report["precision_runs"].append({"precision": precision, "test_acc": result["test_acc"], "ok": ok})
        print(precision, result["test_acc"], "ok" if ok else "FAILED", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
