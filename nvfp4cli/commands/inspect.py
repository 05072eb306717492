"""`nvfp4 inspect`: what a checkpoint holds, tensor by tensor, and how much NVFP4 saved."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import DEBUG_OPTION, JSON_OPTION, cli_errors, print_json, print_table

TENSOR_HEADERS = ("tensor", "shape", "dtype", "format", "global scale (1/pts)", "bytes")


def inspect(
    path: Path = typer.Argument(..., metavar="PATH", help="A .safetensors file, a *.safetensors.index.json, or a model directory."),
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """List every tensor (NVFP4 triples as one weight) with totals and the compression ratio."""
    with cli_errors(debug):
        from ..inspection import inspect_checkpoint
        from ..io import open_checkpoint

        checkpoint = open_checkpoint(path)
        report = inspect_checkpoint(checkpoint) | {"skipped_files": checkpoint.skipped_files}
        if json_output:
            print_json(report)
            return
        rows = [
            [row["name"], "x".join(map(str, row["shape"])), row["dtype"], row["format"], row.get("global_scale", ""), row["bytes"]]
            for row in report["tensors"]
        ]
        print_table(rows, headers=TENSOR_HEADERS, title=f"{report['path']} ({len(report['files'])} file(s))")
        totals = report["totals"]
        typer.echo("")
        print_table(
            [
                ["tensors", totals["tensors"]],
                ["quantized weights", totals["quantized"]],
                ["bytes as float (NVFP4 at bf16)", totals["bytes_float"]],
                ["bytes stored", totals["bytes_stored"]],
                ["compression ratio", f"{totals['ratio']:.2f}x" if totals["ratio"] else "-"],
            ],
            headers=("", ""),
        )
        if report["skipped_files"]:  # what quantize would leave out, and why
            typer.echo("")
            print_table([[item["file"], item["reason"]] for item in report["skipped_files"]], headers=("other weight file", "when converting"))
        if report["metadata"]:
            typer.echo("\nmetadata: " + ", ".join(f"{key}={value}" for key, value in report["metadata"].items()))
        if report["record"]:
            typer.echo(f"\nrecorded by {report['record'].get('producer')}: " + ", ".join(f"{k}={report['record'][k]}" for k in ("format", "mode", "scale_rule", "seed", "dtype") if k in report["record"]))
