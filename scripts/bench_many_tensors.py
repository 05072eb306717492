"""Time nvfp4 on one file of many small tensors (issue: time must be linear in the tensor count).

    python scripts/bench_many_tensors.py --tensors 20000

Writes a .safetensors file of N small bf16 weights (expert-like names, 64x64) into a temporary
directory, then times `nvfp4 quantize`, `inspect`, `dequantize` and `diff` on it, each as its own
process (start-up included, as a user sees it). Prints one JSON line per command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def make_file(path: Path, count: int) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for index in range(count):
        layer, expert, part = index // 300, (index // 3) % 100, ("gate_proj", "up_proj", "down_proj")[index % 3]
        tensors[f"model.layers.{layer}.mlp.experts.{expert}.{part}.weight"] = torch.randn(64, 64, generator=g).to(torch.bfloat16)
    save_file(tensors, path)


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nvfp4cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "many.safetensors"
        make_file(source, args.tensors)
        quantized, restored = Path(directory) / "q.safetensors", Path(directory) / "d.safetensors"
        runs = {
            "quantize": ("quantize", str(source), "-o", str(quantized), "--json"),
            "inspect": ("inspect", str(quantized), "--json"),
            "dequantize": ("dequantize", str(quantized), "-o", str(restored), "--json"),
            "diff": ("diff", str(source), str(quantized), "--json"),
        }
        for name, command in runs.items():
            print(json.dumps({"command": name, "tensors": args.tensors, "seconds": round(timed(*command), 2)}))


if __name__ == "__main__":
    main()
