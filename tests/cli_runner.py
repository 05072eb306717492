"""`nvfp4` run in this process, for the CLI tests, and the sample checkpoint they convert."""

from pathlib import Path

from typer.testing import CliRunner

from nvfp4cli.cli import app

SAMPLE = Path(__file__).resolve().parent.parent / "sample_ckpts" / "tiny-llama"


def nvfp4(*args: object):
    """The click Result of `nvfp4 ARGS` (each argument passed as str)."""
    return CliRunner().invoke(app, [str(arg) for arg in args])
