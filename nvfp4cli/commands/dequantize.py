"""`nvfp4 dequantize`: an NVFP4 checkpoint (compressed-tensors or ModelOpt) back to float."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .. import convert
from ..api import FLOAT_DTYPES
from ..checkpoint import open_checkpoint, parse_size
from .common import DEBUG_OPTION, cli_errors
from .quantize import FORCE_OPTION, JSON_OPTION, MAX_SHARD_SIZE_OPTION, run_with_progress, show_report

FloatDtype = Enum("FloatDtype", {name: name for name in FLOAT_DTYPES}, type=str)


def dequantize(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An NVFP4 .safetensors file, index or model directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (for a file input) or directory."),
    dtype: FloatDtype = typer.Option(FloatDtype.bf16, "--dtype", help="Float type of the dequantized weights; other tensors keep theirs."),
    max_shard_size: str = MAX_SHARD_SIZE_OPTION,
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Dequantize every NVFP4 weight (x = e2m1 * block scale * tensor scale); copy the rest."""
    with cli_errors(debug):
        plan = convert.plan_dequantize(open_checkpoint(input_path), dtype.value)
        report = run_with_progress(plan, output, force, parse_size(max_shard_size), quiet=json_output)
        show_report(report, json_output, f"dequantized to {output}")
