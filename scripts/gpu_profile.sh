#!/usr/bin/env bash
# Hardware counters of the Triton backend's main kernels on a GPU machine whose runtime lets ncu
# read them (Firecracker: KINDS.md in the device tool's notes), 8192x8192 bf16: a copy of the
# input as an elementwise kernel (the yardstick: a plain copy_ is a memcpy, which ncu does not
# profile), quantize RN and RS with 1-D and 2-D (block_2d) scales, and quantize_rowcol RS with
# col_hadamard. Each op runs once untimed (Triton compiles it) and once profiled.
#
#     bash scripts/gpu_profile.sh "$OUT"     # from the repository root; about 2 minutes
#
# Writes $OUT/profile.ncu-rep (open it in Nsight Compute) and $OUT/profile.csv, and prints per
# kernel the duration, DRAM throughput, issue activity and the warp stall reasons, in cycles a
# warp issue. ncu leaves the clocks alone (--clock-control none: timings elsewhere in this project
# run at the card's own clocks) and flushes the caches before each replay pass.
set -eu
out=${1:?usage: gpu_profile.sh OUT}
mkdir -p "$out"
export PYTHONPATH=$PWD
ncu --clock-control none --nvtx --nvtx-include "profiled/" --print-nvtx-rename kernel \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    --section SchedulerStats --section WarpStateStats --section Occupancy --section LaunchStats \
    --section InstructionStats -f -o "$out/profile" python3 - <<'PY'
import torch

from nvfp4cli.format import Mode, per_tensor_scale_from_amax
from nvfp4cli.kernels import triton_backend as tb

gen = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(8192, 8192, generator=gen, device="cuda").to(torch.bfloat16)
copy = torch.empty_like(x)
pts = per_tensor_scale_from_amax(tb.amax(x))
row_amax, col_amax = tb.amax_rowcol(x, col_hadamard=True)
row_pts, col_pts = per_tensor_scale_from_amax(row_amax), per_tensor_scale_from_amax(col_amax)
ops = {"copy": lambda: torch.add(x, 0, out=copy)}
for mode in Mode:
    seed = 1234 if mode is Mode.RS else None
    for block_2d in (False, True):
        name = f"quantize {mode.value}" + (" block_2d" if block_2d else "")
        ops[name] = lambda mode=mode, seed=seed, block_2d=block_2d: tb.quantize(x, per_tensor_scale=pts, mode=mode, seed=seed, offset=0, block_2d=block_2d)
ops["rowcol rs col_hadamard"] = lambda: tb.quantize_rowcol(
    x, per_tensor_scale=row_pts, col_per_tensor_scale=col_pts, mode=Mode.RS, seed=1234, offset=0, col_hadamard=True
)
for name, op in ops.items():
    op()
    torch.cuda.synchronize()
    with torch.cuda.nvtx.range("profiled"), torch.cuda.nvtx.range(name):
        op()
    torch.cuda.synchronize()
PY
ncu --import "$out/profile.ncu-rep" --print-nvtx-rename kernel --print-units base --csv --page raw > "$out/profile.csv"
python3 - "$out/profile.csv" <<'PY'
import csv, re, sys

# raw metrics by pattern (ncu's names); stalls: cycles a warp spends in each state per issued instruction
SHOWN = [
    ("us", r"gpu__time_duration\.sum$", 1e-3), ("SM MHz", r"gpc__cycles_elapsed\.avg\.per_second$", 1e-6),
    ("DRAM %", r"gpu__dram_throughput\.avg\.pct_of_peak_sustained_elapsed$", 1),
    ("issue %", r"smsp__issue_active\.avg\.pct_of_peak_sustained_active$", 1),
    ("warps/scheduler", r"smsp__warps_active\.avg\.per_cycle_active$", 1), ("ready/cycle", r"smsp__warps_eligible\.avg\.per_cycle_active$", 1),
    ("regs", r"launch__registers_per_thread$", 1),
]
PIPES = r"sm__inst_executed_pipe_(alu|fma|fmaheavy|lsu|xu|adu|cbu|uniform)\.avg\.pct_of_peak_sustained_active$"
STALLS = r"smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$"
rows = list(csv.reader(open(sys.argv[1])))
header, records = rows[0], [row for row in rows[1:] if row and row[0].strip().isdigit()]  # after the units row

def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None

for record in records:
    values = dict(zip(header, record))
    print(f"== {values.get('Kernel Name', '?')}")
    line = []
    for label, pattern, factor in SHOWN:
        for column, value in values.items():
            if re.match(pattern, column) and number(value) is not None:
                line.append(f"{label} {number(value) * factor:.4g}")
    print("   " + ", ".join(line))
    pipes = {re.match(PIPES, c).group(1): number(v) for c, v in values.items() if re.match(PIPES, c) and number(v)}
    print("   pipes % of peak: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(pipes.items(), key=lambda kv: -kv[1])))
    stalls = {re.match(STALLS, c).group(1): number(v) for c, v in values.items() if re.match(STALLS, c) and number(v)}
    print("   stalls (cycles a warp, per issued instruction): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(stalls.items(), key=lambda kv: -kv[1]) if v >= 0.05))
PY
