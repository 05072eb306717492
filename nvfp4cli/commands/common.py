"""What every command shares: one-line errors with exit codes, JSON output, tables."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence

import typer
from tabulate import tabulate

from ..errors import DataError, UsageError

DEBUG_HELP = "Show the full traceback on errors."


@contextlib.contextmanager
def cli_errors(debug: bool = False) -> Iterator[None]:
    """Turn core errors into one line on stderr and a non-zero exit: 2 for usage, 1 for data.

    Ctrl-C exits 130. With debug the traceback is shown instead.
    """
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        typer.echo("nvfp4: interrupted", err=True)
        raise typer.Exit(130) from None
    except (UsageError, DataError, ValueError, OSError) as exc:
        if debug:
            raise
        code = getattr(exc, "exit_code", 2 if isinstance(exc, UsageError) else 1)
        typer.echo(f"nvfp4: error: {one_line(exc)}", err=True)
        raise typer.Exit(code) from None


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (OSError: 'strerror: filename')."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def print_json(payload: object) -> None:
    """Machine output: one JSON document on stdout."""
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str], title: str | None = None) -> None:
    """People output: a plain tabulate table, optionally headed by a title line."""
    if title:
        typer.echo(title)
    typer.echo(tabulate(rows, headers=headers, tablefmt="simple", floatfmt=".4g"))
