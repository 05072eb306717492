#!/usr/bin/env bash
# Issue 20 goal 2, start-up only ("under 2 s"), in one short call on a GPU machine (about 1 minute):
# `nvfp4 --help`, `import torch`, the CUDA context, and `quantize --device cuda` of the tiny sample,
# a fresh interpreter each time, the first run with an empty Triton cache (it compiles), then warm.
# NVFP4_TIMING=1 makes quantize --json report its phases (nvfp4cli/commands/timing.py).
#
#     bash scripts/gpu_startup.sh "$OUT"      # from the repository root; logs under $OUT
#     bash scripts/gpu_startup.sh "$OUT" big  # and a 3.5 GB Llama-3-8B-shaped checkpoint x2 (+1 minute)
#
# The Triton cache check: the warm runs and two RS seeds must add no kernel to the cache (a value
# that changes per run or per tensor specialised into a kernel would compile it again).
set -u
out=${1:-/tmp/gpu_startup}
device=${NVFP4_DEVICE:-cuda}  # NVFP4_DEVICE=cpu: try the script on a machine without a GPU
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=/tmp/nvfp4_startup_triton_cache
rm -rf "$TRITON_CACHE_DIR" /tmp/nvfp4_startup_out
TIMEFORMAT="%R s wall"
step() { echo; echo "== $*"; }
kernels() { find "$TRITON_CACHE_DIR" -name '*.json' ! -name '__grp__*' 2>/dev/null | wc -l; }
quantize() {  # one timed run of $model; prints its phases (s), the time to the first kernel, the conversion
  time (NVFP4_TIMING=1 python3 -m nvfp4cli quantize "$model" -o /tmp/nvfp4_startup_out --force --device "$device" --json "$@" > "$out/quantize.json")
  python3 - "$out/quantize.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
phases = report["timing"]
first = sum(seconds for phase, seconds in phases.items() if phase not in ("run_s", "total_s"))
print(" ".join(f"{phase}={seconds:.3f}" for phase, seconds in phases.items()), f"| to the first kernel {first:.3f} s" if "first_kernel_s" in phases else "")
print(f"conversion {report['seconds']:.3f} s of {report['bytes_in'] / 1e9:.3f} GB in")
PY
  echo "Triton kernels in the cache: $(kernels)"
}

step "machine"
nvidia-smi -L 2>/dev/null
python3 -c 'import torch, triton, os; print("torch", torch.__version__, "triton", triton.__version__, "cores", os.cpu_count())'

step "nvfp4 --help x3, nvfp4 quantize --help x1 (no torch: tests/test_startup.py)"
for i in 1 2 3; do time python3 -m nvfp4cli --help > /dev/null; done
time python3 -m nvfp4cli quantize --help > /dev/null

step "import torch x3, then its import tree (largest 6 cumulative, 8 self), then torch + CUDA context + triton"
for i in 1 2 3; do time python3 -c "import torch"; done
python3 -X importtime -c "import torch" 2> "$out/importtime_torch.txt"
sort -t'|' -k2 -n "$out/importtime_torch.txt" | tail -6
echo "largest self times (us, module):"
awk -F'|' '/^import time: +[0-9]/ {split($1, a, ":"); print a[2] + 0, $3}' "$out/importtime_torch.txt" | sort -n | tail -8
python3 -c 'import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter()
if torch.cuda.is_available(): torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t2 = time.perf_counter(); import triton; t3 = time.perf_counter()
print(f"import torch {t1 - t0:.3f} s, CUDA context {t2 - t1:.3f} s, import triton {t3 - t2:.3f} s")'

model=sample_ckpts/tiny-llama
step "quantize --device $device tiny-llama: run 1 with an empty Triton cache, runs 2-4 warm"
for i in 1 2 3 4; do quantize; done

step "RS with two seeds (warm): no new kernel"
quantize --mode rs --seed 1
quantize --mode rs --seed 2

step "the same run's import tree (largest 8 under nvfp4cli)"
NVFP4_TIMING=1 python3 -X importtime -m nvfp4cli quantize sample_ckpts/tiny-llama -o /tmp/nvfp4_startup_out --force --device "$device" --json 2> "$out/importtime_quantize.txt" > /dev/null
grep -E '\| +nvfp4cli' "$out/importtime_quantize.txt" | sort -t'|' -k2 -n | tail -8
python3 -c 'import sys; print("heavy modules:", sorted({l.rsplit("|", 1)[1].strip().split(".")[0] for l in open(sys.argv[1]) if "|" in l} & {"triton", "transformers", "torchao", "compressed_tensors"}))' "$out/importtime_quantize.txt"

if [ "${2:-}" = big ]; then
  step "a 3.5 GB Llama-3-8B-shaped checkpoint (8 layers, no embeddings) in the page cache: quantize x2"
  model=/tmp/llama8b
  python3 scripts/bench_convert.py make "$model" --hidden 4096 --intermediate 14336 --layers 8 --heads 32 --kv-heads 8 --vocab 0 --device "$device"
  cat "$model"/*.safetensors > /dev/null
  for i in 1 2; do quantize; done
fi
