#!/usr/bin/env bash
# The GPU checks of attnlab in one run (under 8 minutes on one GPU): the model twins against timm
# in bf16 + channels_last + compile, the Trainer's throughput on ResNet-20 and ResNet-50, and a
# short training run per precision. Run from the repository root on a machine with a GPU:
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import attnlab" 2>/dev/null || pip install -q -e . -c constraints.txt
timeout 480 python benchmarks/gpu_check.py --out "${OUT:-benchmarks/results/gpu}"
