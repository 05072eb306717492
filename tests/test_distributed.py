"""Distributed conversion (`--workers N` and torchrun, gloo on CPU) against the single-process
run: the same tensor bytes, RN and RS, both formats; a failing or killed rank stops every rank
and leaves nothing behind. Stored tensors are read by parsing the safetensors files by hand, an
oracle independent of the writer under test."""

import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import nvfp4cli.distributed as distributed
from nvfp4cli import DataError, formats
from nvfp4cli.execute import assign_units, run, write_units
from nvfp4cli.io import open_checkpoint, open_writers
from nvfp4cli.plan import QUANTIZE, QuantizeOptions, plan_dequantize, plan_quantize

from cli_runner import SAMPLE, nvfp4

REPO = SAMPLE.parent.parent


@pytest.fixture(autouse=True)
def start_every_worker(monkeypatch):
    """These tests exercise the processes themselves on small checkpoints, which --workers would
    otherwise convert in one process (tests/test_workers_choice.py covers that choice)."""
    monkeypatch.setenv("NVFP4_WORKER_MIN_BYTES", "0")


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "nvfp4cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)


def stored(directory: Path) -> tuple[dict[str, tuple[str, tuple, bytes]], dict[str, dict], dict[str, str]]:
    """(tensor name -> (dtype, shape, raw bytes), file -> metadata, tensor name -> file), parsed
    from the safetensors byte layout (8-byte header length, JSON header, data)."""
    tensors, metadata, files = {}, {}, {}
    for file in sorted(directory.glob("*.safetensors")):
        data = file.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
        metadata[file.name] = header.pop("__metadata__", {})
        for name, info in header.items():
            start, end = info["data_offsets"]
            assert name not in tensors, f"{name} stored twice"
            tensors[name] = (info["dtype"], tuple(info["shape"]), data[8 + length + start : 8 + length + end])
            files[name] = file.name
    return tensors, metadata, files


def side_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if not path.name.endswith((".safetensors", ".index.json"))}


def single_process(source: Path, output: Path, **options) -> Path:
    max_shard_bytes = options.pop("max_shard_bytes", 5 * 10**9)
    run(plan_quantize(open_checkpoint(source), QuantizeOptions(**options)), output, max_shard_bytes=max_shard_bytes)
    return output


def assert_same_tensors(distributed_output: Path, reference: Path) -> None:
    """Same tensors, bytes and per-file metadata as the single-process output; an index that says
    where each tensor is and how many bytes there are; config and side files the same."""
    tensors, metadata, files = stored(distributed_output)
    expected, expected_metadata, _ = stored(reference)
    assert tensors.keys() == expected.keys()
    assert all(tensors[name] == expected[name] for name in expected)
    reference_metadata = next(iter(expected_metadata.values()))
    assert all(file_metadata == reference_metadata for file_metadata in metadata.values())
    if len(files) > 1 or (distributed_output / "model.safetensors.index.json").exists():
        index = json.loads((distributed_output / "model.safetensors.index.json").read_text())
        assert index["weight_map"] == files
        assert index["metadata"]["total_size"] == sum(len(raw) for _, _, raw in tensors.values())
    assert side_files(distributed_output) == side_files(reference)


def no_leftovers(directory: Path, *expected: str) -> bool:
    return sorted(path.name for path in directory.iterdir()) == sorted(expected)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """A model directory of three shards: bf16, fp16 and fp32 weights, fused q/k/v, gate/up and
    MoE w1/w3 groups, a weight kept in high precision, biases, and a side file."""
    directory = tmp_path_factory.mktemp("generated") / "model"
    directory.mkdir()
    generator = torch.Generator().manual_seed(8)
    tensors = {"model.embed_tokens.weight": torch.randn(512, 96, generator=generator).bfloat16()}
    for layer, dtype in zip(range(3), (torch.bfloat16, torch.float16, torch.float32)):
        prefix = f"model.layers.{layer}"
        shapes = {"self_attn.q_proj": (96, 96), "self_attn.k_proj": (32, 96), "self_attn.v_proj": (32, 96), "self_attn.o_proj": (96, 96)}
        shapes |= {"mlp.gate_proj": (272, 96), "mlp.up_proj": (272, 96), "mlp.down_proj": (96, 272)}
        shapes |= {f"block_sparse_moe.experts.{e}.{w}": (64, 96) for e in range(2) for w in ("w1", "w3")}
        for module, shape in shapes.items():
            tensors[f"{prefix}.{module}.weight"] = (torch.randn(shape, generator=generator) * 0.05 * (layer + 1)).to(dtype)
        tensors[f"{prefix}.self_attn.o_proj.bias"] = torch.randn(96, generator=generator).to(dtype)
        tensors[f"{prefix}.input_layernorm.weight"] = torch.ones(96, dtype=dtype)
    tensors["lm_head.weight"] = torch.randn(512, 96, generator=generator).bfloat16()
    names = list(tensors)
    weight_map = {}
    for number, chunk in enumerate((names[:20], names[20:40], names[40:]), start=1):
        file_name = f"model-{number:05d}-of-00003.safetensors"
        save_file({name: tensors[name] for name in chunk}, directory / file_name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(chunk, file_name)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps({"model_type": "mixtral", "hidden_size": 96}))
    (directory / "tokenizer_config.json").write_text("{}")
    return directory


# ---- assignment --------------------------------------------------------------------------------


def test_assignment_covers_every_unit_once_and_is_near_optimal(sharded):
    """Every unit on exactly one rank (so fused groups, one unit each, never split), and the
    largest rank load within 4/3 of the best possible split, found by brute force."""
    units = plan_quantize(open_checkpoint(sharded), QuantizeOptions()).units
    assert any(len(unit.inputs) == 3 for unit in units) and any(len(unit.inputs) == 2 for unit in units)
    for world_size in (1, 2, 3, 4):
        shares = assign_units(units, world_size)
        assert sorted(itertools.chain(*shares)) == list(range(len(units)))
        assert all(share == sorted(share) for share in shares)
        assert assign_units(units, world_size) == shares  # the same on every rank
        loads = [sum(units[index].bytes_in for index in share) for share in shares]
        assert max(loads) - min(loads) <= max(unit.bytes_in for unit in units)
    sizes = [unit.bytes_in for unit in units[:12]]
    for world_size in (2, 3):
        best = min(max(sum(size for size, rank in zip(sizes, ranks) if rank == r) for r in range(world_size)) for ranks in itertools.product(range(world_size), repeat=len(sizes)))
        shares = assign_units(units[:12], world_size)
        assert max(sum(sizes[index] for index in share) for share in shares) <= best * 4 / 3


def test_dry_run_shows_the_split(sharded):
    result = nvfp4("quantize", sharded, "--workers", 3, "--dry-run", "--json", "--max-shard-size", "20KB")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["workers"] == 3 and [row["rank"] for row in report["ranks"]] == [0, 1, 2]
    assert sum(row["bytes_in"] for row in report["ranks"]) == report["bytes_in"]
    assert sum(row["tensors_in"] for row in report["ranks"]) == report["tensors_in"]
    files = [name for row in report["ranks"] for name in row["files"]]
    assert len(files) > 3 and files == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    assert not (sharded.parent / "model-nvfp4").exists()


# ---- same tensors as one process ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_two_workers_write_the_single_process_tensors(tmp_path, mode):
    seed_args, seed = (("--seed", 7), 7) if mode == "rs" else ((), None)
    reference = single_process(SAMPLE, tmp_path / "single", mode=mode, seed=seed, max_shard_bytes=10**6)
    output = tmp_path / "workers"
    result = nvfp4("quantize", SAMPLE, "-o", output, "--mode", mode, *seed_args, "--workers", 2, "--max-shard-size", "1MB", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["workers"] == 2 and report["files"] == sorted(path.name for path in output.glob("*.safetensors"))
    assert report["tensors_quantized"] == 14 and report["bytes_in"] == sum(row["bytes_in"] for row in report["ranks"])
    assert_same_tensors(output, reference)
    assert load_file(output / report["files"][0])  # a file the safetensors library reads
    assert no_leftovers(tmp_path, "single", "workers")


@pytest.mark.slow
def test_sharded_modelopt_rs_two_workers_one_worker_and_torchrun(sharded, tmp_path):
    """Two workers: same tensors as one process, several shards per rank. One worker: the very
    files of one process. torchrun with two ranks: the very files of --workers 2."""
    args = ("--format", "modelopt", "--mode", "rs", "--seed", 11, "--max-shard-size", "20KB")
    reference = single_process(sharded, tmp_path / "single", fmt="modelopt", mode="rs", seed=11, max_shard_bytes=20_000)
    two = tmp_path / "two"
    result = nvfp4("quantize", sharded, "-o", two, *args, "--workers", 2, "--json")
    assert result.exit_code == 0, result.output
    assert {len(row["files"]) > 1 for row in json.loads(result.stdout)["ranks"]} == {True}
    assert_same_tensors(two, reference)
    assert formats.logical_weights(open_checkpoint(two)).keys() == formats.logical_weights(open_checkpoint(reference)).keys()

    one = tmp_path / "one"
    assert nvfp4("quantize", sharded, "-o", one, *args, "--workers", 1).exit_code == 0
    assert {p.name: p.read_bytes() for p in one.iterdir()} == {p.name: p.read_bytes() for p in reference.iterdir()}

    launched = torchrun("quantize", sharded, "-o", tmp_path / "torchrun", *args, "--json")
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["workers"] == 2  # one JSON document: rank 0 alone reports
    assert {p.name: p.read_bytes() for p in (tmp_path / "torchrun").iterdir()} == {p.name: p.read_bytes() for p in two.iterdir()}


@pytest.fixture(scope="module")
def sharded_nvfp4(sharded, tmp_path_factory) -> Path:
    """The generated model quantized by one process, in several shards."""
    return single_process(sharded, tmp_path_factory.mktemp("quantized") / "model", max_shard_bytes=20_000)


@pytest.mark.slow
def test_dequantize_with_workers_and_torchrun_writes_the_single_process_tensors(sharded_nvfp4, tmp_path):
    args = ("--dtype", "fp32", "--max-shard-size", "40KB")
    reference = tmp_path / "single"
    assert nvfp4("dequantize", sharded_nvfp4, "-o", reference, *args).exit_code == 0
    two = tmp_path / "two"
    result = nvfp4("dequantize", sharded_nvfp4, "-o", two, *args, "--workers", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["workers"] == 2 and report["tensors_dequantized"] == sum(w.quantized for w in formats.logical_weights(open_checkpoint(sharded_nvfp4)).values())
    assert_same_tensors(two, reference)
    launched = torchrun("dequantize", sharded_nvfp4, "-o", tmp_path / "torchrun", *args, "--json")
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["workers"] == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "torchrun").iterdir()} == {p.name: p.read_bytes() for p in two.iterdir()}


def test_dequantize_failing_rank_stops_all_with_one_line(sharded_nvfp4, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(sharded_nvfp4, model)
    checkpoint = open_checkpoint(model)
    plan = plan_dequantize(checkpoint, torch.bfloat16)
    weight = next(plan.weights[name] for index in assign_units(plan.units, 2)[1] for name in plan.units[index].converted)
    scale = next(name for name in weight.tensors if name.endswith("_global_scale"))
    tensors = load_file(checkpoint.file(scale))
    tensors[scale] = torch.zeros(1)
    save_file(tensors, checkpoint.file(scale))
    result = nvfp4("dequantize", model, "-o", tmp_path / "out", "--workers", 2)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("nvfp4: error: rank 1: ") and repr(scale) in result.stderr and len(result.stderr.splitlines()) == 1
    assert no_leftovers(tmp_path, "model")


# ---- failures ----------------------------------------------------------------------------------


@pytest.fixture
def nan_on_rank1(sharded, tmp_path) -> tuple[Path, str]:
    """A copy of the generated model with a NaN in a weight that rank 1 of 2 quantizes."""
    model = tmp_path / "model"
    shutil.copytree(sharded, model)
    checkpoint = open_checkpoint(model)
    units = plan_quantize(checkpoint, QuantizeOptions()).units
    name = next(name for index in assign_units(units, 2)[1] for name in units[index].converted)
    tensors = load_file(checkpoint.file(name))
    tensors[name][1, 2] = float("nan")
    save_file(tensors, checkpoint.file(name), metadata={"format": "pt"})
    return model, name


def test_failing_rank_stops_all_with_one_line_and_leaves_nothing(nan_on_rank1, tmp_path):
    model, name = nan_on_rank1
    result = nvfp4("quantize", model, "-o", tmp_path / "out", "--workers", 2)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert result.stderr.startswith("nvfp4: error: rank 1: ") and repr(name) in result.stderr and "NaN" in result.stderr
    assert no_leftovers(tmp_path, "model")


@pytest.mark.slow
def test_failing_rank_under_torchrun(nan_on_rank1, tmp_path):
    model, name = nan_on_rank1
    launched = torchrun("quantize", model, "-o", tmp_path / "out", "--json")
    assert launched.returncode != 0 and launched.stdout == ""
    errors = [line for line in launched.stderr.splitlines() if line.startswith("nvfp4: error:")]
    assert len(errors) == 1 and errors[0].startswith("nvfp4: error: rank 1: ") and repr(name) in errors[0]
    assert 'nvfp4cli/' not in "".join(line for line in launched.stderr.splitlines() if line.lstrip().startswith("File "))  # torchrun's traceback alone
    assert no_leftovers(tmp_path, "model")


def test_a_raising_unit_callback_stops_before_the_next_unit(sharded, tmp_path):
    """What stops a healthy rank early once a peer failed: its unit_written callback raises, and
    write_units makes no further unit. The oracle that the next unit is never made: its weight
    holds a NaN, which raises DataError as soon as it is quantized (the control run shows it)."""
    model = tmp_path / "model"
    shutil.copytree(sharded, model)
    checkpoint = open_checkpoint(model)
    plan = plan_quantize(checkpoint, QuantizeOptions())
    units = [unit for unit in plan.units if unit.action == QUANTIZE][:2]
    poisoned = units[1].inputs[0]
    tensors = load_file(checkpoint.file(poisoned))
    tensors[poisoned][0, 0] = float("nan")
    save_file(tensors, checkpoint.file(poisoned), metadata={"format": "pt"})
    checkpoint = open_checkpoint(model)

    def writers(name: str):
        return open_writers([[spec for unit in units for spec in unit.outputs]], [tmp_path / name], {})

    class PeerFailed(Exception):
        pass

    written = []

    def peer_failed(unit) -> None:
        written.append(unit)
        raise PeerFailed

    with pytest.raises(PeerFailed):
        write_units(plan, checkpoint, units, writers("stopped.safetensors"), peer_failed)
    assert written == units[:1]
    with pytest.raises(DataError, match=f"{poisoned!r}.*NaN"):  # the control: unit 2 is made, and fails
        write_units(plan, checkpoint, units, writers("control.safetensors"), written.append)
    assert written == units[:1] * 2


def workers_of(pid: int) -> list[int]:
    """The child processes of pid, oldest first (--workers starts rank 0 first)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):  # state, ppid, ...; field 22 of stat is the start time
            children.append((int(fields[19]), int(entry.name)))
    return [child for _, child in sorted(children)]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    """64 float32 weights of 1024x1024 (256 MB): seconds of work, so a worker can be killed mid-run."""
    model = tmp_path_factory.mktemp("big") / "model"
    model.mkdir()
    ramp = torch.linspace(-3, 3, 1024 * 1024).reshape(1024, 1024)
    save_file({f"model.layers.{i}.mlp.down_proj.weight": ramp * (i + 1) for i in range(64)}, model / "model.safetensors")
    return model


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through Linux /proc")
def test_a_killed_worker_is_the_reported_failure_and_the_rest_stop(big_model, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, "-m", "nvfp4cli", "quantize", str(big_model), "-o", str(output), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        workers = []
        for _ in range(2400):  # both workers up and the shards begun: the work is under way
            workers = workers_of(process.pid)
            staged = [path for staging in tmp_path.glob(".out.nvfp4-tmp-*") for path in staging.glob("*.safetensors")]
            if len(workers) == 2 and len(staged) == 2 or process.poll() is not None:
                break
            time.sleep(0.05)
        assert process.poll() is None and len(workers) == 2, "the run ended before a worker could be killed"
        os.kill(workers[1], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1 and stdout == ""
    assert stderr.splitlines() == ["nvfp4: error: rank 1: worker process was killed by SIGKILL"]
    assert workers_of(process.pid) == [] and not Path(f"/proc/{workers[0]}").exists()  # rank 0 stopped too
    assert no_leftovers(tmp_path)


def test_usage_errors(tmp_path, monkeypatch):
    single = tmp_path / "one.safetensors"
    save_file({"fc.weight": torch.randn(16, 32)}, single)
    result = nvfp4("quantize", single, "--workers", 2)
    assert result.exit_code == 2 and "single .safetensors file is written by one process" in result.stderr
    assert nvfp4("quantize", SAMPLE, "--workers", 0).exit_code == 2
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    result = nvfp4("quantize", SAMPLE, "-o", tmp_path / "out", "--workers", 2)
    assert result.exit_code == 2 and "leave it out under torchrun" in result.stderr
    assert no_leftovers(tmp_path, "one.safetensors")


def test_ranks_use_rank0s_random_seed():
    """RS without --seed under torchrun: each rank draws a seed, all use rank 0's."""
    store = torch.distributed.HashStore()
    rank0, rank1 = (distributed.Group(rank, 2, store, torch.device("cpu")) for rank in (0, 1))
    assert rank0.shared_seed(123) == 123 and rank1.shared_seed(456) == 123
