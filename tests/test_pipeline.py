"""The overlapped conversion (pipeline.py) against the plain loop: the same bytes for every
sample checkpoint, format, mode and action; the same errors; bounded read-ahead and memory."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nvfp4cli import pipeline
from nvfp4cli.errors import DataError
from nvfp4cli.execute import run
from nvfp4cli.io import SafetensorsWriter, open_checkpoint
from nvfp4cli.plan import QuantizeOptions, Unit, plan_dequantize, plan_quantize
from nvfp4cli.format import Mode

from cli_runner import SAMPLE
from paused_run import PausedRun

SAMPLES = SAMPLE.parent


def digests(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def both_ways(make_plan, source: Path, tmp_path: Path, output_name: str = "out") -> tuple[dict, dict]:
    """The output files' digests written with and without overlap, each from a fresh checkpoint."""
    results = []
    for overlap in (False, True):
        output = tmp_path / f"{overlap}" / output_name
        output.parent.mkdir(parents=True)
        run(make_plan(open_checkpoint(source)), output, overlap=overlap, max_shard_bytes=200_000)
        results.append({name.split("/", 1)[-1]: digest for name, digest in digests(output).items()})
    return results[0], results[1]


@pytest.mark.parametrize("sample", ["tiny-llama", "qwen3-moe", "gpt-oss-mxfp4", "deepseek-v3-fp8", "llama-fp8-ct"])
@pytest.mark.parametrize("options", [QuantizeOptions(), QuantizeOptions(Mode.RS, seed=7, fmt="modelopt")], ids=["rn-ct", "rs-modelopt"])
def test_overlapped_quantize_writes_the_bytes_of_the_plain_loop(sample, options, tmp_path):
    plain, overlapped = both_ways(lambda checkpoint: plan_quantize(checkpoint, options), SAMPLES / sample, tmp_path)
    assert len(plain) > 1 and overlapped == plain  # several shards at a 200 kB limit


def test_overlapped_dequantize_and_single_file_match_the_plain_loop(tmp_path):
    quantized = tmp_path / "q"
    run(plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions()), quantized, overlap=False)
    plain, overlapped = both_ways(lambda checkpoint: plan_dequantize(checkpoint, torch.bfloat16), quantized, tmp_path / "d")
    assert plain and overlapped == plain
    single = tmp_path / "one.safetensors"
    save_file(load_file(SAMPLE / "model-00001-of-00002.safetensors"), single)
    plain, overlapped = both_ways(lambda checkpoint: plan_quantize(checkpoint, QuantizeOptions()), single, tmp_path / "f", "out.safetensors")
    assert overlapped == plain and list(plain) == ["out.safetensors"]


def test_a_truncated_input_raises_the_same_error_either_way(tmp_path):
    """A shard cut short after the run opened it (its header promised more): the read-ahead
    raises the error where the plain loop does, naming the file and the tensor."""
    model = tmp_path / "model"
    model.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.randn(64, 128, generator=g) for i in range(4)}, model / "model.safetensors")
    data = (model / "model.safetensors").read_bytes()
    errors = []
    for overlap in (False, True):
        (model / "model.safetensors").write_bytes(data)
        checkpoint = open_checkpoint(model)
        (model / "model.safetensors").write_bytes(data[: len(data) - 1000])  # the last tensor cut short
        with pytest.raises(DataError) as caught:
            run(plan_quantize(checkpoint, QuantizeOptions()), tmp_path / f"out{overlap}", checkpoint=checkpoint, overlap=overlap)
        errors.append(str(caught.value))
        assert not (tmp_path / f"out{overlap}").exists()
    assert errors[0] == errors[1] and "cut short" in errors[0] and "model.layers.3.mlp.up_proj.weight" in errors[0]


def test_a_failed_write_stops_the_run_with_its_error(tmp_path, monkeypatch):
    writes = []
    original = SafetensorsWriter.write

    def failing(self, name, tensor):
        writes.append(name)
        if len(writes) == 3:
            raise OSError(28, "No space left on device", str(self.path))
        original(self, name, tensor)

    monkeypatch.setattr(SafetensorsWriter, "write", failing)
    plan = plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions())
    with pytest.raises(OSError, match="No space left"):
        run(plan, tmp_path / "out")
    assert len(writes) == 3 and not (tmp_path / "out").exists()


def units_of(sizes: list[int]) -> list[Unit]:
    return [Unit("copy", (f"t{i}",), (), size, 1) for i, size in enumerate(sizes)]


def test_read_ahead_stays_within_one_unit_or_the_byte_budget():
    """The reader runs ahead by one large unit, or several small ones up to the budget, never
    more: counted with an oracle of units read and not yet made."""
    lock = threading.Lock()
    state = {"read": 0, "made": 0, "most_ahead": 0, "most_ahead_bytes": 0}
    sizes = [100] * 6 + [10] * 20 + [100] * 3
    units = units_of(sizes)

    def read(unit):
        with lock:
            state["read"] += 1
            ahead = units[state["made"] : state["read"]]
            state["most_ahead"] = max(state["most_ahead"], len(ahead))
            if len(ahead) > 2:  # the unit being made, and at least two read ahead: within the budget
                state["most_ahead_bytes"] = max(state["most_ahead_bytes"], sum(u.bytes_in for u in ahead[1:]))
        return {}

    def make(unit, raw):
        threading.Event().wait(0.002)  # give the reader time to run ahead if it could
        with lock:
            state["made"] += 1
        return {unit.inputs[0]: torch.zeros(1)}

    written, made = [], []
    pipeline.run_units(units, read, make, lambda name, tensor: written.append(name), made.append, ahead_bytes=50)
    assert written == [u.inputs[0] for u in units] and made == units
    # the unit being made + one large unit, or + small ones within 50 bytes
    assert 2 <= state["most_ahead"] <= 1 + 50 // 10
    assert 0 < state["most_ahead_bytes"] <= 50


def test_errors_in_make_and_in_the_callback_stop_the_pipeline():
    units = units_of([10] * 8)
    made_units = []

    def make(unit, raw):
        if unit is units[4]:
            raise DataError("tensor 't4': holds NaN")
        return {unit.inputs[0]: torch.zeros(1)}

    with pytest.raises(DataError, match="t4"):
        pipeline.run_units(units, lambda unit: {}, make, lambda name, tensor: None, made_units.append)
    assert made_units == units[:4]

    class Stop(Exception):
        pass

    def stop_after_first(unit):
        raise Stop

    made = []
    with pytest.raises(Stop):
        pipeline.run_units(units, lambda unit: {}, lambda unit, raw: made.append(unit) or {}, lambda name, tensor: None, stop_after_first)
    assert made == units[:1]  # the callback runs before the next unit is made


MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nvfp4cli.io import open_checkpoint
    from nvfp4cli.execute import run
    from nvfp4cli.plan import QuantizeOptions, plan_quantize

    def status_kb(key):  # VmHWM, unlike ru_maxrss, is not inherited from the parent process
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    resident = status_kb("VmRSS:")
    run(plan_quantize(open_checkpoint(sys.argv[1]), QuantizeOptions()), Path(sys.argv[2]), overlap=sys.argv[3] == "1")
    print((status_kb("VmHWM:") - resident) * 1024)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for resident memory")
def test_overlap_holds_about_two_units_more_than_the_plain_loop(tmp_path):
    tensor_bytes = 2048 * 2048 * 2  # 16 bf16 tensors of 8 MB (128 MB)
    g = torch.Generator().manual_seed(0)
    save_file({f"layers.{i}.fc.weight": torch.randn(2048, 2048, generator=g).to(torch.bfloat16) for i in range(16)}, tmp_path / "m.safetensors")

    def growth(overlap: int) -> int:
        args = [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "m.safetensors"), str(tmp_path / f"o{overlap}.safetensors"), str(overlap)]
        return int(subprocess.run(args, capture_output=True, text=True, check=True).stdout)

    plain, overlapped = growth(0), growth(1)
    assert overlapped < plain + 4 * tensor_bytes, (plain, overlapped)  # 16 MiB read ahead, outputs behind
    assert overlapped < 16 * tensor_bytes // 2, overlapped  # far from holding the model


def test_the_writer_flushes_to_disk_as_it_goes_with_the_same_bytes(tmp_path, monkeypatch):
    """The write-behind thread hands the disk its bytes during the run (fdatasync every
    SYNC_BYTES), so that close's fsync has little left; the files are unchanged."""
    from nvfp4cli import execute, io

    plain, _ = both_ways(lambda checkpoint: plan_quantize(checkpoint, QuantizeOptions()), SAMPLE, tmp_path / "a")
    synced = []
    fdatasync = io.os.fdatasync
    monkeypatch.setattr(io.os, "fdatasync", lambda fd: synced.append(fd) or fdatasync(fd))
    monkeypatch.setattr(execute, "SYNC_BYTES", 100_000)
    _, overlapped = both_ways(lambda checkpoint: plan_quantize(checkpoint, QuantizeOptions()), SAMPLE, tmp_path / "b")
    assert overlapped == plain
    assert len(synced) >= 5  # 1.9 MB written, one flush per 100 kB or so, in every shard


@pytest.mark.parametrize("sent,status,said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_mid_pipeline_unwinds_and_leaves_nothing(tmp_path, sent, status, said):
    """tests/test_signals.py with tensors large enough for the overlap (2 MB each): the writer
    thread is paused after its first tensor while the others wait on it; the signal still
    unwinds the run and removes the staging directory."""
    model = tmp_path / "model"
    model.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({f"model.layers.{i}.mlp.down_proj.weight": torch.randn(512, 1024, generator=g) for i in range(6)}, model / "model.safetensors")
    output = tmp_path / "out"
    paused = PausedRun.start(["quantize", model, "-o", output, "--json"], tmp_path)
    paused.wait_until_paused()
    assert list(tmp_path.glob(".out.nvfp4-tmp-*"))  # mid-write
    paused.process.send_signal(sent)
    returncode, _, stderr = paused.finish()
    assert returncode == status and stderr.strip().splitlines() == [f"nvfp4: {said}"], stderr
    assert not output.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_dequantize_on_cuda_without_a_gpu_is_a_one_line_usage_error(tmp_path):
    from cli_runner import nvfp4

    result = nvfp4("dequantize", SAMPLES / "llama-fp8-ct", "-o", tmp_path / "out", "--device", "cuda")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0 and "no CUDA GPU" in result.stderr
    assert not (tmp_path / "out").exists()
