"""Overlapped conversion: the next units' tensors are read while this one is made, and made
tensors are written while the next one is made.

    read-ahead thread  ->  this thread: make (H2D, quantize, D2H)  ->  write-behind thread

The file I/O (reading from the page cache, writing the output) is most of a GPU conversion's
time: here it runs beside the kernels instead of between them. Memory stays bounded: the reader
runs at most one unit ahead (or several small ones, READ_AHEAD_BYTES together), and the writer
holds one made unit (or several small ones, WRITE_BEHIND_BYTES together): about three units are
in memory at a time, against one for the plain loop (a 0.8 GB model dequantized: 560 MB peak;
667 MB when two large units could wait for the writer).
For --device cuda the reader reads into page-locked memory, so the copy to the GPU needs no
staging and no wait (execute.py brings the results back the same way, one wait a unit).

The bytes are those of the sequential loop: each unit is made by the same code from the same
stored bytes, and each tensor is written at its planned offset. A stored tensor that cannot be
read raises its error where the sequential loop would, when the unit reads it; a failed write
raises before the next unit is handed over, or at the end; an error of an earlier unit's write
wins over a later unit's error. Ctrl-C and SIGTERM reach this thread, which stops the others
without waiting for them (the files are aborted by the caller).

Beside them, DiskSync hands the disk the written bytes as the run goes (fdatasync on a thread of
its own), so that the writer never waits for the disk and close's fsync has little left.
STAGES, set by a benchmark, sums each thread's busy and waiting seconds per stage.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .io import Checkpoint
from .plan import COPY, DEQUANTIZE, Plan, Unit

READ_AHEAD_BYTES = 16 * 2**20  # beyond one unit, the reader runs ahead by at most this many bytes
WRITE_BEHIND_BYTES = 16 * 2**20  # made units wait for the writer up to this many bytes, or one unit
OVERLAP_MIN_BYTES = 2**20  # units all smaller than this run in the plain loop
READ_THREADS = max(1, min(4, os.cpu_count() or 1))  # a large tensor is read in pieces on these


class Stages:
    """Seconds per stage of a conversion, summed over its calls on every thread, and the calls:
    where a benchmark looks for the slow stage (scripts/bench_convert.py). sync_device: a stage
    given a GPU ends by waiting for it, so that the GPU's work counts in the stage that queued it
    (the run gets slower, but its make step splits into H2D, kernels and D2H)."""

    def __init__(self, sync_device: bool = False):
        self.sync_device = sync_device
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + 1

    @contextlib.contextmanager
    def timing(self, name: str, device: torch.device | str | None = None) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.sync_device and device is not None and torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        self.add(name, time.perf_counter() - start)


STAGES: Stages | None = None  # a benchmark sets it for a run; None: nothing is timed
_UNTIMED = contextlib.nullcontext()


def timed(name: str, device: torch.device | str | None = None) -> contextlib.AbstractContextManager:
    """The block's seconds added to STAGES[name] when a benchmark asked for them; else nothing."""
    stages = STAGES
    return _UNTIMED if stages is None else stages.timing(name, device)


class Prefetched:
    """The checkpoint as one unit sees it: the stored tensors read ahead come from memory (or
    raise the error their read raised), any other read goes to the checkpoint."""

    def __init__(self, checkpoint: Checkpoint, raw: dict[str, torch.Tensor | BaseException], device: torch.device | None = None):
        self._checkpoint = checkpoint
        self._raw = raw
        self._device = device  # where read() puts tensors (what decodes them then runs there)

    def _prefetched(self, name: str) -> torch.Tensor | None:
        raw = self._raw.get(name)
        if isinstance(raw, BaseException):
            raise raw
        return raw

    def read(self, name: str, index: int | None = None) -> torch.Tensor:
        raw = self._prefetched(name) if index is None else None
        tensor = self._checkpoint.read(name, index) if raw is None else self._checkpoint.view(name, raw)
        # Without a wait: the unit waits once for its results (execute._to_host), and torch keeps
        # a page-locked buffer from reuse until its copy is done.
        return tensor if self._device is None else tensor.to(self._device, non_blocking=True)

    def read_bytes(self, name: str, **options) -> torch.Tensor:
        raw = self._prefetched(name)
        return self._checkpoint.read_bytes(name, **options) if raw is None else raw

    def __getattr__(self, attribute: str):
        return getattr(self._checkpoint, attribute)


def stored_reads(plan: Plan, checkpoint: Checkpoint, unit: Unit) -> list[str]:
    """The stored tensors a unit reads whole (read ahead); an expert's slice of a 3-D tensor is
    read when the unit is made."""
    if unit.action == COPY:
        return list(unit.inputs)
    names = [stored for name in unit.inputs if plan.weights[name].view is None for stored in plan.weights[name].tensors]
    return [name for name in dict.fromkeys(names) if name in checkpoint.specs]


def read_buffer(nbytes: int, pin_memory: bool) -> torch.Tensor | None:
    """Where the reader reads a tensor: page-locked memory for the GPU (reused by torch's
    pinned-memory cache), else None (io allocates; process.py returns freed buffers)."""
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True) if pin_memory else None


def read_unit(plan: Plan, checkpoint: Checkpoint, unit: Unit, pool: ThreadPoolExecutor | None, gpu: torch.device | None) -> dict[str, torch.Tensor | BaseException]:
    """A unit's stored tensors by name, each as its bytes or the error reading it raised; for a
    gpu, what is not copied goes into page-locked memory."""
    if gpu is not None:
        torch.cuda.set_device(gpu)  # a thread starts on GPU 0: a --workers rank on GPU 1 would make a context there
    pin = gpu is not None and unit.action != COPY
    raw: dict[str, torch.Tensor | BaseException] = {}
    for name in stored_reads(plan, checkpoint, unit):
        try:
            raw[name] = checkpoint.read_bytes(name, out=read_buffer(checkpoint.info(name).nbytes, pin), pool=pool)
        except Exception as exc:  # raised when the unit reads it, as without read-ahead
            raw[name] = exc
    return raw


class _ReadAhead(threading.Thread):
    def __init__(self, units: list[Unit], read: Callable[[Unit], dict], budget: int):
        super().__init__(name="nvfp4-read-ahead", daemon=True)
        self._units, self._read, self._budget = units, read, budget
        self._ready: deque[dict] = deque()
        self._ahead = 0  # input bytes read and not yet taken
        self._stopped = False
        self._changed = threading.Condition()

    def run(self) -> None:
        for unit in self._units:
            with timed("read: wait for room"), self._changed:
                while not self._stopped and self._ready and self._ahead + unit.bytes_in > self._budget:
                    self._changed.wait()
                if self._stopped:
                    return
            try:
                with timed("read: read"):
                    raw = self._read(unit)
            except BaseException as exc:  # noqa: BLE001 - a failure outside any one tensor's read, raised in take
                raw = exc
            with self._changed:
                self._ready.append(raw)
                self._ahead += unit.bytes_in
                self._changed.notify_all()

    def take(self, unit: Unit) -> dict:
        with self._changed:
            while not self._ready:
                self._changed.wait()
            raw = self._ready.popleft()
            self._ahead -= unit.bytes_in
            self._changed.notify_all()
        if isinstance(raw, BaseException):
            raise raw
        return raw

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._ready.clear()
            self._changed.notify_all()


def _nbytes(outputs: dict[str, torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in outputs.values())


class _WriteBehind(threading.Thread):
    def __init__(self, write: Callable[[str, torch.Tensor], None], budget: int):
        super().__init__(name="nvfp4-write-behind", daemon=True)
        self._write, self._budget = write, budget
        self._queue: deque[dict[str, torch.Tensor]] = deque()
        self._queued = 0  # bytes handed over and not yet written
        self._closed = self._stopped = False
        self._changed = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            with timed("write: wait for work"), self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue or self._stopped:
                    return
                outputs = self._queue[0]
            try:
                for name, tensor in outputs.items():
                    if self._stopped:
                        return
                    with timed("write: write"):
                        self._write(name, tensor)
            except BaseException as exc:  # noqa: BLE001 - raised in this thread's caller
                with self._changed:
                    self.error = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._queued -= _nbytes(self._queue.popleft())
                self._changed.notify_all()

    def put(self, outputs: dict[str, torch.Tensor]) -> None:
        nbytes = _nbytes(outputs)
        with self._changed:
            while self.error is None and self._queue and self._queued + nbytes > self._budget:
                self._changed.wait()
            if self.error is not None:
                raise self.error
            self._queue.append(outputs)
            self._queued += nbytes
            self._changed.notify_all()

    def finish(self) -> None:
        """Wait until everything handed over is written; raise a write's error."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        while self.is_alive():
            self.join(0.1)  # in steps, so that a signal is handled at once
        if self.error is not None:
            raise self.error

    def stop(self, wait: bool) -> None:
        with self._changed:
            self._stopped = self._closed = True
            self._queue.clear()
            self._queued = 0
            self._changed.notify_all()
        if wait:
            self.join()


class DiskSync(threading.Thread):
    """Hands the disk the bytes written so far while the run goes on. The writer calls wrote()
    after each tensor; once `every` bytes went to a file since its last sync, this thread runs
    fdatasync on its own descriptor of the file (a sync flushes the file whatever descriptor
    asks), and the writer goes on writing meanwhile: a sync in the writer's thread held it, and
    so the whole pipeline, for as long as the disk took. Files asked for during a sync are
    synced by the next, so the disk stays busy. close's fsync, before the rename, still makes
    every file durable; a failed sync raises in the writer (naming the file), or at stop."""

    def __init__(self, every: int):
        super().__init__(name="nvfp4-disk-sync", daemon=True)
        self._every = every
        self._unsynced: dict[str, int] = {}  # per file, bytes written since its last sync was asked (writer's thread only)
        self._due: dict[str, None] = {}  # files to sync, in the order asked
        self._stopped = False
        self._changed = threading.Condition()
        self.error: OSError | None = None

    def wrote(self, path: Path, nbytes: int) -> None:
        key = str(path)
        self._unsynced[key] = self._unsynced.get(key, 0) + nbytes
        if self._unsynced[key] < self._every:
            return
        self._unsynced[key] = 0
        with self._changed:
            if self.error is not None:
                raise self.error
            self._due[key] = None
            self._changed.notify_all()

    def run(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)  # looked up here: tests count the calls
        while True:
            with self._changed:
                while not self._due and not self._stopped:
                    self._changed.wait()
                if self._stopped:
                    return
                paths = list(self._due)
                self._due.clear()
            for path in paths:
                try:
                    # Opened for each sync (microseconds, against a sync's milliseconds): a run of
                    # hundreds of shards keeps no second descriptor of each open.
                    descriptor = os.open(path, os.O_RDONLY)
                    try:
                        with timed("sync: fdatasync"):
                            sync(descriptor)
                    finally:
                        os.close(descriptor)
                except OSError as exc:
                    with self._changed:
                        if not self._stopped:  # a file aborted under a stopped run is no error
                            self.error = OSError(exc.errno, exc.strerror, path)
                    return

    def stop(self, wait: bool = True) -> None:
        """No more syncs (what is asked and not begun is left to close's fsync); with wait,
        return once a sync under way is done and raise a sync's error."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        if not wait:
            return
        while self.is_alive():
            self.join(0.1)  # in steps, so that a signal is handled at once
        if self.error is not None:
            raise self.error


def worth_overlapping(units: list[Unit]) -> bool:
    """Whether some unit is large enough for the overlap to pay: a unit costs the hand-offs
    between three threads (about 0.1 ms), which is all of a tiny tensor's I/O (3000 64x64
    weights: 1.0 s in the plain loop, 1.4 s overlapped)."""
    return any(unit.bytes_in >= OVERLAP_MIN_BYTES for unit in units)


def run_units(
    units: list[Unit],
    read: Callable[[Unit], dict],
    make: Callable[[Unit, dict], dict[str, torch.Tensor]],
    write: Callable[[str, torch.Tensor], None],
    made: Callable[[Unit], None],
    *,
    ahead_bytes: int | None = None,
    behind_bytes: int | None = None,
) -> None:
    """For each unit in order: read(unit) on the read-ahead thread, make(unit, what it read)
    here, then made(unit) here (it may raise to stop) while write(name, tensor) writes the
    made tensors on the write-behind thread. Returns when every tensor is written. The budgets
    default to READ_AHEAD_BYTES and WRITE_BEHIND_BYTES as they are at the call."""
    ahead_bytes = READ_AHEAD_BYTES if ahead_bytes is None else ahead_bytes
    behind_bytes = WRITE_BEHIND_BYTES if behind_bytes is None else behind_bytes
    reader, writer = _ReadAhead(units, read, ahead_bytes), _WriteBehind(write, behind_bytes)
    reader.start()
    writer.start()
    try:
        for unit in units:
            with timed("make: wait for the reader"):
                raw = reader.take(unit)
            with timed("make: make"):
                outputs = make(unit, raw)
            del raw
            with timed("make: hand to the writer"):
                writer.put(outputs)
            del outputs  # the writer holds the only reference: freed once written
            made(unit)
        with timed("make: wait for the last writes"):
            writer.finish()
    except BaseException as exc:
        reader.stop()
        # An error, not a signal: wait for the writer, whose error (of an earlier unit) comes first.
        writer.stop(wait=isinstance(exc, Exception))
        if isinstance(exc, Exception) and writer.error is not None and writer.error is not exc:
            raise writer.error from None
        raise


def convert_units(
    plan: Plan,
    checkpoint: Checkpoint,
    units: list[Unit],
    make: Callable[[Plan, Checkpoint, Unit], dict[str, torch.Tensor]],
    write: Callable[[str, torch.Tensor], None],
    made: Callable[[Unit], None],
    *,
    device: str = "cpu",
) -> None:
    """run_units over a plan's units: make(plan, checkpoint, unit) sees the unit's stored tensors
    already read, into page-locked memory for a GPU. A unit to dequantize reads its tensors onto
    the device, where it decodes them (a quantize unit moves its own inputs)."""
    gpu = torch.device(device)
    gpu = None if gpu.type != "cuda" else gpu if gpu.index is not None else torch.device("cuda", torch.cuda.current_device())
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="nvfp4-read") as pool:
        run_units(
            units,
            lambda unit: read_unit(plan, checkpoint, unit, pool, gpu),
            lambda unit, raw: make(plan, Prefetched(checkpoint, raw, gpu if unit.action == DEQUANTIZE else None), unit),
            write,
            made,
        )


def read_all(checkpoint: Checkpoint, names: Iterable[str], pin_memory: bool = False) -> int:
    """Read the named stored tensors as the read-ahead does, one at a time, keeping none: the
    reading floor of a conversion. Returns the bytes read."""
    total = 0
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="nvfp4-read") as pool:
        for name in names:
            total += checkpoint.read_bytes(name, out=read_buffer(checkpoint.info(name).nbytes, pin_memory), pool=pool).numel()
    return total
