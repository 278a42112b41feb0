"""Does every family compile in training without a graph break? One small model per family, in
train mode (parameters that want gradients), with a few attention mechanisms placed in it,
traced by torch._dynamo.explain (the tracing only; no kernels are generated).

    python benchmarks/compile_check.py [--json benchmarks/results/compile_check.json]

A row with breaks > 0 names the first reasons; the training loop itself is covered by
tests/train/test_compile.py (one graph, compiled once, for ResNet-8 with every attention).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch._dynamo as dynamo

import attnlab

# (model, input side, attentions placed in it): small members of every family
CASES = [
    ("resnet_cifar", 16, [None, "se", "cbam", "gc", "non_local"]),
    ("preact_resnet18_cifar", 16, [None, "eca"]),
    ("vgg11_bn_cifar", 32, [None, "se"]),
    ("densenet121_small", 32, [None, "cbam"]),
    ("googlenet_small", 32, [None, "se"]),
    ("inception_v3_small", 32, [None, "eca"]),
    ("nasnet_a_cifar", 32, [None, "se"]),
    ("shufflenet_v1_g3_small", 32, [None, "se"]),
    ("shufflenet_v2_x0_5_small", 32, [None, "cbam"]),
    ("xception_small", 32, [None, "se"]),
    ("attention56", 64, [None]),
    ("stn_cnn", 60, [None]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, side, attentions in CASES:
        for attention in attentions:
            try:
                model = attnlab.create_model(name, attention=attention, num_classes=10).train()
            except (ValueError, TypeError) as err:
                rows.append({"model": name, "attention": attention, "error": str(err)[:200]})
                continue
            x = torch.randn(2, model.in_chans, side, side)
            dynamo.reset()
            start = time.perf_counter()
            explained = dynamo.explain(model)(x)
            row = {"model": name, "attention": attention, "graphs": explained.graph_count,
                   "breaks": explained.graph_break_count,
                   "reasons": [str(b.reason)[:160] for b in explained.break_reasons[:3]],
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"{name:26s} {str(attention):10s} graphs {row['graphs']} breaks {row['breaks']} "
                  f"{row['reasons'][:1]}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
