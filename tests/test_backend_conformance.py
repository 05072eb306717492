"""Every registered backend against the Backend Protocol and the reference backend
(tests/backend_conformance.py); Triton runs in a fresh Python under TRITON_INTERPRET=1."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend_conformance import check_backend
from nvfp4cli.kernels import BACKENDS

TESTS = Path(__file__).parent


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_conforms_to_the_protocol_and_the_reference(name):
    if name != "triton":
        check_backend(name)
        return
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    # Triton picks the interpreter when first imported, and other test modules import it compiled.
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    code = "from backend_conformance import check_backend; check_backend('triton')"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=TESTS.parent)
    assert run.returncode == 0, run.stderr[-4000:]
