"""`nvfp4 dequantize`: a quantized checkpoint (NVFP4 in either format) back to float."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from .. import names
from .common import DEBUG_OPTION, FORCE_OPTION, JSON_OPTION, MAX_SHARD_SIZE_OPTION, choices, cli_errors, join_torchrun, note_skipped_files, parse_size, progress_bar, show_report

FloatDtype = choices("FloatDtype", names.FLOAT_DTYPES)


def dequantize(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An NVFP4 .safetensors file, index or model directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (for a file input) or directory."),
    dtype: FloatDtype = typer.Option(FloatDtype.bf16, "--dtype", help="Float type of the dequantized weights; other tensors keep theirs."),
    max_shard_size: str = MAX_SHARD_SIZE_OPTION,
    device: str = typer.Option("cpu", "--device", help="Where to decode: cpu, or cuda (the same bytes)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, metavar="N", help="Convert with N local processes on torch.distributed (gloo): same tensors. Under torchrun, leave it out."
    ),
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Dequantize every NVFP4 weight (x = e2m1 * block scale * tensor scale); copy the rest."""
    with cli_errors(debug), contextlib.ExitStack() as stack:
        from .. import runner
        from ..api import FLOAT_DTYPES
        from ..io import open_checkpoint
        from ..plan import plan_dequantize

        group = join_torchrun(stack, workers, device)
        reporter = group is None or group.rank == 0  # under torchrun rank 0 speaks for all
        with group.guard() if group is not None else contextlib.nullcontext():
            max_shard_bytes = parse_size(max_shard_size)
            checkpoint = open_checkpoint(input_path)
            plan = plan_dequantize(checkpoint, FLOAT_DTYPES[dtype.value], device)
        if reporter:
            note_skipped_files(plan.skipped_files)
        with progress_bar("dequantize", plan.bytes_in, plan.tensors_in, json_output or not reporter) as progress:
            report = runner.run(plan, output, checkpoint=checkpoint, group=group, workers=workers, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
        if reporter:
            show_report(report, json_output, f"dequantized to {output}")
