"""Errors the core raises for bad input. Both are ValueErrors, so API callers can catch either;
the CLI maps them to exit codes (2 for usage, 1 for data) and prints one line. Also SIGTERM as
an exception (Terminated), so that it unwinds like Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class UsageError(ValueError):
    """A bad argument or option: wrong mode, backend, seed, shape, path."""

    exit_code = 2


class DataError(ValueError):
    """Bad input data: a corrupt or unreadable checkpoint, NaN/Inf in a tensor."""

    exit_code = 1


def one_line(text: str) -> str:
    """text with every run of whitespace (newlines included) as one space: errors are one line."""
    return " ".join(text.split())


def message(exc: BaseException) -> str:
    """An exception's message on one line: 'filename: strerror' for an OSError, else str(exc),
    or the exception's type name when that is empty."""
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror)
    return one_line(str(exc) or type(exc).__name__)


class Terminated(SystemExit):
    """SIGTERM arrived (see sigterm_unwinds); the exit status is 128 + 15."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into Terminated for the block (in the main thread; elsewhere a no-op), so that
    it unwinds like Ctrl-C and the staging of a half-written output is removed. Launchers
    (torchrun, --workers) stop ranks with SIGTERM when one fails; so do kill, timeout and
    service managers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
