"""The Triton backend on CPU: tests/triton_interpreter_checks.py run in a fresh Python with
TRITON_INTERPRET=1 (Triton picks the interpreter when first imported, and other test modules
import it compiled). tests/gpu/test_triton_gpu.py runs the compiled kernels on a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

CHECKS = Path(__file__).with_name("triton_interpreter_checks.py")


def test_triton_backend_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=CHECKS.parent.parent)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], run.stdout[-2000:]
