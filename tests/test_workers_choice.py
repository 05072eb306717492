"""`--workers N` starts only the processes that pay for their start-up: a checkpoint too small
for more runs in this process (no worker started), with the choice in the report and the bytes
of a plain single-process run; on CUDA one process, whatever the size (one disk: the GPU process
already writes at its rate), unless NVFP4_WORKER_MIN_BYTES says otherwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nvfp4cli import runner
from nvfp4cli.io import open_checkpoint
from nvfp4cli.plan import QuantizeOptions, plan_quantize

from cli_runner import SAMPLE, nvfp4


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_a_small_checkpoint_runs_in_this_process_with_the_choice_reported(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.WORKER_MIN_BYTES_VARIABLE, raising=False)
    started = []
    monkeypatch.setattr(runner.distributed, "launch", lambda *args, **kwargs: started.append(args))  # an oracle: no process may start
    result = nvfp4("quantize", SAMPLE, "-o", tmp_path / "workers", "--workers", 4, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert started == [] and report["workers"] == 1 and report["workers_requested"] == 4
    assert "GB of input" in report["workers_reason"]
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "single").exit_code == 0
    assert digests(tmp_path / "workers") == digests(tmp_path / "single")
    table = nvfp4("quantize", SAMPLE, "-o", tmp_path / "table", "--workers", 4)
    assert table.exit_code == 0 and "workers asked for" in table.stdout and "GB of input" in table.stdout


# On CUDA workers grow with the input only when the variable gives the bytes per worker.
@pytest.mark.parametrize(("device", "min_bytes"), [("cpu", None), ("cpu", "10000"), ("cuda", "5000000000")])
def test_workers_grow_with_the_input_and_never_exceed_the_request_or_the_units(device, min_bytes, monkeypatch):
    monkeypatch.delenv(runner.WORKER_MIN_BYTES_VARIABLE, raising=False)
    if min_bytes is not None:
        monkeypatch.setenv(runner.WORKER_MIN_BYTES_VARIABLE, min_bytes)
    plan = plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions())
    per_worker = runner.min_bytes_per_worker(device)
    assert per_worker == (runner.CPU_MIN_BYTES_PER_WORKER if min_bytes is None else int(min_bytes))
    units = len(plan.units)
    for multiple, requested, expected in [(0, 4, 1), (1, 4, 1), (2, 4, 2), (3.5, 4, 3), (100, 4, 4), (100, 1, 1), (10**6, 10**6, units)]:
        monkeypatch.setattr(type(plan), "bytes_in", property(lambda self, m=multiple: int(m * per_worker)))
        used, reason = runner.workers_worth_starting(plan, requested, device)
        assert used == expected, (multiple, requested, reason)
        assert (reason == "as requested") == (used == requested)
    monkeypatch.setenv(runner.WORKER_MIN_BYTES_VARIABLE, "0")
    assert runner.workers_worth_starting(plan, 3, device) == (3, "as requested")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_on_cuda_one_process_converts_any_size_unless_the_variable_says_otherwise(device, monkeypatch):
    monkeypatch.delenv(runner.WORKER_MIN_BYTES_VARIABLE, raising=False)
    plan = plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions())
    assert len(plan.units) >= 3  # more workers could each get a unit: the one process is the rule's choice
    for size in (0, 10**9, 31_400_000_000, 10**15):  # up to a petabyte: no size pays a second process on one disk
        monkeypatch.setattr(type(plan), "bytes_in", property(lambda self, b=size: b))
        for requested in (2, 8, 10**6):
            assert runner.workers_worth_starting(plan, requested, device) == (1, runner.ONE_DISK_REASON)
        assert runner.workers_worth_starting(plan, 1, device) == (1, "as requested")
    assert runner.WORKER_MIN_BYTES_VARIABLE + "=0" in runner.ONE_DISK_REASON  # the reason names the way to force workers
    monkeypatch.setenv(runner.WORKER_MIN_BYTES_VARIABLE, "0")
    assert runner.workers_worth_starting(plan, 3, device) == (3, "as requested")
