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


def test_the_disk_is_synced_beside_the_writer_which_never_waits_for_it(tmp_path, monkeypatch):
    """The disk is handed the written bytes during the run (fdatasync every SYNC_BYTES) on a
    thread of its own: the first sync is held until every tensor is written, which could not
    happen if the writer waited for it; the files are unchanged."""
    import os

    from nvfp4cli import execute

    plain, _ = both_ways(lambda checkpoint: plan_quantize(checkpoint, QuantizeOptions()), SAMPLE, tmp_path / "a")
    expected = sum(len(unit.outputs) for unit in plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions()).units)
    all_written, written, syncs = threading.Event(), [], []
    write, fdatasync = SafetensorsWriter.write, os.fdatasync

    def counted_write(self, name, tensor):
        write(self, name, tensor)
        written.append(name)
        if len(written) == expected:
            all_written.set()

    def held_sync(fd):
        syncs.append((threading.current_thread().name, all_written.wait(30) if not syncs else all_written.is_set()))
        fdatasync(fd)

    monkeypatch.setattr(SafetensorsWriter, "write", counted_write)
    monkeypatch.setattr(os, "fdatasync", held_sync)
    monkeypatch.setattr(execute, "SYNC_BYTES", 100_000)
    _, overlapped = both_ways(lambda checkpoint: plan_quantize(checkpoint, QuantizeOptions()), SAMPLE, tmp_path / "b")
    assert overlapped == plain
    assert len(written) == 2 * expected  # the plain loop's writes, then the overlapped run's
    assert syncs and syncs[0] == ("nvfp4-disk-sync", True)  # released by the writes, not by the timeout
    assert {thread for thread, _ in syncs} == {"nvfp4-disk-sync"}


def test_a_failed_disk_sync_stops_the_run_naming_the_file(tmp_path, monkeypatch):
    import errno
    import os

    from nvfp4cli import execute

    def failing(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)
    monkeypatch.setattr(execute, "SYNC_BYTES", 100_000)
    with pytest.raises(OSError) as caught:
        run(plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions()), tmp_path / "out", overlap=True, max_shard_bytes=200_000)
    assert caught.value.errno == errno.EIO and caught.value.filename.startswith(str(tmp_path / "out" / "model"))  # the user's path, a shard
    assert not list(tmp_path.iterdir())  # nothing left, staging included


def test_disk_sync_coalesces_requests_and_syncs_nothing_below_its_threshold(tmp_path, monkeypatch):
    """A file is synced once `every` bytes went to it since it was last asked for; requests made
    while a sync runs are served by one more sync; stop leaves the rest to close's fsync."""
    import os

    files = [tmp_path / name for name in ("a", "b")]
    for path in files:
        path.write_bytes(b"x")
    started, release, synced = threading.Event(), threading.Event(), []
    fdatasync = os.fdatasync

    def held(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").exists() else fd)
        started.set()
        release.wait(30)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", held)
    disk = pipeline.DiskSync(100)
    disk.start()
    disk.wrote(files[0], 99)  # below the threshold: no sync
    disk.wrote(files[0], 1)  # 100: a sync of a, held
    assert started.wait(30)
    for _ in range(3):  # asked three times each while the first sync runs: served by one sync each
        disk.wrote(files[0], 100)
        disk.wrote(files[1], 150)
    release.set()
    disk.wrote(files[1], 10)  # below the threshold again
    deadline = threading.Event()
    while len(synced) < 3 and not deadline.wait(0.01):
        pass
    disk.stop()
    assert len(synced) == 3
    if Path("/proc/self/fd").exists():
        assert synced == [str(files[0]), str(files[0]), str(files[1])]


def test_stage_seconds_are_recorded_only_when_asked():
    """pipeline.STAGES: each thread's stages with one call a unit (a write a tensor); nothing
    recorded, and the shared no-op context, when no benchmark asked."""
    units = units_of([10] * 5)

    def make(unit, raw):
        return {unit.inputs[0]: torch.zeros(1), unit.inputs[0] + ".b": torch.zeros(2)}

    assert pipeline.timed("make: make") is pipeline.timed("write: write")  # off: nothing made per call
    stages = pipeline.Stages(sync_device=True)  # no GPU given: nothing to wait for
    pipeline.STAGES = stages
    try:
        pipeline.run_units(units, lambda unit: {}, make, lambda name, tensor: None, lambda unit: None)
    finally:
        pipeline.STAGES = None
    calls = stages.calls
    assert calls["read: read"] == calls["make: make"] == calls["make: wait for the reader"] == calls["make: hand to the writer"] == 5
    assert calls["write: write"] == 10 and calls["make: wait for the last writes"] == 1
    assert all(seconds >= 0 for seconds in stages.seconds.values()) and set(stages.seconds) == set(calls)


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
