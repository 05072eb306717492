"""Fuzz checkpoint reading, inspect, diff, quantize and dequantize with mutated safetensors files.

    .venv/bin/python fuzz/fuzz_checkpoint.py --examples 5000 --seed 1
    .venv/bin/python fuzz/fuzz_checkpoint.py --seconds 600

Hypothesis draws each example: a small valid seed checkpoint (float weights, compressed-tensors
NVFP4, ModelOpt NVFP4, or a sharded model directory with an index) and one or more mutations of
it: flipped, overwritten, cut or appended bytes; a header field set to an arbitrary JSON value;
a tensor renamed into or out of an NVFP4 triple; a tensor given another dtype and shape with the
offsets laid out again (so the file stays readable and the damage reaches the converters);
NaN/Inf bytes in the data; a mangled index or config.json. Each example then goes through what
the commands do, in-process: open and inspect, decode every tensor, compare with itself,
quantize (RN compressed-tensors, RS ModelOpt), dequantize.

The contract: bad input raises DataError or UsageError, nothing else; a failed run leaves nothing
at its output path; what a successful run writes opens and decodes again. Any other outcome is a
crash: its kind (exception type and where it was raised) is counted and its input saved.
A crash does not stop the run, so one run reports every kind it met.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from safetensors.torch import save

from nvfp4cli import formats
from nvfp4cli.compare import compare_checkpoints
from nvfp4cli.errors import DataError, UsageError
from nvfp4cli.execute import run
from nvfp4cli.inspection import inspect_checkpoint
from nvfp4cli.io import INDEX_SUFFIX, open_checkpoint
from nvfp4cli.plan import QuantizeOptions, plan_dequantize, plan_quantize

SAFETENSORS_DTYPES = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
ITEM_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "I16": 16, "U16": 16, "F16": 16, "BF16": 16}
ITEM_BITS |= {"I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
NAME_PARTS = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.mlp.down_proj", "lm_head", "fc"]
NAME_SUFFIXES = ["weight", "weight_packed", "weight_scale", "weight_global_scale", "weight_scale_2", "bias"]
POISON = [b"\xff\xff\xff\xff", b"\x00\x00\x80\x7f", b"\x80\x7f", b"\x7f", b"\xff"]  # NaN, +Inf (f32, bf16), E4M3 NaN


# ---- seed checkpoints ------------------------------------------------------------------------


def _nvfp4_triple(generator: torch.Generator, rows: int = 16, cols: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    packed = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=generator)
    scales = torch.rand(rows, cols // 16, generator=generator).add(0.5).to(torch.float8_e4m3fn)
    return packed, scales


def seed_files() -> dict[str, dict[str, bytes]]:
    """Seed checkpoints by kind: file name -> bytes (a kind with several files is a model directory)."""
    g = torch.Generator().manual_seed(0)
    floats = {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(16, 32, generator=g).to(torch.bfloat16),
        "model.layers.0.self_attn.k_proj.weight": torch.randn(16, 32, generator=g),
        "model.layers.0.mlp.down_proj.weight": torch.randn(16, 48, generator=g).to(torch.float16),
        "model.layers.0.mlp.down_proj.bias": torch.randn(16, generator=g),
        "model.layers.0.mlp.experts.weight": torch.randn(2, 16, 16, generator=g),
        "model.norm.weight": torch.ones(32),
        "position_ids": torch.arange(8, dtype=torch.int64),
    }
    packed, scales = _nvfp4_triple(g)
    record = json.dumps({"format": "compressed-tensors", "mode": "rs", "seed": 7})
    compressed = {"fc.weight_packed": packed, "fc.weight_scale": scales, "fc.weight_global_scale": torch.tensor([2688.0]), "fc.bias": torch.randn(16, generator=g)}
    modelopt = {"fc.weight": packed, "fc.weight_scale": scales, "fc.weight_scale_2": torch.tensor(0.01)}
    first, second = dict(list(floats.items())[:3]), dict(list(floats.items())[3:])
    index = {"metadata": {"total_size": 0}, "weight_map": {name: "a.safetensors" for name in first} | {name: "b.safetensors" for name in second}}
    return {
        "float": {"m.safetensors": save(floats, metadata={"format": "pt"})},
        "compressed-tensors": {"m.safetensors": save(compressed, metadata={"format": "pt", "nvfp4": record})},
        "modelopt": {"m.safetensors": save(modelopt)},
        "directory": {
            "a.safetensors": save(first),
            "b.safetensors": save(second),
            "model" + INDEX_SUFFIX: json.dumps(index).encode(),
            "config.json": json.dumps({"model_type": "llama", "hidden_size": 32}).encode(),
        },
    }


# ---- mutations -------------------------------------------------------------------------------


def split_safetensors(data: bytes) -> tuple[dict, bytes] | None:
    """(header, data) of a well-formed file, or None."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
    except (struct.error, ValueError):
        return None
    return (header, data[8 + length :]) if isinstance(header, dict) else None


def join_safetensors(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def relayout(header: dict, data: bytes, fill: bytes) -> tuple[dict, bytes]:
    """Offsets laid out again from each entry's dtype and shape (where those are sane), so the
    file stays readable; new bytes come from the old data, then fill."""
    position, pieces, source = 0, [], data + fill * (1 + len(data) // max(len(fill), 1))
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        shape, dtype = entry.get("shape"), entry.get("dtype")
        bits = ITEM_BITS.get(dtype) if isinstance(dtype, str) else None
        if bits is None or not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 2**16 for d in shape):
            continue
        count = 1
        for dim in shape:
            count *= dim
        size = (count * bits + 7) // 8
        entry["data_offsets"] = [position, position + size]
        pieces.append(source[position : position + size].ljust(size, b"\0"))
        position += size
    return header, b"".join(pieces)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10) | st.sampled_from(SAFETENSORS_DTYPES),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
shapes = st.lists(st.integers(0, 40), max_size=3) | st.lists(st.sampled_from([1, 2, 8, 16, 32]), min_size=1, max_size=3)


@st.composite
def mutate_bytes(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "append", "poison"]))
    position = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "flip":
        return data[:position] + bytes([data[position] ^ (1 << draw(st.integers(0, 7)))]) + data[position + 1 :] if data else data
    if kind == "overwrite":
        patch = draw(st.binary(min_size=1, max_size=16))
        return data[:position] + patch + data[position + len(patch) :]
    if kind == "truncate":
        return data[:position]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    parsed = split_safetensors(data)  # poison: NaN/Inf bit patterns inside the tensor data
    if parsed is None or not parsed[1]:
        return data
    header_size = len(data) - len(parsed[1])
    at = header_size + draw(st.integers(0, len(parsed[1]) - 1))
    patch = draw(st.sampled_from(POISON))
    return data[:at] + patch + data[at + len(patch) :]


@st.composite
def mutate_header(draw, data: bytes) -> bytes:
    parsed = split_safetensors(data)
    if parsed is None:
        return draw(mutate_bytes(data))
    header, payload = parsed
    names = [name for name in header if name != "__metadata__"] or ["x"]
    name = draw(st.sampled_from(names))
    kind = draw(st.sampled_from(["field", "rename", "delete", "respec", "metadata", "offsets"]))
    entry = header.get(name) if isinstance(header.get(name), dict) else {}
    if kind == "field":
        entry[draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))] = draw(json_values)
        header[name] = entry
    elif kind == "rename":
        header[f"{draw(st.sampled_from(NAME_PARTS))}.{draw(st.sampled_from(NAME_SUFFIXES))}"] = header.pop(name, entry)
        header, payload = relayout(header, payload, b"\x01")
    elif kind == "delete":
        header.pop(name, None)
        header, payload = relayout(header, payload, b"\0")
    elif kind == "respec":
        entry.update(dtype=draw(st.sampled_from(SAFETENSORS_DTYPES)), shape=draw(shapes))
        header[name] = entry
        header, payload = relayout(header, payload, draw(st.binary(min_size=1, max_size=8)))
    elif kind == "metadata":
        header["__metadata__"] = {"nvfp4": draw(st.text(max_size=20) | json_values.map(json.dumps)), draw(st.text(max_size=5)): draw(st.text(max_size=5))}
    else:
        entry["data_offsets"] = [draw(st.integers(0, len(payload) + 8)), draw(st.integers(0, len(payload) + 8))]
        header[name] = entry
    return join_safetensors(header, payload)


@st.composite
def mutate_json_file(draw, data: bytes) -> bytes:
    try:
        payload = json.loads(data)
    except ValueError:  # mangled by an earlier mutation
        payload = None
    if not isinstance(payload, dict) or draw(st.booleans()):
        return draw(mutate_bytes(data))
    if draw(st.booleans()) and isinstance(payload.get("weight_map"), dict) and payload["weight_map"]:
        key = draw(st.sampled_from(sorted(payload["weight_map"])))
        payload["weight_map"][key] = draw(json_values | st.sampled_from(["a.safetensors", "b.safetensors", "../a.safetensors", "missing.safetensors"]))
    else:
        payload[draw(st.sampled_from(["weight_map", "metadata", "model_type", "quantization_config"]))] = draw(json_values)
    return json.dumps(payload).encode()


@st.composite
def mutated_checkpoints(draw) -> tuple[str, dict[str, bytes], list[str]]:
    """(seed kind, file name -> mutated bytes, what was done)."""
    kind = draw(st.sampled_from(sorted(SEEDS)))
    files = dict(SEEDS[kind])
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(sorted(files)))
        if target.endswith(".json"):
            strategy = mutate_json_file
        else:
            strategy = draw(st.sampled_from([mutate_bytes, mutate_header, mutate_header]))
        files[target] = draw(strategy(files[target]))
        steps.append(f"{strategy.__name__}({target})")
    return kind, files, steps


SEEDS = seed_files()


# ---- the target ------------------------------------------------------------------------------

CLEAN_ERRORS = (DataError, UsageError)


def _reopens(output: Path) -> None:
    """What we wrote must open and decode, whatever the input was."""
    checkpoint = open_checkpoint(output)
    for weight in formats.logical_weights(checkpoint).values():
        formats.load_float(weight, checkpoint)


def exercise(source: Path, workdir: Path) -> Counter:
    """Every command's work on source; returns outcome counts. Raises on anything but a clean error."""
    outcomes: Counter = Counter()

    def step(label: str, action, output: Path | None = None) -> None:
        try:
            action()
            outcomes[f"{label}: ok"] += 1
            if output is not None:
                _reopens(output)
        except CLEAN_ERRORS:
            outcomes[f"{label}: clean error"] += 1
            if output is not None:
                assert not output.exists(), f"{label} failed but left {output}"
        if output is not None:
            shutil.rmtree(output) if output.is_dir() else output.unlink(missing_ok=True)
            leftovers = [p.name for p in workdir.iterdir() if p.name.startswith(f".{output.name}.")]
            assert not leftovers, f"{label} left {leftovers}"

    def open_and_decode() -> None:
        checkpoint = open_checkpoint(source)
        inspect_checkpoint(checkpoint)
        for weight in formats.logical_weights(checkpoint).values():
            formats.load_float(weight, checkpoint)
            formats.load_quantized(weight, checkpoint)

    is_file = source.is_file()
    step("inspect and decode", open_and_decode)
    step("diff with itself", lambda: compare_checkpoints(source, source))
    jobs = {
        "quantize rn": lambda: plan_quantize(open_checkpoint(source), QuantizeOptions()),
        "quantize rs modelopt": lambda: plan_quantize(open_checkpoint(source), QuantizeOptions(mode="rs", seed=3, fmt="modelopt")),
        "dequantize": lambda: plan_dequantize(open_checkpoint(source)),
    }
    for label, make_plan in jobs.items():
        output = workdir / ("out.safetensors" if is_file else "out")
        step(label, lambda: run(make_plan(), output), output)
    return outcomes


@dataclass
class FuzzReport:
    examples: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    # crash kind -> (count, first message, seed kind, mutations, saved input)
    crashes: dict[str, tuple[int, str, str, list[str], str]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.examples} examples in {self.seconds:.1f} s, {len(self.crashes)} crash kind(s)"]
        lines += [f"  {count:6d}  {outcome}" for outcome, count in sorted(self.outcomes.items())]
        for kind, (count, message, seed, steps, saved) in self.crashes.items():
            lines.append(f"CRASH {kind} ({count}x): {message}\n      seed {seed}, {' -> '.join(steps)}, input saved in {saved}")
        return "\n".join(lines)


def _crash_kind(exc: BaseException) -> str:
    """Exception type and the innermost frame of the package: one kind however many inputs hit it."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [frame for frame in frames if "nvfp4cli" in frame.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def fuzz(examples: int, seed: int, crash_dir: Path, report: FuzzReport | None = None) -> FuzzReport:
    """Run `examples` hypothesis examples from `seed`; crashes are counted and saved, not raised."""
    report = report or FuzzReport()
    start = time.perf_counter()

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(mutated_checkpoints())
    def one(example: tuple[str, dict[str, bytes], list[str]]) -> None:
        kind, files, steps = example
        report.examples += 1
        with tempfile.TemporaryDirectory(prefix="nvfp4-fuzz-") as tmp:
            workdir = Path(tmp)
            model = workdir / "model"
            model.mkdir()
            for name, data in files.items():
                (model / name).write_bytes(data)
            source = model if len(files) > 1 else model / next(iter(files))
            try:
                report.outcomes.update(exercise(source, workdir))
            except Exception as exc:  # noqa: BLE001 - anything but a clean error is what we look for
                crash = _crash_kind(exc)
                report.outcomes["crash"] += 1
                if crash in report.crashes:
                    count, *first = report.crashes[crash]
                    report.crashes[crash] = (count + 1, *first)
                else:
                    saved = crash_dir / f"crash-{len(report.crashes):03d}"
                    shutil.copytree(model, saved)
                    report.crashes[crash] = (1, " ".join(str(exc).split())[:200], kind, steps, str(saved))

    one()
    report.seconds += time.perf_counter() - start
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per batch (default 2000)")
    parser.add_argument("--seconds", type=float, default=0.0, help="keep running batches (new seeds) until this much time has passed")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed of the first batch")
    parser.add_argument("--crash-dir", type=Path, default=None, help="where crashing inputs are saved (default: a new temporary directory)")
    args = parser.parse_args()
    crash_dir = args.crash_dir or Path(tempfile.mkdtemp(prefix="nvfp4-fuzz-crashes-"))
    crash_dir.mkdir(parents=True, exist_ok=True)
    report = fuzz(args.examples, args.seed, crash_dir)
    batch_seed = args.seed
    while report.seconds < args.seconds:
        batch_seed += 1
        fuzz(args.examples, batch_seed, crash_dir, report)
    print(report.summary())
    return 1 if report.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
