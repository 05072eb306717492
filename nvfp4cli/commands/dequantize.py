"""`nvfp4 dequantize`: an NVFP4 checkpoint (compressed-tensors or ModelOpt) back to float."""

from __future__ import annotations

import contextlib
from enum import Enum
from functools import partial
from pathlib import Path

import typer

from .. import convert
from ..api import FLOAT_DTYPES
from ..checkpoint import open_checkpoint, parse_size
from .common import DEBUG_OPTION, cli_errors
from .quantize import FORCE_OPTION, JSON_OPTION, MAX_SHARD_SIZE_OPTION, join_torchrun, run_with_progress, show_report

FloatDtype = Enum("FloatDtype", {name: name for name in FLOAT_DTYPES}, type=str)


def dequantize(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An NVFP4 .safetensors file, index or model directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (for a file input) or directory."),
    dtype: FloatDtype = typer.Option(FloatDtype.bf16, "--dtype", help="Float type of the dequantized weights; other tensors keep theirs."),
    max_shard_size: str = MAX_SHARD_SIZE_OPTION,
    workers: int | None = typer.Option(
        None, "--workers", min=1, metavar="N", help="Convert with N local processes on torch.distributed (gloo): same tensors. Under torchrun, leave it out."
    ),
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Dequantize every NVFP4 weight (x = e2m1 * block scale * tensor scale); copy the rest."""
    with cli_errors(debug), contextlib.ExitStack() as stack:
        group = join_torchrun(stack, workers, "cpu")
        reporter = group is None or group.rank == 0  # under torchrun rank 0 speaks for all
        replan = partial(convert.plan_dequantize, dtype=dtype.value)  # --workers processes plan with it too
        with group.guard() if group is not None else contextlib.nullcontext():
            max_shard_bytes = parse_size(max_shard_size)
            plan = replan(open_checkpoint(input_path))
        report = run_with_progress(plan, output, force, max_shard_bytes, json_output or not reporter, group=group, workers=workers, replan=replan)
        if reporter:
            show_report(report, json_output, f"dequantized to {output}")
