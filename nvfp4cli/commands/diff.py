"""`nvfp4 diff`: compare two checkpoints tensor by tensor (SQNR, errors, code agreement).

Exit status as diff(1): 0 when every tensor passes (or no --min-sqnr), 1 when the --min-sqnr
gate fails (a tensor below it, a shape mismatch, or no tensor to compare), 2 on trouble (missing
or corrupt input, bad arguments).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ..errors import UsageError
from .common import DEBUG_OPTION, JSON_OPTION, cli_errors, print_json, print_table

if TYPE_CHECKING:
    from ..compare import Comparison, TensorComparison

TROUBLE_EXIT = 2
GATE_FAILED_EXIT = 1
FULL_HEADERS = ("name", "shape", "SQNR dB", "max abs err", "mean abs err", "rel fro err", "cosine", "codes", "scales")


def _sqnr_text(t: TensorComparison) -> str:
    # Formatted here: a column mixing numbers and "identical" is printed raw by tabulate.
    if t.stats.identical:
        return "identical"
    sqnr = t.to_dict()["sqnr_db"]
    return "undefined" if sqnr is None else f"{sqnr:.2f}"


def _row(t: TensorComparison, sqnr_only: bool) -> list[object]:
    fields = t.to_dict()
    head = [t.name, "x".join(map(str, t.shape)), _sqnr_text(t)]
    if sqnr_only:
        return head
    return head + [fields[key] for key in ("max_abs_err", "mean_abs_err", "rel_fro_err", "cosine", "code_agreement", "scale_agreement")]


def _decibels(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _headline_text(comparison: Comparison, summary: dict) -> str:
    """The headline SQNR (energy-weighted over the quantized, or else the differing, tensors)."""
    _, tensors = comparison.headline()
    if not tensors:
        return "-"
    return "identical" if all(t.stats.identical for t in tensors) else _decibels(summary["sqnr_db"])


def _gate_failures(comparison: Comparison, failing: list[TensorComparison], min_sqnr: float) -> list[str]:
    """Why the --min-sqnr gate fails, one phrase a reason (none: it passes)."""
    reasons = []
    if failing:
        worst = failing[0]
        reasons.append(f"{len(failing)} tensor(s) below --min-sqnr {min_sqnr:g} dB, worst {worst.name} ({_sqnr_text(worst)} dB)")
    if comparison.shape_mismatches:
        first = comparison.shape_mismatches[0]
        reasons.append(f"{len(comparison.shape_mismatches)} shape mismatch(es), first {first.name} {first.shape_a} vs {first.shape_b}")
    if not comparison.tensors:
        reasons.append("no tensor in both checkpoints to compare")
    return reasons


def _print_report(
    comparison: Comparison, shown: list[TensorComparison], failing: list[TensorComparison], sqnr_only: bool
) -> None:
    headers = FULL_HEADERS[:3] if sqnr_only else FULL_HEADERS
    print_table([_row(t, sqnr_only) for t in shown], headers, title=f"A: {comparison.a}\nB: {comparison.b}")
    summary = comparison.summary()
    worst = comparison.worst()
    typer.echo("")
    rows = [
        ("tensors compared", f"{summary['compared']} ({summary['identical']} identical)"),
        ("only in A", ", ".join(comparison.only_in_a) or 0),
        ("only in B", ", ".join(comparison.only_in_b) or 0),
        ("shape mismatches", "; ".join(f"{m.name} {m.shape_a} vs {m.shape_b}" for m in comparison.shape_mismatches) or 0),
        (f"SQNR dB, {summary['sqnr_tensors']} {summary['sqnr_over']} tensor(s)", _headline_text(comparison, summary)),
        (f"SQNR dB, all {summary['compared']} tensors", "-" if not comparison.tensors else "identical" if worst is None else _decibels(summary["overall_sqnr_db"])),
        ("worst tensor", "-" if worst is None else f"{worst.name} ({_sqnr_text(worst)} dB)"),
    ]
    print_table(rows, ("summary", ""))
    if failing:
        typer.echo("")
        print_table([(t.name, _sqnr_text(t)) for t in failing], ("below --min-sqnr", "SQNR dB"))


def _progress(quiet: bool) -> Progress:
    console = Console(stderr=True)
    columns = (TextColumn("comparing {task.fields[name]}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, console=console, transient=True, disable=quiet or not console.is_terminal)


def diff(
    a: Path = typer.Argument(..., metavar="A", help="Reference checkpoint: .safetensors file, *.safetensors.index.json or model directory."),
    b: Path = typer.Argument(..., metavar="B", help="Checkpoint compared against A (float or NVFP4, either format)."),
    sqnr: bool = typer.Option(False, "--sqnr", help="Narrow the table to SQNR."),
    json_out: bool = JSON_OPTION,
    min_sqnr: float = typer.Option(
        None, "--min-sqnr", metavar="DB", help="A gate: exit 1 if a tensor's SQNR is below DB, a shape differs, or nothing is compared."
    ),
    include: list[str] = typer.Option([], "--include", metavar="GLOB", help="Compare only weights whose name matches (repeatable)."),
    sort: str = typer.Option("sqnr", "--sort", help="Order rows by sqnr (worst first, identical last) or by name."),
    top: int = typer.Option(None, "--top", metavar="N", help="Show only the first N rows (the summary covers all)."),
    device: str = typer.Option("cpu", "--device", help="Where to decode and compare: cpu, or cuda."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Compare two checkpoints tensor by tensor: SQNR of B against A, errors, code agreement."""
    with cli_errors(debug):
        from ..compare import SORT_KEYS, compare_checkpoints

        try:
            if top is not None and top < 1:
                raise UsageError(f"--top must be at least 1, got {top}")
            if min_sqnr is not None and math.isnan(min_sqnr):
                raise UsageError("--min-sqnr must be a number of dB, got nan")  # no SQNR is below nan: the gate would never fire
            if sort not in SORT_KEYS:
                raise UsageError(f"unknown --sort {sort!r}; valid: {', '.join(SORT_KEYS)}")
            with _progress(quiet=json_out) as bar:
                task = bar.add_task("compare", total=None, name="")
                comparison = compare_checkpoints(
                    a, b, include, on_tensor=lambda done, total, name: bar.update(task, completed=done, total=total, name=name), device=device
                )
        except (ValueError, OSError) as exc:
            exc.exit_code = TROUBLE_EXIT  # diff(1): any trouble is 2, a corrupt file included
            raise
        shown = comparison.sorted_tensors(sort)[:top]
        failing = [] if min_sqnr is None else comparison.below(min_sqnr)
        gate_failures = [] if min_sqnr is None else _gate_failures(comparison, failing, min_sqnr)
        if json_out:
            payload = comparison.to_dict(shown)
            if min_sqnr is not None:
                payload["summary"] |= {
                    "min_sqnr_db": min_sqnr,
                    "below_min_sqnr": [t.name for t in failing],
                    "gate_passed": not gate_failures,
                }
            print_json(payload)
        else:
            _print_report(comparison, shown, failing, sqnr)
        if gate_failures:
            typer.echo(f"nvfp4: {'; '.join(gate_failures)}", err=True)
            raise typer.Exit(GATE_FAILED_EXIT)
