"""Interrupted conversions: SIGINT, SIGTERM and SIGKILL in the middle of `nvfp4 quantize`, and
what a later run does with what a killed one left.

A run writes into a staging sibling `.X.nvfp4-tmp-<host>-<pid>-<random>` of its output X and
renames it to X when complete. Ctrl-C (SIGINT) and SIGTERM remove the staging at once; SIGKILL cannot be
caught, so the staging stays until the next run writing X, which removes it once its process is
dead. Either way nothing appears at X until a run completes.

The run is the real CLI in a child process, paused after its first tensor is written (it waits
there until signalled: tests/paused_run.py), so the signal always lands mid-write, however fast
the machine is.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nvfp4cli.staging import HOST

from cli_runner import nvfp4
from paused_run import PausedRun


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    ramp = torch.linspace(-3, 3, 64 * 256).reshape(64, 256)
    save_file({f"model.layers.{i}.mlp.down_proj.weight": ramp * (i + 1) for i in range(8)}, model / "model.safetensors")
    return model


def paused_quantize(model: Path, output: Path) -> tuple[PausedRun, Path]:
    """A quantize run paused mid-write, and its staging directory (a tensor already in it)."""
    run = PausedRun.start(["quantize", model, "-o", output, "--json"], output.parent)
    run.wait_until_paused()
    (staging,) = output.parent.glob(f".{output.name}.nvfp4-tmp-*")
    assert (staging / "model.safetensors").stat().st_size > 0
    return run, staging


def leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}."))


def rerun(model: Path, output: Path, *extra: str):
    result = nvfp4("quantize", model, "-o", output, "--json", *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("sent,status,said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_mid_conversion_leaves_nothing_and_a_rerun_succeeds(model, tmp_path, sent, status, said):
    before = digest(model)
    output = tmp_path / "out"
    run, _ = paused_quantize(model, output)
    run.process.send_signal(sent)
    returncode, _, stderr = run.finish()
    assert returncode == status, stderr
    assert stderr.strip().splitlines() == [f"nvfp4: {said}"]
    assert not output.exists() and leftovers(output) == []
    assert digest(model) == before
    rerun(model, output)
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.safetensors"]
    assert leftovers(output) == []


def test_sigkill_leaves_only_a_marked_staging_that_the_next_run_removes(model, tmp_path):
    before = digest(model)
    output = tmp_path / "out"
    run, staging = paused_quantize(model, output)
    run.process.kill()
    assert run.finish()[0] == -signal.SIGKILL
    assert not output.exists()
    assert leftovers(output) == [staging.name]
    assert staging.name.startswith(f".out.nvfp4-tmp-{HOST}-{run.process.pid}-")
    assert digest(model) == before

    rerun(model, output)
    assert leftovers(output) == []
    uninterrupted = tmp_path / "uninterrupted"
    rerun(model, uninterrupted)
    assert digest(output) == digest(uninterrupted)


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def small_model(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    save_file({"model.layers.0.mlp.up_proj.weight": torch.randn(32, 64, generator=torch.Generator().manual_seed(0))}, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return model


def test_leftovers_of_live_runs_and_other_machines_are_kept(small_model, tmp_path, dead_pid, live_pid):
    output = tmp_path / "out"
    kept = [f".out.nvfp4-tmp-{HOST}-{live_pid}-abc123", f".out.nvfp4-tmp-some.other.host-{dead_pid}-abc123", f".outer.nvfp4-tmp-{HOST}-{dead_pid}-abc123"]
    removed = [f".out.nvfp4-tmp-{HOST}-{dead_pid}-abc123", f".out.nvfp4-old-{HOST}-{dead_pid}-xyz789"]
    for name in kept + removed:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    rerun(small_model, output)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(kept)


def test_old_output_moved_aside_by_a_killed_force_run_comes_back(small_model, tmp_path, dead_pid):
    # SIGKILL between moving the old output aside and the final rename (a window of two renames)
    output = tmp_path / "out"
    retired = tmp_path / f".out.nvfp4-old-{HOST}-{dead_pid}-xyz789"
    (retired / "out").mkdir(parents=True)
    (retired / "out" / "old.txt").write_text("the previous output")
    result = nvfp4("quantize", small_model, "-o", output)
    assert result.exit_code == 2 and "exists; pass --force" in result.stderr  # it is back, so not overwritten without --force
    assert (output / "old.txt").read_text() == "the previous output" and not retired.exists()
    rerun(small_model, output, "--force")
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.safetensors"]
    assert leftovers(output) == []
