"""`nvfp4 verify`: check an NVFP4 checkpoint from any tool before an engine loads it."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import names
from .common import DEBUG_OPTION, JSON_OPTION, choices, cli_errors, print_json, print_table

Target = choices("Target", names.VERIFY_TARGETS)


def verify(
    path: Path = typer.Argument(..., metavar="PATH", help="A .safetensors file, a *.safetensors.index.json, or a model directory."),
    target: Target = typer.Option(Target.vllm, "--target", help="The engine whose loader is checked: vllm, transformers or trtllm."),
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Report what is wrong with an NVFP4 checkpoint, one line per finding (docs/verify.md).

    Exit 0 when clean, 1 when something was found, 2 when the checkpoint cannot be read."""
    with cli_errors(debug):
        from ..verify import describe, verify as verify_checkpoint

        report = verify_checkpoint(describe(path), target.value)
        if json_output:
            print_json(report)
        else:
            summary = report["summary"]
            title = f"{report['path']}: {report['format'] or 'no NVFP4'}, {summary['nvfp4_weights']} NVFP4 weight(s), {summary['fused_groups']} fused group(s), target {report['target']}"
            if report["findings"]:
                rows = [[finding["tensor"], finding["check"], finding["message"]] for finding in report["findings"]]
                print_table(rows, headers=("tensor", "check", "finding"), title=title)
                typer.echo(f"\n{summary['findings']} finding(s): " + ", ".join(f"{check} {count}" for check, count in summary["by_check"].items()))
            else:
                typer.echo(f"{title}\nclean" + ("" if summary["config_checked"] else " (a lone file: no config to check)"))
    if report["findings"]:
        raise typer.Exit(1)
