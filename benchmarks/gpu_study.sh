#!/usr/bin/env bash
# The two real-data studies of docs/findings.md on one GPU: the full `fashion-mnist` preset
# (ResNet-20 x 8 variants x 5 seeds x 15 epochs) and `stn-rts` (CNN, ST-CNN and the width-matched
# CNN x 5 seeds x 10 epochs), JOBS runs sharing the device at once (`compare --jobs`). Meant for
# one H200 within 9 minutes; not yet run on one (no GPU was lent when it was written): the first
# run's log says how long each study took. Run from the repository root:
#     DATA_DIR=/path/to/fashion-mnist-idx-files JOBS=8 bash benchmarks/gpu_study.sh
# Run it again with the same OUT to resume a study cut short (a timeout, a lost machine): finished
# runs are kept, cut runs continue from their checkpoints. The studies' small files are kept under
# docs/studies/<preset>/ (tools/keep_study.py) and packed into $OUT/studies.tgz to bring home.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import attnlab" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/gpu-studies}
JOBS=${JOBS:-8}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"
for preset in ${PRESETS:-fashion-mnist stn-rts}; do
  start=$(date +%s)
  dir=$(ls -d "$OUT/$preset"-2* 2>/dev/null | tail -n 1 || true)
  if [ -n "$dir" ]; then
    python3 -m attnlab compare --resume "$dir" --jobs "$JOBS" --data-dir "$DATA_DIR" || true
  else
    python3 -m attnlab compare --preset "$preset" --out "$OUT" --jobs "$JOBS" --data-dir "$DATA_DIR" || true
  fi
  dir=$(ls -d "$OUT/$preset"-2* | tail -n 1)
  echo "$preset: $(( $(date +%s) - start )) s in this session -> $dir"
  python3 tools/keep_study.py "$dir" "docs/studies/$preset"
done
tar czf "$OUT/studies.tgz" docs/studies
