#!/usr/bin/env bash
# Issue 20 goals 2-4 on a GPU machine, in one call: the pipelined conversion of a generated
# Llama-3-8B-shaped checkpoint (8 layers, no embeddings: 3.5 GB bf16) in the page cache against
# the I/O floor (with each stage's seconds), the GPU tests of the pipeline, start-up, the command
# as users run it, and --workers 1 vs 2 where two GPUs exist. One H200: about 4 minutes.
#
#     bash scripts/gpu_bench_convert.sh "$OUT"      # from the repository root; logs under $OUT
set -u
out=${1:-/tmp/gpu_bench_convert}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
model=/tmp/llama8b
step() { echo; echo "== $*"; }

step "machine"
nvidia-smi -L
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, "gpus", torch.cuda.device_count(), "cores", __import__("os").cpu_count())'

step "generate the checkpoint"
python3 scripts/bench_convert.py make "$model" --hidden 4096 --intermediate 14336 --layers 8 --heads 32 --kv-heads 8 --vocab 0 --device cuda
sync  # the checkpoint's dirty pages on disk now, not during the floor's or the runs' fsync

# The goal-2 measurement first. Each run prints its line, its stage seconds (read / make: H2D,
# kernels, D2H / write / sync / close) and a JSON line as it ends; the last line is the goal.
step "conversion loop in one process: floor, plain loop, overlapped with stage seconds, variants, CPU check"
timeout 200 python3 scripts/bench_convert.py pipeline "$model" --device cuda --repeats 2 --cpu-check 2>&1 | tee "$out/pipeline.txt" | grep -v '^{"bench": "convert-pipeline", '
echo "(JSON lines: $out/pipeline.jsonl)"
grep '^{"bench"' "$out/pipeline.txt" > "$out/pipeline.jsonl"

step "GPU tests: pipelined CUDA == CPU bytes (quantize, dequantize), diff on cuda, a NaN in a fused group, stages"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_pipeline_gpu.py 2>&1 | tail -5

step "start-up: nvfp4 --help (3 runs) and the import tree"
TIMEFORMAT="nvfp4 --help: %R s"
for i in 1 2 3; do time python3 -m nvfp4cli --help > /dev/null; done
python3 -X importtime -m nvfp4cli --help 2> "$out/importtime.txt" > /dev/null
sort -t'|' -k2 -n "$out/importtime.txt" | tail -4
python3 -c 'import sys, nvfp4cli.cli; print("heavy modules after importing the CLI:", sorted({m.split(".")[0] for m in sys.modules} & {"triton", "transformers", "torchao"}))'

step "the command as users run it (a fresh interpreter each; Triton's cache warm after the first)"
timeout 90 python3 scripts/bench_convert.py cli --times 3 --clean /tmp/o8 quantize "$model" -o /tmp/o8 --device cuda --json

if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  step "--workers 2 (the default choice for 3.5 GB), then two workers forced"
  timeout 120 python3 scripts/bench_convert.py cli --times 1 --clean /tmp/o8 quantize "$model" -o /tmp/o8 --device cuda --workers 2 --json
  NVFP4_WORKER_MIN_BYTES=0 timeout 150 python3 scripts/bench_convert.py cli --times 2 --clean /tmp/o8 quantize "$model" -o /tmp/o8 --device cuda --workers 2 --json
  step "a 14 GB checkpoint (32 layers): one process, then --workers 2 forced"
  rm -rf /tmp/o8
  python3 scripts/bench_convert.py make /tmp/llama32 --hidden 4096 --intermediate 14336 --layers 32 --heads 32 --kv-heads 8 --vocab 0 --device cuda
  timeout 120 python3 scripts/bench_convert.py cli --times 2 --clean /tmp/o32 quantize /tmp/llama32 -o /tmp/o32 --device cuda --json
  NVFP4_WORKER_MIN_BYTES=0 timeout 150 python3 scripts/bench_convert.py cli --times 2 --clean /tmp/o32 quantize /tmp/llama32 -o /tmp/o32 --device cuda --workers 2 --json
fi

step "summary: the conversion loop against the floor (stages above, JSON lines in $out/pipeline.jsonl)"
grep -E '^(floor|warm|plain|overlapped|same|\{"bench": "convert-pipeline-goal")' "$out/pipeline.txt"
