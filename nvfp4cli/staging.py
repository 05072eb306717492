"""Outputs written as transactions: into a temporary sibling, renamed into place only when
complete, never over an existing output without force, and cleaned up after any failure.

    check_output_path(output, input_path, force)
    with staged_output(output, is_dir=True, force=force) as staging:
        ...write into staging...            # renamed to output when the block completes
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError

# Beside an output X, a run writes into ".X.nvfp4-tmp-<host>-<pid>-<random>" and, when --force
# replaces a directory, moves the old X into ".X.nvfp4-old-<host>-<pid>-<random>/X" for the moment
# of the final rename. Any exception removes both; a killed process (SIGKILL, power loss) cannot,
# and the next run writing X removes them once their process is gone.
STAGING_TAG = "nvfp4-tmp"
RETIRED_TAG = "nvfp4-old"
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


# A staging sibling's name, from which shown_paths recovers the output's name.
_STAGING_NAME = re.compile(rf"\.([^/]+?)\.{STAGING_TAG}-[A-Za-z0-9._]+-\d+-[0-9a-f]+")


def shown_paths(text: str) -> str:
    """text (an error message) with each staging sibling's name replaced by its output's, so that
    an error while writing `out/model-00002-of-00004.safetensors` names that, not the hidden
    `.out.nvfp4-tmp-<host>-<pid>-<random>/model-00002-of-00004.safetensors`."""
    return _STAGING_NAME.sub(r"\1", text)


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_output_path(output: Path, input_path: Path, force: bool) -> None:
    """Refuse an output that would touch the input, or an existing one without force.

    What killed runs left beside output is cleaned up first (see clean_leftovers), so that an
    old output such a run had moved aside counts as existing again."""
    resolved_output, resolved_input = output.resolve(), input_path.resolve()
    if _is_within(resolved_input, resolved_output) or (input_path.is_dir() and _is_within(resolved_output, resolved_input)):
        raise UsageError(f"output {output} would overwrite or write into the input {input_path}")
    check_output_directory(output)
    clean_leftovers(output)
    if os.path.lexists(output) and not force:
        raise UsageError(f"output {output} exists; pass --force to replace it")


def check_output_directory(output: Path) -> None:
    """Refuse an output whose parent is missing or is not a directory."""
    if not output.parent.is_dir():
        problem = "is not a directory" if output.parent.exists() else "does not exist"
        raise UsageError(f"output directory {output.parent} {problem}")


def _sibling(output: Path, tag: str, is_dir: bool) -> Path:
    """A new entry beside output, made with the process umask's usual mode (no umask juggling,
    which would race with other threads)."""
    path = output.parent / f".{output.name}.{tag}-{HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    if is_dir:
        os.mkdir(path, 0o777)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_leftovers(output: Path) -> list[Path]:
    """Remove the staging siblings of output that runs killed on this machine left behind, and
    put back an old output such a run had moved aside if output is missing. Entries of live
    processes (a run still writing) and of other machines are left alone. Returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.({STAGING_TAG}|{RETIRED_TAG})-{re.escape(HOST)}-(\d+)-[a-z0-9_]+")
    if not output.parent.is_dir():
        return []
    removed = []
    for entry in sorted(output.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or _process_alive(int(match.group(2))):
            continue
        old_output = entry / output.name
        if match.group(1) == RETIRED_TAG and os.path.lexists(old_output) and not os.path.lexists(output):
            os.replace(old_output, output)  # killed between moving the old output aside and the final rename
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync_directory(directory: Path) -> None:
    """Make a rename in directory durable (it lives in the directory's own data)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _appeared(output: Path) -> UsageError:
    return UsageError(f"output {output} appeared while this run was writing it (another run?); pass --force to replace it")


def _commit(staging: Path, output: Path, is_dir: bool, force: bool) -> None:
    """Rename staging to output. Without force an output that appeared meanwhile (another run
    finishing first) is never replaced; with force an old output is replaced at this moment."""
    if not force:
        if is_dir:
            if os.path.lexists(output):
                raise _appeared(output)
            os.rename(staging, output)  # fails rather than replace anything but an empty directory
        else:
            try:
                os.link(staging, output)  # atomic, and never replaces
            except FileExistsError:
                raise _appeared(output) from None
            os.unlink(staging)
    elif os.path.lexists(output) and (is_dir or (output.is_dir() and not output.is_symlink())):
        # os.replace cannot put a directory over anything, nor a file over a directory: move the
        # old output aside first, and put it back if the final rename fails.
        retired = _sibling(output, RETIRED_TAG, is_dir=True) / output.name
        os.replace(output, retired)
        try:
            os.replace(staging, output)
        except BaseException:
            os.replace(retired, output)
            raise
        shutil.rmtree(retired.parent)
    else:
        os.replace(staging, output)  # atomic, over an old file too
    _fsync_directory(output.parent)


@contextlib.contextmanager
def staged_output(output: Path, is_dir: bool, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of output to write into; rename it to output when the block
    completes. After any exception (Ctrl-C included) the temporary is removed and output is as
    it was. An existing output is replaced only with force, and only at the very end.

    An error on the hidden temporary path (a full disk, a read-only directory) names output."""
    clean_leftovers(output)
    try:
        staging = _sibling(output, STAGING_TAG, is_dir)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(output)) from None
    try:
        yield staging
        _commit(staging, output, is_dir, force)
    except OSError as exc:
        _remove(staging)
        if exc.filename is None or str(exc.filename).startswith(str(staging)):
            # the file inside the output that failed (out/model-00002-of-00004.safetensors), or the output
            raise OSError(exc.errno, exc.strerror, str(output) + str(exc.filename or staging).removeprefix(str(staging))) from None
        raise
    except BaseException:
        _remove(staging)
        raise
