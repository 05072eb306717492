"""Time `nvfp4 quantize` with one process against --workers N (and torchrun) on a generated
Llama-style checkpoint, and check that every run wrote the single-process tensors.

    .venv/bin/python scripts/bench_distributed.py --size-mb 400 --workers 1 2 --repeat 3

Each configuration runs as a user runs it (a fresh `python -m nvfp4cli quantize` process), so
wall time includes interpreter and worker start-up; `convert s` is the time the command itself
reports (for --workers it includes starting the workers). Input throughput is input bytes over
wall time. The median of --repeat runs is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent


def llama_shapes(hidden: int, layers: int) -> dict[str, tuple[int, ...]]:
    """Llama parameter shapes with grouped-query attention (kv width hidden/4)."""
    intermediate, kv, vocab = hidden * 11 // 4 // 16 * 16, hidden // 4, 8 * hidden
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.input_layernorm.weight": (hidden,),
            f"{prefix}.self_attn.q_proj.weight": (hidden, hidden),
            f"{prefix}.self_attn.k_proj.weight": (kv, hidden),
            f"{prefix}.self_attn.v_proj.weight": (kv, hidden),
            f"{prefix}.self_attn.o_proj.weight": (hidden, hidden),
            f"{prefix}.post_attention_layernorm.weight": (hidden,),
            f"{prefix}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{prefix}.mlp.up_proj.weight": (intermediate, hidden),
            f"{prefix}.mlp.down_proj.weight": (hidden, intermediate),
        }
    return shapes | {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}


def make_checkpoint(directory: Path, size_mb: float, hidden: int, input_shards: int) -> int:
    """A bf16 model directory of about size_mb in input_shards shards with an index; returns bytes."""
    per_layer = sum(2 * torch.Size(shape).numel() for name, shape in llama_shapes(hidden, 1).items() if ".layers." in name)
    layers = max(1, round((size_mb * 1e6 - 2 * 2 * 8 * hidden * hidden) / per_layer))
    shapes = llama_shapes(hidden, layers)
    generator = torch.Generator().manual_seed(0)
    names = list(shapes)
    weight_map, total = {}, 0
    for number in range(input_shards):
        file_name = f"model-{number + 1:05d}-of-{input_shards:05d}.safetensors"
        chunk = names[number * len(names) // input_shards : (number + 1) * len(names) // input_shards]
        tensors = {name: (0.02 * torch.randn(shapes[name], generator=generator)).bfloat16() for name in chunk}
        save_file(tensors, directory / file_name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(chunk, file_name)
        total += sum(tensor.nbytes for tensor in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers}
    (directory / "config.json").write_text(json.dumps(config))
    return total


def stored_tensors(directory: Path) -> dict[str, bytes]:
    """Every stored tensor's raw bytes, by name."""
    tensors = {}
    for file in directory.glob("*.safetensors"):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                tensors[name] = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
    return tensors


def quantize(launcher: list[str], model: Path, output: Path, extra: list[str]) -> tuple[float, dict]:
    command = [*launcher, "quantize", str(model), "-o", str(output), "--json", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return wall, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=400, help="input checkpoint size (bf16)")
    parser.add_argument("--hidden", type=int, default=2048, help="model width")
    parser.add_argument("--input-shards", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="--workers values to time")
    parser.add_argument("--torchrun", type=int, nargs="*", default=[2], help="torchrun --nproc-per-node values to time")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", default="rn", choices=["rn", "rs"])
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()

    python = [sys.executable, "-m", "nvfp4cli"]
    configurations = [("1 process", python, [])]
    configurations += [(f"--workers {n}", python, ["--workers", str(n)]) for n in args.workers]
    configurations += [(f"torchrun x{n}", [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "nvfp4cli"], []) for n in args.torchrun]
    mode = ["--mode", args.mode, *(["--seed", "7"] if args.mode == "rs" else [])]
    with tempfile.TemporaryDirectory(prefix="nvfp4-bench-") as work:
        model = Path(work) / "model"
        model.mkdir()
        input_bytes = make_checkpoint(model, args.size_mb, args.hidden, args.input_shards)
        reference = None
        rows = []
        for label, launcher, extra in configurations:
            walls, converts, same = [], [], True
            for _ in range(args.repeat):
                output = Path(work) / "out"
                wall, report = quantize(launcher, model, output, [*mode, *extra])
                walls.append(wall)
                converts.append(report["seconds"])
                tensors = stored_tensors(output)
                reference = reference or tensors
                same &= tensors == reference
                shutil.rmtree(output)
            wall = statistics.median(walls)
            rows.append({"run": label, "wall_s": wall, "convert_s": statistics.median(converts), "input_mb_per_s": input_bytes / 1e6 / wall, "same_tensors": same})
    for row in rows:
        row["speedup"] = rows[0]["wall_s"] / row["wall_s"]
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "input_mb": input_bytes / 1e6, "mode": args.mode}
    if args.json:
        print(json.dumps({"machine": machine, "runs": rows}, indent=2))
        return
    print(f"input {input_bytes / 1e6:,.0f} MB bf16, mode {args.mode}, {machine['cpus']} CPUs, torch {machine['torch']}, median of {args.repeat}")
    print(tabulate([list(row.values()) for row in rows], headers=list(rows[0]), floatfmt=".2f"))


if __name__ == "__main__":
    main()
