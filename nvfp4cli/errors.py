"""Errors the core raises for bad input. Both are ValueErrors, so API callers can catch either;
the CLI maps them to exit codes (2 for usage, 1 for data) and prints one line."""


class UsageError(ValueError):
    """A bad argument or option: wrong mode, backend, seed, shape, path."""

    exit_code = 2


class DataError(ValueError):
    """Bad input data: a corrupt or unreadable checkpoint, NaN/Inf in a tensor."""

    exit_code = 1
