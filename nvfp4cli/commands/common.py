"""What every command shares: one-line errors with exit codes, JSON output, tables."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence

import typer
from tabulate import tabulate
from typer.core import TyperGroup

from ..errors import DataError, Terminated, UsageError, message, one_line, sigterm_unwinds

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
    except Terminated as exc:
        if debug:
            raise
        typer.echo("nvfp4: terminated", err=True)
        raise typer.Exit(exc.code) from None
    except (UsageError, DataError, ValueError, OSError) as exc:
        if debug:
            raise
        code = getattr(exc, "exit_code", 2 if isinstance(exc, UsageError) else 1)
        typer.echo(f"nvfp4: error: {_message(exc)}", err=True)
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
