"""Start-up: `nvfp4 --help` and `nvfp4 inspect` load no module they do not use (Triton,
transformers, the peers), so a command starts in the time it takes to import torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cli_runner import SAMPLE

HEAVY = ("triton", "transformers", "torchao", "compressed_tensors", "llmcompressor", "matplotlib")
PROBE = textwrap.dedent(
    """
    import sys
    from nvfp4cli.cli import app
    try:
        app(sys.argv[1:], prog_name="nvfp4")
    except SystemExit:
        pass
    print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
    """
)


@pytest.mark.parametrize("args", [["--help"], ["quantize", "--help"], ["inspect", str(SAMPLE), "--json"]], ids=["help", "quantize-help", "inspect"])
def test_a_light_command_imports_no_heavy_module(args):
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.strip().splitlines()[-1].split())
    assert "nvfp4cli" in loaded and "torch" in loaded  # the probe saw the modules
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
