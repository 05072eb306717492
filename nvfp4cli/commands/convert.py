"""`nvfp4 convert`: re-lay out an NVFP4 checkpoint in the other format (and --fix what can be fixed)."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import names
from .common import DEBUG_OPTION, FORCE_OPTION, JSON_OPTION, MAX_SHARD_SIZE_OPTION, choices, cli_errors, note_skipped_files, parse_size, print_table, progress_bar, show_report

OutputFormat = choices("OutputFormat", names.OUTPUT_FORMATS)
FloatDtype = choices("FloatDtype", names.FLOAT_DTYPES)


def convert(
    input_path: Path = typer.Argument(..., metavar="IN", help="An NVFP4 .safetensors file, index or model directory (compressed-tensors or ModelOpt, from any tool)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (for a file input) or directory."),
    fmt: OutputFormat = typer.Option(OutputFormat["compressed-tensors"], "--format", help="compressed-tensors (vLLM, transformers) or modelopt (vLLM, SGLang, TensorRT-LLM)."),
    fix: bool = typer.Option(False, "--fix", help="Give fused layers one global scale (block scales rescaled, codes kept) and store NVFP4 routers and embeddings in float."),
    dtype: FloatDtype = typer.Option(FloatDtype.bf16, "--dtype", help="Float type of what --fix stores in float."),
    max_shard_size: str = MAX_SHARD_SIZE_OPTION,
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Copy FP4 codes and block scales byte for byte under the other format's names, tensor-scale
    convention (1/pts or pts) and config. Nothing is written when something cannot be converted."""
    with cli_errors(debug):
        from .. import runner
        from ..api import FLOAT_DTYPES
        from ..io import open_checkpoint
        from ..relayout import ConvertOptions, measure_repairs, plan_convert

        max_shard_bytes = parse_size(max_shard_size)
        checkpoint = open_checkpoint(input_path)
        conversion = plan_convert(checkpoint, ConvertOptions(fmt.value, fix, FLOAT_DTYPES[dtype.value]))
        plan = conversion.plan
        note_skipped_files(plan.skipped_files)
        with progress_bar("convert", plan.bytes_in, plan.tensors_in, json_output) as progress:
            report = runner.run(plan, output, checkpoint=checkpoint, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
        repairs = measure_repairs(conversion, checkpoint, open_checkpoint(output))
        sqnrs = [row["min_sqnr_db"] for row in repairs if row["min_sqnr_db"] is not None]
        report |= {"fix": fix, "repairs": repairs, "min_sqnr_db": min(sqnrs) if sqnrs else None, "dequantized": conversion.dequantized}
        show_report(report, json_output, f"converted to {output} ({fmt.value})")
        if not json_output and (repairs or conversion.dequantized):
            typer.echo("")
            rows = [[name, f"one scale for {row['group']}", "equal" if sqnr is None else f"{sqnr:.2f}"] for row in repairs for name, sqnr in row["sqnr_db"].items()]
            rows += [[name, "stored in float", "-"] for name in conversion.dequantized]
            print_table(rows, headers=("weight", "repair", "SQNR vs input (dB)"), title="repairs (--fix)")
