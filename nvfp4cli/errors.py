"""Errors the core raises for bad input. Both are ValueErrors, so API callers can catch either;
the CLI maps them to exit codes (2 for usage, 1 for data) and prints one line."""


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
