"""Whole-conversion benchmarks: make a Llama-shaped checkpoint of random weights, and time the
conversion in this process (plain loop against the overlapped pipeline, after a warm-up run)
against the I/O floor measured in the same run.

    python scripts/bench_convert.py make /tmp/llama8b --hidden 4096 --intermediate 14336 --layers 8 --kv-heads 8 --vocab 0
    python scripts/bench_convert.py pipeline /tmp/llama8b --device cuda --repeats 2 [--cpu-check]

`pipeline` prints, per overlapped run, where each thread spent its time (pipeline.Stages):
the reader (read, wait for room), the making thread (wait for the reader, make: H2D / kernels /
D2H, hand to the writer), the writer (write, wait for work), the disk sync thread (fdatasync)
and the close (fsync); then one JSON line a run and a goal line (>= 4 GB/s, >= 80% of floor).

`nvfp4 bench --checkpoint DIR` measures the command as users run it (start-up included) and
against llm-compressor; this script isolates the conversion loop itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import nvfp4cli.execute
import nvfp4cli.pipeline
from nvfp4cli.convert_bench import io_floor, run_measured
from nvfp4cli.execute import run
from nvfp4cli.io import TensorSpec, open_checkpoint, shard_file_names, write_index
from nvfp4cli.plan import QuantizeOptions, plan_quantize


def llama_tensors(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict[str, tuple[int, ...]]:
    head_dim = hidden // heads
    shapes: dict[str, tuple[int, ...]] = {}
    if vocab:
        shapes["model.embed_tokens.weight"] = (vocab, hidden)
        shapes["lm_head.weight"] = (vocab, hidden)
    shapes["model.norm.weight"] = (hidden,)
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
            f"{p}.self_attn.q_proj.weight": (heads * head_dim, hidden),
            f"{p}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            f"{p}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            f"{p}.self_attn.o_proj.weight": (hidden, heads * head_dim),
            f"{p}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{p}.mlp.up_proj.weight": (intermediate, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, intermediate),
        }
    return shapes


def make(args: argparse.Namespace) -> None:
    """Random N(0, 0.02) bf16 weights (norms 1), in shards of at most --shard-gb, with an index
    and a Llama config (tie_word_embeddings false)."""
    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(device=args.device).manual_seed(0)
    shapes = llama_tensors(args.hidden, args.intermediate, args.layers, args.heads, args.kv_heads, args.vocab)
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * torch.Size(shape).numel()
        if shards[-1] and size + nbytes > args.shard_gb * 1e9:
            shards.append({})
            size = 0
        shards[-1][name] = shape
        size += nbytes
    names = shard_file_names(len(shards))
    for shard, file_name in zip(shards, names):
        tensors = {
            name: (torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=g, device=args.device).mul_(0.02)).to(torch.bfloat16).cpu()
            for name, shape in shard.items()
        }
        save_file(tensors, directory / file_name, metadata={"format": "pt"})
    if len(shards) > 1:
        specs = [[TensorSpec(name, "BF16", shape, 2 * torch.Size(shape).numel()) for name, shape in shard.items()] for shard in shards]
        write_index(directory / "model.safetensors.index.json", specs, names)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden, "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers, "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads,
        "vocab_size": max(args.vocab, 1), "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "hidden_act": "silu",
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    total = sum(2 * torch.Size(shape).numel() for shape in shapes.values())
    print(f"{directory}: {len(shapes)} tensors, {total / 1e9:.2f} GB in {len(shards)} file(s)")


def digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        h.update(path.read_bytes())
    return h.hexdigest()


def write_floor(nbytes: int, scratch: Path) -> float:
    """Seconds to write nbytes into the page cache, without fsync (the writer's own share)."""
    piece = os.urandom(min(64 * 2**20, max(nbytes, 1)))
    target = scratch / "floor-nosync.bin"
    start = time.perf_counter()
    with open(target, "wb") as handle:
        for at in range(0, nbytes, len(piece)):
            handle.write(piece[: nbytes - at])
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def stage_summary(stages: nvfp4cli.pipeline.Stages) -> str:
    """One line: each thread's busy and waiting seconds (pipeline.Stages names, grouped)."""
    s = stages.seconds
    order = ["make: make", "make: H2D", "make: kernels", "make: D2H"]  # the make step, then its parts; the rest by name

    def part(prefix: str) -> str:
        names = sorted((name for name in s if name.startswith(prefix + ":")), key=lambda name: (order.index(name) if name in order else len(order), name))
        return ", ".join(f"{name.split(': ', 1)[1]} {s[name]:.3f}" for name in names)

    return " | ".join(f"{prefix} [{part(prefix)}]" for prefix in ("read", "make", "write", "sync", "close") if part(prefix))


def pipeline(args: argparse.Namespace) -> None:
    """The floor, then a warm-up run and --repeats pairs of plain and overlapped runs, each
    overlapped run with its stage seconds (pipeline.STAGES, host clocks only), then variants
    that say where the time goes: stages with the GPU waited for at each step (H2D, kernels and
    D2H apart), the disk synced only at close or every 256 MB, larger read-ahead and write-behind
    budgets, twice the read threads, reading ahead or copying results into pageable memory; the
    CPU last (--cpu-check). Each run prints its line, its stages and a JSON line ("bench":
    "convert-pipeline") as it ends; then a goal line."""
    source = Path(args.directory)
    options = QuantizeOptions(device=args.device)
    plan = plan_quantize(open_checkpoint(source), options)
    gb = plan.bytes_in / 1e9
    cuda = args.device.startswith("cuda")
    card = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"{source}: {gb:.2f} GB in, {plan.bytes_out / 1e9:.2f} GB out, device {args.device} ({card}, {os.cpu_count()} cores)", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nvfp4-pipeline-", dir=args.scratch) as tmp:
        work = Path(tmp)
        floor = io_floor(source, plan.bytes_out, work, pin_memory=cuda)
        floor_s = max(floor.read_s, floor.write_s)
        common = {"bench": "convert-pipeline", "card": card, "cores": os.cpu_count(), "bytes_in": plan.bytes_in, "bytes_out": plan.bytes_out, "floor_s": round(floor_s, 4)}

        def report(row: dict, stages: nvfp4cli.pipeline.Stages | None = None) -> None:
            row |= {"gbps_in": gb / row["seconds"], "pct_of_floor": 100 * floor_s / row["seconds"]}
            rows.append(row)
            print(f"{row['run']:44s} {row['seconds']:7.3f} s  {row['gbps_in']:6.2f} GB/s of input  {row['pct_of_floor']:5.1f}% of floor")
            if stages is not None:
                row |= {"stages": {name: round(value, 4) for name, value in sorted(stages.seconds.items())}, "calls": dict(sorted(stages.calls.items()))}
                print(f"    {stage_summary(stages)}")
            print(json.dumps(common | {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}), flush=True)

        report({"run": "floor: read input", "seconds": floor.read_s})
        report({"run": "floor: write output + fsync", "seconds": floor.write_s})
        report({"run": "floor: write output, no fsync", "seconds": write_floor(plan.bytes_out, work)})

        def once(label: str, overlap: bool, device: str = args.device, stages: nvfp4cli.pipeline.Stages | None = None) -> str:
            output = work / label.replace(" ", "_").replace(",", "")
            checkpoint = open_checkpoint(source)
            nvfp4cli.pipeline.STAGES = stages
            try:
                start = time.perf_counter()
                run(plan_quantize(checkpoint, QuantizeOptions(device=device)), output, checkpoint=checkpoint, overlap=overlap)
                seconds = time.perf_counter() - start
            finally:
                nvfp4cli.pipeline.STAGES = None
            report({"run": label, "seconds": seconds}, stages)
            found = digest(output)
            shutil.rmtree(output)
            return found

        def variant(label: str, module, name: str, value) -> None:
            saved = getattr(module, name)
            setattr(module, name, value)
            try:
                digests.add(once(label, True, stages=nvfp4cli.pipeline.Stages()))
            finally:
                setattr(module, name, saved)

        digests = {once("warm-up (overlap)", True)}
        for repeat in range(args.repeats):
            digests.add(once(f"plain loop #{repeat + 1}", False))
            digests.add(once(f"overlapped #{repeat + 1}", True, stages=nvfp4cli.pipeline.Stages()))
        if cuda:
            digests.add(once("overlapped, GPU waited at each stage", True, stages=nvfp4cli.pipeline.Stages(sync_device=True)))
        variant("overlapped, disk synced at close only", nvfp4cli.execute, "SYNC_BYTES", 1 << 62)
        variant("overlapped, disk synced every 256 MB", nvfp4cli.execute, "SYNC_BYTES", 256 * 2**20)
        nvfp4cli.pipeline.READ_AHEAD_BYTES, ahead = 512 * 2**20, nvfp4cli.pipeline.READ_AHEAD_BYTES
        variant("overlapped, 512 MB ahead and behind", nvfp4cli.pipeline, "WRITE_BEHIND_BYTES", 512 * 2**20)
        nvfp4cli.pipeline.READ_AHEAD_BYTES = ahead
        variant(f"overlapped, {2 * nvfp4cli.pipeline.READ_THREADS} read threads", nvfp4cli.pipeline, "READ_THREADS", 2 * nvfp4cli.pipeline.READ_THREADS)
        if cuda:  # the read-ahead and the results in pageable memory, as before, for comparison
            variant("overlapped, pageable read-ahead", nvfp4cli.pipeline, "read_buffer", lambda nbytes, pin_memory: None)
            variant("overlapped, pageable D2H (.cpu() a tensor)", nvfp4cli.execute, "_to_host", lambda tensors: {name: tensor.cpu() for name, tensor in tensors.items()})
        same = len(digests) == 1
        cpu_same = None
        if args.cpu_check:
            cpu_same = once("overlapped on cpu", True, "cpu") in digests
    print(f"same bytes plain/overlapped: {same}" + ("" if cpu_same is None else f"; cuda == cpu: {cpu_same}"))
    overlapped = [row for row in rows if row["run"].startswith("overlapped #")]
    if overlapped:
        best = min(overlapped, key=lambda row: row["seconds"])
        goal = {"best_overlapped_s": round(best["seconds"], 4), "gbps_in": round(best["gbps_in"], 3), "pct_of_floor": round(best["pct_of_floor"], 1)}
        goal["met"] = best["gbps_in"] >= 4.0 and best["pct_of_floor"] >= 80.0
        print(json.dumps({"bench": "convert-pipeline-goal", "card": card, **goal, "same_bytes": same, "cuda_equals_cpu": cpu_same}))
    if not same or cpu_same is False:
        sys.exit(1)


def cli(args: argparse.Namespace) -> None:
    """`nvfp4 ARGS` as users run it, --times times: wall time (start-up included), the
    conversion's own time where the command reports one (--json), and peak resident memory."""
    for attempt in range(args.times):
        wall_s, peak, stdout = run_measured([sys.executable, "-m", "nvfp4cli", *args.arguments])
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError:
            report = {}
        inner = report.get("seconds")
        inner_text = "-" if inner is None else f"{inner:.3f} s"
        workers = f", workers {report['workers']} ({report.get('workers_reason', '')})" if "workers" in report else ""
        print(f"nvfp4 {' '.join(args.arguments)} #{attempt + 1}: wall {wall_s:.3f} s, inside {inner_text}, peak {peak / 1e9:.2f} GB{workers}", flush=True)
        if args.clean:
            shutil.rmtree(args.clean, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("directory")
    m.add_argument("--hidden", type=int, default=2048)
    m.add_argument("--intermediate", type=int, default=5632)
    m.add_argument("--layers", type=int, default=6)
    m.add_argument("--heads", type=int, default=32)
    m.add_argument("--kv-heads", type=int, default=4)
    m.add_argument("--vocab", type=int, default=32000, help="0: no embeddings, no lm_head")
    m.add_argument("--shard-gb", type=float, default=5.0)
    m.add_argument("--device", default="cpu", help="where the random numbers are drawn")
    p = sub.add_parser("pipeline")
    p.add_argument("directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scratch", default=None)
    p.add_argument("--cpu-check", action="store_true", help="also convert on the CPU and compare the bytes")
    c = sub.add_parser("cli")
    c.add_argument("--times", type=int, default=2)
    c.add_argument("--clean", default=None, help="remove this path after each run (the output)")
    c.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    {"make": make, "pipeline": pipeline, "cli": cli}[args.command](args)


if __name__ == "__main__":
    main()
