#!/usr/bin/env bash
# The two real-data studies of docs/findings.md on one GPU, side by side: the full `fashion-mnist`
# preset (ResNet-20 x 8 variants x 5 seeds x 15 epochs) and `stn-rts` (CNN, ST-CNN and the
# width-matched CNN x 5 seeds x 10 epochs), each with several runs sharing the device at once
# (`compare --jobs`). Measured on one H200 with MPS (16 cores, torch 2.11, first run, 2026-11-29):
# stn-rts finished whole (training, costs, explanations, report) in 312 s with 5 jobs; beside it
# fashion-mnist trained 27 of its 40 runs in 500 s with 10 jobs (a run took 83-250 s, the first
# wave longer while it compiled), GPU utilisation 86% on average. So the whole fashion study needs
# about 12-13 minutes there: more than one call of a 10-minute limit; run it twice with the same
# WORK (the second resumes). Run from the repository root:
#     bash benchmarks/gpu_study.sh
# Settings (environment):
#   WORK      where the study folders go (default runs/gpu-studies); run the script again with the
#             same WORK to resume studies cut short: finished runs are kept, cut runs continue
#             from their checkpoints (`compare --resume`)
#   PACK      where the files to bring home go (default $WORK/pack): the log, GPU utilisation and
#             the study folders as a tar split into 15 MB parts (small files, plus the checkpoints
#             that later work needs: the first seed's runs, which the explanations read, and the
#             runs cut mid-way; other finished runs keep only their small files, and a resume
#             checks those from their config.yaml)
#   DEADLINE  seconds after the start at which the studies are stopped (SIGTERM: each run in
#             flight writes a checkpoint) so that packing ends inside a caller's time limit (default 3000)
#   JOBS_FASHION, JOBS_STN  runs at once per study (default 10 and 5: 15 processes for 16 cores)
#   DATA_DIR  folder of the Fashion-MNIST IDX files (default: .gpu/data if present, else Debian's)
#   PRESETS   the studies (default "fashion-mnist stn-rts"); NEW_ARGS: extra arguments for a new
#             study only (a dry run on a CPU: PRESETS=quick NEW_ARGS="--epochs 1 --seeds 0 1")
#   MPS=1     start CUDA's multi-process service so that the runs' kernels overlap on the GPU; it
#             is probed first and left off if a CUDA program cannot start under it
# Wheels of missing packages (captum) are installed from .gpu/whl when that folder exists.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
WORK=${WORK:-runs/gpu-studies}
PACK=${PACK:-$WORK/pack}
DEADLINE=${DEADLINE:-3000}
PRESETS=${PRESETS:-fashion-mnist stn-rts}
mkdir -p "$WORK" "$PACK"
log="$PACK/gpu_study.log"
say() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$log"; }

if [ -d .gpu/whl ] && ! python3 -c "import captum" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import attnlab" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${DATA_DIR:-}" ]; then
  if [ -d .gpu/data ]; then DATA_DIR=$PWD/.gpu/data; else DATA_DIR=/usr/share/datasets/fashion-mnist; fi
fi
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}   # many runs compile at once: no pool each
python3 - <<'EOF' 2>&1 | tee -a "$log"
import torch, attnlab
from attnlab.train.device import describe_machine
print(describe_machine())
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

if [ "${MPS:-0}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d && timeout 90 python3 -c "import torch; print(float(torch.ones(4, device='cuda').sum()))" >/dev/null 2>&1; then
    say "MPS on"
  else
    echo quit | nvidia-cuda-mps-control >/dev/null 2>&1
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    say "MPS could not start a CUDA program: left off"
  fi
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$PACK/gpu_util.csv" 2>/dev/null &
  smi=$!
fi

# Start (or resume) each study in its own process group, so that the deadline stops its workers too.
declare -A pgid
for preset in $PRESETS; do
  case $preset in fashion-mnist) jobs=${JOBS_FASHION:-10} ;; stn-rts) jobs=${JOBS_STN:-5} ;; *) jobs=${JOBS:-2} ;; esac
  dir=$(ls -d "$WORK/$preset"-2* 2>/dev/null | tail -n 1)
  if [ -n "$dir" ]; then
    args=(--resume "$dir")
  else
    args=(--preset "$preset" --out "$WORK" ${NEW_ARGS:-})
  fi
  data=(--data-dir "$DATA_DIR")
  [ "$preset" = quick ] && data=()   # the embedded digits read no files (a --data-dir is refused)
  setsid python3 -m attnlab compare "${args[@]}" --jobs "$jobs" "${data[@]}" > "$PACK/$preset.log" 2>&1 &
  pgid[$preset]=$!
  say "$preset: compare ${args[*]} --jobs $jobs (process group ${pgid[$preset]})"
done

running() { for p in "${pgid[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
while running && [ $(( $(date +%s) - start )) -lt "$DEADLINE" ]; do sleep 2; done
if running; then
  say "deadline: stopping the studies (each run in flight writes a checkpoint)"
  for p in "${pgid[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  for _ in $(seq 40); do
    alive=0; for p in "${pgid[@]}"; do pgrep -g "$p" >/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 1
  done
  for p in "${pgid[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
fi
for preset in $PRESETS; do
  wait "${pgid[$preset]}"; rc=$?
  say "$preset: exit $rc; $(grep -c 'test acc' "$PACK/$preset.log") runs trained in this session; last lines:"
  tail -n 4 "$PACK/$preset.log" | tee -a "$log"
done
[ -n "${smi:-}" ] && kill "$smi" 2>/dev/null
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control >/dev/null 2>&1

# Bring home, within what a caller can copy back (about 60 MB): every study folder's small files and
# logs in one tar, then the checkpoints later steps need (the first seed's runs, which the
# explanations read; then the runs cut mid-way, which a resume continues) as far as room is left.
python3 - "$WORK" "$PACK" <<'EOF2' 2>&1 | tee -a "$log"
import json, sys, tarfile
from pathlib import Path
work, pack = Path(sys.argv[1]), Path(sys.argv[2])
small, first, cut = [], [], []
for study in sorted(p for p in work.iterdir() if (p / "compare.json").is_file()):
    first_seed = json.loads((study / "compare.json").read_text())["seeds"][0]
    for f in sorted(study.rglob("*")):
        if not f.is_file() or f.name.startswith(".attnlab-"):
            continue
        rel = f.relative_to(study)
        if "checkpoints" not in rel.parts:
            small.append(f)
            continue
        run = study / Path(*rel.parts[:rel.parts.index("checkpoints")])
        if run.name == f"seed{first_seed}":
            first.append(f)
        elif not (run / "final.json").is_file():
            cut.append(f)
def newest(files):
    """Of each run's checkpoints only the newest (its .json and .safetensors), as (pair, bytes)."""
    runs = {}
    for f in files:
        runs.setdefault(f.parent, []).append(f)
    out = []
    for folder, found in runs.items():
        stem = max(f.stem for f in found)
        pair = [f for f in found if f.stem == stem]
        out.append((pair, sum(f.stat().st_size for f in pair)))
    return out
logs = [f for f in pack.iterdir() if f.suffix in (".log", ".csv") and f.name != "gpu_study.log"]
with tarfile.open(pack / "studies.tar.gz", "w:gz") as tar:
    for f in small:
        tar.add(f, arcname=str(f.relative_to(work)))
    for f in logs:
        tar.add(f, arcname="logs/" + f.name)
size = (pack / "studies.tar.gz").stat().st_size
room = min(30e6, 60e6 - size)
kept, used = [], 0
for pair, size_ in newest(first) + sorted(newest(cut), key=lambda p: p[1]):   # a checkpoint's two files go together
    if used + size_ > room:
        continue
    kept += pair
    used += size_
if kept:
    with tarfile.open(pack / "checkpoints.tar", "w") as tar:   # weights do not compress
        for f in kept:
            tar.add(f, arcname=str(f.relative_to(work)))
print(f"packed {len(small)} small files and {len(logs)} logs ({size / 1e6:.1f} MB), {len(kept)} checkpoint "
      f"files ({used / 1e6:.1f} MB; the newest of each first-seed and cut run, as far as room was left)")
for f in logs:
    f.unlink()
EOF2
for f in "$PACK"/studies.tar.gz "$PACK"/checkpoints.tar; do
  [ -f "$f" ] && split -b 15m -d "$f" "$f.part" && rm "$f"
done
say "done: $(ls "$PACK" | tr '\n' ' ')"
