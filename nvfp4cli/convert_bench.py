"""The whole conversion timed against its I/O floor and against llm-compressor: `nvfp4 bench
--checkpoint DIR`.

    report = bench_checkpoint(Path("model_dir"), device="cuda", peer_python="/tmp/llmc/bin/python")

Measured in one run, on the input in the page cache (it is read once, untimed, first):
- the floor: reading every input byte alone (as the conversion reads it), and writing the
  output's bytes alone (written and fsynced, as the conversion does): no conversion can beat
  the slower of the two;
- nvfp4: `nvfp4 quantize` in a fresh interpreter, as users run it: its wall time (start-up
  included), the conversion's own time, and its peak resident memory;
- llm-compressor's `model_free_ptq` with scheme NVFP4A16, where a Python interpreter that has
  it is given (it pins another compressed-tensors than this project, so it lives in its own
  environment), timed and measured the same way;
- the SQNR of each output against the input, over its quantized tensors (`nvfp4 diff`).

Peak memory is the child's own maximum resident set (wait4's rusage), so nothing is shared
with the process that measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .compare import compare_checkpoints
from .errors import DataError, UsageError
from .io import open_checkpoint
from .pipeline import read_all
from .plan import QuantizeOptions, plan_quantize

WRITE_PIECE = 64 * 2**20
PEER = "llm-compressor"
PEER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from llmcompressor import model_free_ptq
    source, target, device = sys.argv[1:4]
    start = time.perf_counter()
    model_free_ptq(source, target, scheme="NVFP4A16", ignore=["lm_head"], max_workers=1, device=device)
    print(json.dumps({"seconds": time.perf_counter() - start}))
    """
)


@dataclass(frozen=True)
class Contestant:
    """One tool's conversion of the checkpoint."""

    tool: str
    wall_s: float  # the whole command, interpreter start-up included
    convert_s: float  # the conversion alone, as the tool times it
    gbps: float  # input bytes over convert_s
    wall_gbps: float
    peak_rss_bytes: int
    sqnr_db: float | None  # of the output against the input, over its quantized tensors
    pct_of_floor: float  # the I/O floor's time over convert_s, in percent


@dataclass(frozen=True)
class Floor:
    read_s: float
    write_s: float
    bytes_in: int
    bytes_out: int

    @property
    def seconds(self) -> float:
        return max(self.read_s, self.write_s)


def _failure(command: list[str], code: int, stderr: str) -> DataError:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
    return DataError(f"{Path(command[0]).name} {' '.join(command[1:3])}: failed ({last})")


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak resident bytes, stdout) of a child; DataError with its last line of
    stderr if it fails. The peak is the child's own (wait4 reports its maximum resident set)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    streams: dict[str, str] = {}

    def drain(name: str, stream) -> None:  # both pipes at once, so a chatty child never blocks
        streams[name] = stream.read()

    readers = [threading.Thread(target=drain, args=item, daemon=True) for item in (("out", process.stdout), ("err", process.stderr))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, unlike getrusage's
    seconds = time.perf_counter() - start
    for reader in readers:
        reader.join()
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise _failure(command, code, streams["err"])
    return seconds, usage.ru_maxrss * 1024, streams["out"]


def io_floor(path: Path, bytes_out: int, scratch: Path, pin_memory: bool = False) -> Floor:
    """Read every stored tensor as the conversion does (after one untimed pass that puts the
    input in the page cache), then write bytes_out bytes to a file in scratch and fsync it."""
    checkpoint = open_checkpoint(path)
    names = checkpoint.tensor_names()
    read_all(checkpoint, names, pin_memory)  # into the page cache
    start = time.perf_counter()
    bytes_in = read_all(checkpoint, names, pin_memory)
    read_s = time.perf_counter() - start
    checkpoint.close()
    piece = os.urandom(min(WRITE_PIECE, max(bytes_out, 1)))
    target = scratch / "floor.bin"
    start = time.perf_counter()
    with open(target, "wb") as handle:
        for at in range(0, bytes_out, len(piece)):
            handle.write(piece[: bytes_out - at])
        handle.flush()
        os.fsync(handle.fileno())
    write_s = time.perf_counter() - start
    target.unlink()
    return Floor(read_s, write_s, bytes_in, bytes_out)


def _sqnr(reference: Path, output: Path) -> float | None:
    return compare_checkpoints(reference, output).summary()["sqnr_db"]


def _contestant(tool: str, wall_s: float, convert_s: float, peak: int, sqnr: float | None, floor: Floor) -> Contestant:
    return Contestant(tool, wall_s, convert_s, floor.bytes_in / 1e9 / convert_s, floor.bytes_in / 1e9 / wall_s, peak, sqnr, 100.0 * floor.seconds / convert_s)


def run_nvfp4(path: Path, output: Path, device: str, extra: tuple[str, ...] = ()) -> tuple[float, int, dict]:
    command = [sys.executable, "-m", "nvfp4cli", "quantize", str(path), "-o", str(output), "--device", device, "--json", *extra]
    wall_s, peak, stdout = run_measured(command)
    return wall_s, peak, json.loads(stdout)


def run_peer(peer_python: str, path: Path, output: Path, device: str) -> tuple[float, int, float]:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    wall_s, peak, stdout = run_measured([peer_python, "-c", PEER_SCRIPT, str(path), str(output), device], env)
    return wall_s, peak, json.loads(stdout.strip().splitlines()[-1])["seconds"]


def bench_checkpoint(path: Path, *, device: str = "cpu", peer_python: str | None = None, scratch: Path | None = None, on_step=lambda step: None) -> dict:
    """The floor, nvfp4 and (with peer_python) llm-compressor on one checkpoint; a JSON-able dict."""
    if peer_python is not None and not Path(peer_python).is_file():
        raise UsageError(f"--peer-python {peer_python}: no such interpreter")
    plan = plan_quantize(open_checkpoint(path), QuantizeOptions(device=device))
    rows: list[Contestant] = []
    skipped: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nvfp4-bench-", dir=scratch) as tmp:
        work = Path(tmp)
        on_step("I/O floor")
        floor = io_floor(path, plan.bytes_out, work, pin_memory=device.startswith("cuda"))
        on_step("nvfp4 quantize")
        wall_s, peak, report = run_nvfp4(path, work / "nvfp4", device)
        on_step("SQNR of nvfp4's output")
        rows.append(_contestant("nvfp4", wall_s, report["seconds"], peak, _sqnr(path, work / "nvfp4"), floor))
        if peer_python is None:
            skipped.append({"tool": PEER, "reason": "no --peer-python given (an interpreter with llmcompressor installed)"})
        else:
            on_step(f"{PEER} model_free_ptq")
            wall_s, peak, seconds = run_peer(peer_python, path, work / "peer", device)
            on_step(f"SQNR of {PEER}'s output")
            rows.append(_contestant(f"{PEER} (peer)", wall_s, seconds, peak, _sqnr(path, work / "peer"), floor))
    return {
        "checkpoint": str(path),
        "device": device,
        "bytes_in": floor.bytes_in,
        "bytes_out": floor.bytes_out,
        "floor": asdict(floor) | {"seconds": floor.seconds, "read_gbps": floor.bytes_in / 1e9 / floor.read_s, "write_gbps": floor.bytes_out / 1e9 / floor.write_s},
        "results": [asdict(row) for row in rows],
        "skipped": skipped,
    }
