#!/usr/bin/env bash
# Nsight Systems timeline of the spleen benchmark: CUDA kernels and copies, fastpipe's NVTX ranges
# (loader phases, cache fill, every transform) and OS runtime calls (waits, locks, file reads).
#
#   bash profiling/nsys_spleen.sh                      # fastpipe-gpu-cache row on spleen-small
#   ROWS=fastpipe-cache,monai-cache bash profiling/nsys_spleen.sh
#   TARGET=profile DATA=/data/Task09_Spleen bash profiling/nsys_spleen.sh   # `fastpipe profile` instead
#   GPU_PY=python3 bash profiling/nsys_spleen.sh      # another interpreter (PY= too)
#
# Writes $OUT/nsys_spleen.nsys-rep (open in the Nsight Systems GUI), $OUT/nsys_spleen.sqlite, and
# prints per-range totals and GPU idle gaps (profiling/nsys_report.py). See profiling/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# the interpreter as `make gpu-check` picks it: GPU_PY, else PY, else .venv/bin/python when present, else
# python3 (a GPU machine without `make install`: .venv/bin/python is not there)
if [[ -n "${GPU_PY:-}" ]]; then PY=$GPU_PY
elif [[ -n "${PY:-}" ]]; then :
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
OUT=${OUT:-profiling/out}
PRESET=${PRESET:-spleen-small}
DATA=${DATA:-}
ROWS=${ROWS:-fastpipe-gpu-cache}
TARGET=${TARGET:-bench}          # bench: benchmarks.spleen rows; profile: fastpipe profile
ITERS=${ITERS:-30}
NSYS=${NSYS:-nsys}

command -v "$NSYS" >/dev/null || { echo "nsys_spleen.sh: '$NSYS' not found (install Nsight Systems or set NSYS=)" >&2; exit 2; }
mkdir -p "$OUT"

if [[ "$TARGET" == profile ]]; then
    data=${DATA:-data/$PRESET}
    [[ -f "$data/dataset.json" ]] || "$PY" -m fastpipe synth --out "$data" --preset "$PRESET" --seed 0
    cmd=("$PY" -m fastpipe profile --data "$data" --iters "$ITERS" --model tiny-unet --nvtx --out "$OUT")
else
    cmd=("$PY" -m benchmarks.spleen --preset "$PRESET" --rows "$ROWS" --epochs 1 --step-epochs 1 --no-plot)
    [[ -n "$DATA" ]] && cmd+=(--data "$DATA")
fi

# FASTPIPE_NVTX=1 switches fastpipe's ranges on in every (sub)process; -t picks the traces.
FASTPIPE_NVTX=1 "$NSYS" profile -t cuda,nvtx,osrt --sample=none --cpuctxsw=none \
    --force-overwrite=true --export=sqlite -o "$OUT/nsys_spleen" "${cmd[@]}"

"$PY" profiling/nsys_report.py "$OUT/nsys_spleen.sqlite" --json "$OUT/nsys_spleen_report.json"
