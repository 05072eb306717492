"""What every command shares: one-line errors with exit codes, JSON output, tables."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from tabulate import tabulate
from typer.core import TyperGroup

from ..errors import DataError, Terminated, UsageError, message, one_line, sigterm_unwinds
from ..staging import shown_paths

if TYPE_CHECKING:
    from ..distributed import Group

DEBUG_OPTION = typer.Option(False, "--debug", help="Show the full traceback on errors.")  # every command has it


@contextlib.contextmanager
def cli_errors(debug: bool = False) -> Iterator[None]:
    """Turn core errors into one line on stderr and a non-zero exit: 2 for usage, 1 for data.

    Ctrl-C exits 130, SIGTERM 143, both after unwinding (a half-written output is removed). With
    debug the traceback is shown instead.
    """
    try:
        with sigterm_unwinds():
            yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        typer.echo("nvfp4: interrupted", err=True)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader went away (`nvfp4 inspect X | head -1`): not an error. Point stdout at
        # /dev/null so that the interpreter's last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except Terminated as exc:
        if debug:
            raise
        typer.echo("nvfp4: terminated", err=True)
        raise typer.Exit(exc.code) from None
    except (UsageError, DataError, ValueError, OSError) as exc:
        if debug:
            raise
        code = getattr(exc, "exit_code", 2 if isinstance(exc, UsageError) else 1)
        typer.echo(f"nvfp4: error: {shown_paths(_message(exc))}", err=True)  # never the hidden staging path
        raise typer.Exit(code) from None


# Typer vendors click from 0.2x on and used plain click before: take click's exception classes
# from the one Typer exports, whatever the version.
ClickUsageError = typer.BadParameter.__base__
ClickException = ClickUsageError.__base__


class OneLineErrors(TyperGroup):
    """Typer's command group, with click's own errors (a bad option value, an unknown option, a
    missing argument) printed as one line like every other error instead of a usage banner and a box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            # A bare `nvfp4` has printed the help already (Typer checks the class by name too).
            if type(exc).__name__ != "NoArgsIsHelpError":
                command = exc.ctx.command_path if isinstance(exc, ClickUsageError) and exc.ctx is not None else "nvfp4"
                typer.echo(f"nvfp4: error: {_message(exc)} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("nvfp4: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _message(exc: BaseException) -> str:
    """The error on one line: click's own message for click's errors, errors.message otherwise."""
    return one_line(exc.format_message()) if isinstance(exc, ClickException) else message(exc)


def print_json(payload: object) -> None:
    """Machine output: one JSON document on stdout."""
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str], title: str | None = None) -> None:
    """People output: a plain tabulate table, optionally headed by a title line."""
    if title:
        typer.echo(title)
    typer.echo(tabulate(rows, headers=headers, tablefmt="simple", floatfmt=".4g"))


# ---- options and output shared by the commands that write checkpoints ----------------------------

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document instead of the table (and no progress bar).")
FORCE_OPTION = typer.Option(False, "--force", help="Replace an existing output.")
MAX_SHARD_SIZE_OPTION = typer.Option("5GB", "--max-shard-size", help="Largest output shard of a directory output (5GB, 500MB, 2GiB).")
WORKERS_HELP = "Convert with N local processes on torch.distributed (gloo; NCCL and one GPU each with --device cuda): same tensors. Under torchrun, leave it out."
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A str Enum of values for a Typer option: the one way commands spell a closed choice."""
    return Enum(name, {value: value for value in values}, type=str)


def parse_size(text: str) -> int:
    """Bytes in a size such as "5GB" (decimal, as Hugging Face counts shards), "500MiB" or "1000"."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in SIZE_UNITS or float(match.group(1)) * SIZE_UNITS[unit] < 1:
        raise UsageError(f"invalid size {text!r}; use e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def byte_size(nbytes: int) -> str:
    """A size for people, in the largest decimal unit it reaches: 512 B, 12.3 kB, 4.1 MB, 2.0 GB."""
    if nbytes < 1000:
        return f"{nbytes} B"
    for unit, size in (("kB", 10**3), ("MB", 10**6), ("GB", 10**9), ("TB", 10**12)):
        if nbytes / size < 999.95 or unit == "TB":  # so that 999,999 B reads 1.0 MB, not 1000.0 kB
            return f"{nbytes / size:,.1f} {unit}"


@contextlib.contextmanager
def progress_bar(operation: str, total_bytes: int, total_tensors: int, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback (tensors done, bytes done) drawing a rich bar on a terminal; None when
    quiet or not a terminal."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[tensors]}/{task.fields[total_tensors]} tensors"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(operation, total=total_bytes, tensors=0, total_tensors=total_tensors)
        yield lambda tensors, done: bar.update(task, completed=done, tensors=tensors)


@contextlib.contextmanager
def steps_bar(operation: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback (steps done, steps in all) drawing a rich bar on a terminal; None when
    quiet or not a terminal."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(operation, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def print_report(report: dict, title: str) -> None:
    """The summary table of a conversion or a dry run, then what was kept in high precision."""
    operation = report["operation"]
    rows = [
        ["input", report["input"]],
        *([["output", report["output"]]] if "output" in report else []),
        *[[key, report[key]] for key in ("format", "mode", "scale_rule", "seed", "dtype", "workers") if key in report],
        [f"tensors {operation}d", report[f"tensors_{operation}d"]],
        ["tensors copied", report["tensors_copied"]],
        ["bytes in", byte_size(report["bytes_in"])],
        ["bytes out", byte_size(report["bytes_out"])],
    ]
    if report.get("workers_requested", report.get("workers")) != report.get("workers"):  # --workers started fewer
        rows.append(["workers asked for", f"{report['workers_requested']}: {report['workers_reason']}"])
    if report.get("ratio"):
        rows.append(["compression (NVFP4 at bf16)", f"{report['ratio']:.2f}x"])
    if "seconds" in report:
        rows += [["time", f"{report['seconds']:.2f} s"], ["throughput", f"{byte_size(round(report['mb_per_s'] * 1e6))}/s" if report["mb_per_s"] else "-"]]
    print_table(rows, headers=("", ""), title=title)
    if report.get("ranks"):
        typer.echo("")
        rank_rows = [[row["rank"], row["tensors_in"], byte_size(row["bytes_in"]), len(row["files"])] for row in report["ranks"]]
        print_table(rank_rows, headers=("rank", "tensors in", "bytes in", "files"))
    if report.get("skipped"):
        typer.echo("")
        print_table([[item["name"], item["reason"]] for item in report["skipped"]], headers=("weight kept in high precision", "reason"))


def show_report(report: dict, json_output: bool, title: str) -> None:
    """JSON for machines, or the summary tables for people."""
    if json_output:
        print_json(report)
    else:
        print_report(report, title)


def note_skipped_files(skipped_files: list[dict[str, str]]) -> None:
    """One line on stderr for each weight file beside the checkpoint that is neither converted nor copied."""
    for item in skipped_files:
        typer.echo(f"nvfp4: note: {item['file']}: {item['reason']}", err=True)


def join_torchrun(stack: contextlib.ExitStack, workers: int | None, device: str) -> Group | None:
    """Under torchrun, join its process group until the command ends; None otherwise."""
    from .. import distributed  # torch: imported once a command runs, never for --help

    if not distributed.launched_by_torchrun():
        return None
    if workers is not None:
        raise UsageError("--workers starts its own processes: leave it out under torchrun")
    group = stack.enter_context(distributed.connect(device))
    stack.enter_context(_quiet_unless_rank0(group.rank))
    return group


@contextlib.contextmanager
def _quiet_unless_rank0(rank: int) -> Iterator[None]:
    """A failure that every rank raises is reported once, by rank 0; the others exit quietly."""
    from .. import distributed

    try:
        yield
    except distributed.RankFailure as exc:
        if rank == 0:
            raise
        raise typer.Exit(exc.exit_code) from None
