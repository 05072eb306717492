"""`nvfp4 dequantize`: an NVFP4 checkpoint (compressed-tensors or ModelOpt) back to float."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .. import convert
from ..checkpoint import open_checkpoint, parse_size
from .common import DEBUG_HELP, cli_errors, print_json
from .quantize import JSON_HELP, print_report, run_with_progress

FloatDtype = Enum("FloatDtype", {name: name for name in convert.FLOAT_DTYPES}, type=str)


def dequantize(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An NVFP4 .safetensors file, index or model directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (for a file input) or directory."),
    dtype: FloatDtype = typer.Option(FloatDtype.bf16, "--dtype", help="Float type of the dequantized weights; other tensors keep theirs."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Largest output shard of a directory output."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Dequantize every NVFP4 weight (x = e2m1 * block scale * tensor scale); copy the rest."""
    with cli_errors(debug):
        max_shard_bytes = parse_size(max_shard_size)
        plan = convert.plan_dequantize(open_checkpoint(input_path), dtype.value)
        report = run_with_progress(plan, output, force, max_shard_bytes, quiet=json_output)
        if json_output:
            print_json(report)
        else:
            print_report(report, f"dequantized to {output}")
