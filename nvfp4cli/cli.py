"""The `nvfp4` Typer app: global options and one sub-command per module in commands/.

Nothing here or in commands/ imports torch at module level: `--help` and usage errors answer in
the time Python and Typer take (tests/test_startup.py); a command imports the core when it runs."""

from __future__ import annotations

from .commands import timing  # noqa: F401  first, so that its clock starts with the CLI

import atexit
import os
import sys
import threading

import typer

from .commands import bench as bench_command
from .commands import convert as convert_command
from .commands import dequantize as dequantize_command
from .commands import diff as diff_command
from .commands import inspect as inspect_command
from .commands import quantize as quantize_command
from .commands import verify as verify_command
from .commands.common import OneLineErrors

app = typer.Typer(
    name="nvfp4",
    help="Quantize model checkpoints to NVIDIA NVFP4 (E2M1 values, E4M3 block scales, FP32 tensor scale).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


def _version(value: bool) -> None:
    if value:
        from . import __version__  # reads the installed metadata: only when asked

        typer.echo(f"nvfp4 {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """nvfp4: NVFP4 quantization, bit-exact across backends."""


app.command("bench")(bench_command.bench)
app.command("diff")(diff_command.diff)
app.command("quantize")(quantize_command.quantize)
app.command("dequantize")(dequantize_command.dequantize)
app.command("inspect")(inspect_command.inspect)
app.command("verify")(verify_command.verify)
app.command("convert")(convert_command.convert)


def main() -> None:
    """The `nvfp4` script and `python -m nvfp4cli`: the app, then an exit without the teardown.

    When a command returns, its outputs are closed and renamed into place; a normal exit would then
    free torch's modules and objects one by one (0.3-0.4 s on the 2-core dev machine) for nothing.
    Exit handlers still run; with a thread still working the exit is the normal one."""
    try:
        app(prog_name="nvfp4")
        code = 0
    except SystemExit as exc:
        code = exc.code
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.exit(code)
    if not isinstance(code, int):  # what sys.exit does with None or a message
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # as Python's own exit when stdout cannot be flushed
        code = 120
    os._exit(code)
