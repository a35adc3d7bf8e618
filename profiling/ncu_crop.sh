#!/usr/bin/env bash
# Nsight Compute on fastpipe's batched crop kernel (kernels/crop_pos_neg.cu): achieved memory
# bandwidth, occupancy and stalls of a few launches cropping 8 patches of 96^3 from 2 volumes.
#
#   bash profiling/ncu_crop.sh                 # writes profiling/out/ncu_crop.ncu-rep, prints a summary
#   SET=full COUNT=1 bash profiling/ncu_crop.sh
#   GPU_PY=python3 bash profiling/ncu_crop.sh  # another interpreter (PY= too, as before)
#
# Needs a GPU and CuPy (pip install -e ".[gpu]"); the kernel is compiled at run time through CuPy,
# so the first launches (JIT) are skipped with --launch-skip. See profiling/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# the interpreter as `make gpu-check` picks it: GPU_PY, else PY, else .venv/bin/python when present, else python3
if [[ -n "${GPU_PY:-}" ]]; then PY=$GPU_PY
elif [[ -n "${PY:-}" ]]; then :
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
OUT=${OUT:-profiling/out}
NCU=${NCU:-ncu}
SET=${SET:-detailed}
SKIP=${SKIP:-2}
COUNT=${COUNT:-3}
KERNEL_REGEX=${KERNEL_REGEX:-"regex:^crop_pos_neg_"}   # crop_pos_neg_i32 (every key of a batch), crop_pos_neg_i64

command -v "$NCU" >/dev/null || { echo "ncu_crop.sh: '$NCU' not found (install Nsight Compute or set NCU=)" >&2; exit 2; }
mkdir -p "$OUT"

read -r -d '' DRIVER <<'PY' || true
import torch
from fastpipe.ops import crop_batch

assert torch.cuda.is_available(), "ncu_crop.sh needs a CUDA GPU"
dev = torch.device("cuda")
vols = [torch.rand(1, 240, 210, 250, device=dev) for _ in range(2)]   # spleen-sized cached volumes
size = (96, 96, 96)
n = 8                                                                   # 2 volumes x 4 crops
vol_index = torch.arange(n, device=dev) // 4
hi = torch.tensor([240 - 96, 210 - 96, 250 - 96], device=dev)
out = torch.empty(n, 1, *size, device=dev)
for i in range(10):
    starts = (torch.rand(n, 3, device=dev) * hi).long()
    crop_batch(vols, starts, vol_index, size, out=out, backend="cuda")
torch.cuda.synchronize()
print("crop bytes per launch:", out.numel() * out.element_size())
PY

"$NCU" --kernel-name "$KERNEL_REGEX" --launch-skip "$SKIP" --launch-count "$COUNT" --set "$SET" \
    --force-overwrite -o "$OUT/ncu_crop" "$PY" -c "$DRIVER"

"$NCU" --import "$OUT/ncu_crop.ncu-rep" --page details --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy
