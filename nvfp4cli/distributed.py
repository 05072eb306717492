"""Scale-out conversion on torch.distributed: several processes, on one node or many, convert one
checkpoint into the same tensors as one process.

    nvfp4 quantize model/ --workers 4                          # 4 local processes
    torchrun --nproc-per-node 4 -m nvfp4cli quantize model/    # the same under torchrun
    nvfp4 dequantize model-nvfp4/ -o model-bf16/ --workers 4   # dequantize: the same way

Under torchrun every rank plans the whole conversion from the headers (cheap and deterministic;
ranks that plan differently are refused); --workers processes get the parent's plan, which is pure
data. Each rank takes its share of the units: largest first to the least loaded rank, by input bytes, so that a fused group
(one unit) stays on one rank. A rank writes its units into shard files of its own, numbered over
all ranks (model-00003-of-00008.safetensors), in a staging directory that rank 0 makes beside the
output; once every rank is done, rank 0 writes the index, config and side files and renames the
staging directory into place.

Tensors are the same bytes as a single-process run: each unit is made by the same code from the
same inputs, and RS streams are per tensor (docs/format.md §3). The shard files are not: they group tensors
by rank, so the index's weight_map differs. For a given number of ranks every run writes the same
files, and one rank writes exactly the single-process files.

Failures: the first error of any rank goes into the rendezvous store, with its rank and exit
code. Ranks look for it between units and while waiting for the others, and every step ends in
an all-reduce of an ok flag, so that every rank stops with that error; rank 0 then removes the
staging directory, so nothing is left at the output path. The control messages go through gloo on
CPU and NCCL (one GPU per rank, picked by LOCAL_RANK) for --device cuda; no tensor data moves
between ranks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import DataError, UsageError, message, one_line, sigterm_unwinds
from .execute import DEFAULT_MAX_SHARD_BYTES, Layout, Progress, check_output, finish, plan_layout, run_report, write_share
from .io import open_checkpoint
from .plan import Plan, Unit
from .staging import staged_output

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Store keys, under a prefix per torchrun restart so that a restarted run sees no stale error.
ERROR_KEY, STAGING_KEY, LAYOUT_KEY, REPORT_KEY, SEED_KEY = "error", "staging", "layout", "report", "seed"
TENSORS_DONE_KEY, BYTES_DONE_KEY, FINISHED_KEY = "tensors_done", "bytes_done", "finished"
POLL_SECONDS = 0.1
# Ranks wait for each other by polling the store, so collectives never wait long; the timeout
# only bounds how long a rank waits for a peer that hangs.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# --workers: how long survivors of a failure get to stop (and rank 0 to clean up) before they
# are terminated; a rank notices a failure at its next unit boundary.
STOP_GRACE_SECONDS = 30.0

T = TypeVar("T")


class RankFailure(DataError):
    """A failure of some rank, raised on every rank once they agree on it: the first error any
    rank published, with its exit code (2 for usage errors, 1 otherwise)."""

    def __init__(self, message: str, exit_code: int, rank: int):
        super().__init__(message)
        self.exit_code = exit_code
        self.rank = rank


class _PeerFailed(Exception):
    """Raised between units when another rank has published a failure: stop and agree."""


def launched_by_torchrun() -> bool:
    """Whether torchrun (or any env:// launcher) started this process as one rank of several."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def _run_store(store: dist.Store) -> dist.Store:
    return dist.PrefixStore(f"nvfp4cli/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _describe(exc: BaseException) -> str:
    """The error as the CLI words it; an unexpected exception also names its type."""
    if (isinstance(exc, OSError) and exc.strerror) or (isinstance(exc, ValueError) and str(exc)):  # UsageError, DataError and their kin
        return message(exc)
    return one_line(f"{type(exc).__name__}: {exc}")


def _publish(store: dist.Store, rank: int, world_size: int, error: BaseException | str) -> None:
    """Record a failure of `rank` in the store unless one was recorded first."""
    exit_code = getattr(error, "exit_code", 1)
    text = one_line(error) if isinstance(error, str) else _describe(error)
    message = text if world_size == 1 else f"rank {rank}: {text}"
    store.compare_set(ERROR_KEY, "", json.dumps({"rank": rank, "exit_code": exit_code, "message": message}))


def _published_failure(store: dist.Store) -> RankFailure | None:
    if not store.check([ERROR_KEY]):
        return None
    payload = json.loads(store.get(ERROR_KEY))
    return RankFailure(payload["message"], payload["exit_code"], payload["rank"])


def _done_counts(store: dist.Store) -> tuple[int, int]:
    """(input tensors, input bytes) written so far by all ranks together."""
    return store.add(TENSORS_DONE_KEY, 0), store.add(BYTES_DONE_KEY, 0)


# ---- who writes what ---------------------------------------------------------------------------


def layout_digest(plan: Plan, layout: Layout) -> str:
    """What the run writes, hashed: ranks that plan differently cannot write one output."""
    shards = [[[spec.name, spec.dtype, list(spec.shape)] for spec in shard] for rank_shards in layout.shards for shard in rank_shards]
    payload = json.dumps([plan.record, [unit.inputs for unit in plan.units], layout.shares, shards, layout.files], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# ---- the process group -------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks, with the store and the collectives they share.

    Every collective is one all-reduce of an ok flag, so ranks stay in step however a failure
    arises: a failing rank publishes its error, joins exactly one all-reduce with ok=False, and
    stops; every other rank sees that at its next step and stops too.
    """

    rank: int
    world_size: int
    store: dist.Store
    device: torch.device

    def agree(self, ok: bool) -> None:
        """Wait for every rank; raise the published failure if any rank was not ok."""
        flag = torch.tensor([int(ok)], dtype=torch.int32, device=self.device)
        try:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            all_ok = bool(flag.item())
        except RuntimeError as exc:  # gloo raises a plain RuntimeError when a peer is gone
            raise DataError(f"rank {self.rank}: lost contact with the other ranks ({one_line(str(exc))})") from None
        if not all_ok:
            raise _published_failure(self.store) or RankFailure("a rank failed without saying why", 1, -1)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """On an error inside the block: publish it, agree on failure, raise RankFailure. The
        other ranks raise it at their next agree (a step, or a guard of their own)."""
        try:
            yield
        except RankFailure:
            raise  # already agreed on
        except Exception as exc:
            if not isinstance(exc, _PeerFailed):
                _publish(self.store, self.rank, self.world_size, exc)
            self.agree(False)  # raises the published failure
            raise  # only so that the block's error can never be swallowed

    def step(self, action: Callable[[], T]) -> T:
        """Run action here, then wait until every rank has run its own: all succeed or all raise."""
        with self.guard():
            result = action()
        self.agree(True)
        return result

    def shared_seed(self, seed: int) -> int:
        """Rank 0's RS seed, so that a seed each rank drew at random is the same on all."""
        if self.rank == 0:
            self.store.set(SEED_KEY, str(seed))
        return int(self.store.get(SEED_KEY))


def _rank_device(device: str, local_rank: int) -> torch.device:
    if torch.device(device).type != "cuda":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UsageError(f"--device cuda: local rank {local_rank} needs GPU {local_rank}, but this node has {count}: one GPU per rank")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def connect(device: str = "cpu", *, store: dist.Store | None = None, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> Iterator[Group]:
    """Join the process group for the block: gloo on CPU, NCCL with GPU LOCAL_RANK for cuda.

    Without a store, rank, world size and rendezvous come from torchrun's environment (RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK)."""
    try:
        if store is None:
            store, rank, world_size = next(dist.rendezvous("env://", timeout=COLLECTIVE_TIMEOUT))
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (dist.DistError, ValueError) as exc:
        raise DataError(f"cannot join the torch.distributed rendezvous ({one_line(str(exc))})") from None
    rank_device = _rank_device(device, local_rank)
    backend = "nccl" if rank_device.type == "cuda" else "gloo"
    run_store = _run_store(store)
    try:
        dist.init_process_group(
            backend, store=dist.PrefixStore("pg", run_store), rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT, device_id=rank_device if backend == "nccl" else None
        )
    except dist.DistError as exc:
        raise DataError(f"rank {rank}: cannot form the {backend} process group ({one_line(str(exc))})") from None
    try:
        with sigterm_unwinds():  # a launcher stops the other ranks with SIGTERM when one fails
            yield Group(rank, world_size, run_store, rank_device)
    finally:
        dist.destroy_process_group()


# ---- one rank's work ---------------------------------------------------------------------------


def run(plan: Plan, output: Path, group: Group, *, force: bool = False, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, progress: Progress | None = None) -> dict | None:
    """Write this rank's share of the plan's output at `output` (a directory); every rank of the
    group calls this with the same plan. Returns the report on rank 0 (progress, where given,
    counts the work of all ranks), None on the others; raises RankFailure on every rank if any fails.
    """
    start = time.perf_counter()
    layout = plan_layout(plan, group.world_size, max_shard_bytes)
    with contextlib.ExitStack() as staged:
        group.step(partial(_prepare, plan, output, force, layout, group, staged))
        staging = Path(group.store.get(STAGING_KEY).decode())
        group.step(partial(_write_share, plan, layout, group, staging, progress))
        copied = group.step(partial(finish, plan, layout, staging) if group.rank == 0 else list)
        commit = staged.pop_all()
    group.step(commit.close)  # rank 0 renames the staging directory into place
    if group.rank != 0:
        return None
    return run_report(plan, output, sorted(layout.files), copied, time.perf_counter() - start) | {"workers": group.world_size, "ranks": layout.ranks(plan)}


def _check_directory_input(plan: Plan) -> None:
    if plan.directory is None:
        raise UsageError(
            f"{plan.input_path}: a single .safetensors file is written by one process; to convert it with several, put it in a directory as model.safetensors"
        )


def _prepare(plan: Plan, output: Path, force: bool, layout: Layout, group: Group, staged: contextlib.ExitStack) -> None:
    _check_directory_input(plan)
    if group.rank == 0:
        check_output(plan, output, force)
        staging = staged.enter_context(staged_output(output, is_dir=True, force=force))
        group.store.set(LAYOUT_KEY, layout_digest(plan, layout))
        group.store.set(STAGING_KEY, str(staging))


def _write_share(plan: Plan, layout: Layout, group: Group, staging: Path, progress: Progress | None) -> None:
    if group.store.get(LAYOUT_KEY).decode() != layout_digest(plan, layout):
        raise UsageError(f"rank {group.rank} planned another conversion than rank 0: give every rank the same input, options and nvfp4cli version")
    if not staging.is_dir():
        raise DataError(f"rank {group.rank} cannot see {staging}, made by rank 0: the output must be on a filesystem all nodes share")
    write_share(plan, open_checkpoint(plan.input_path), layout, group.rank, staging, partial(_unit_written, group, progress))
    group.store.add(FINISHED_KEY, 1)
    # Wait here rather than in the collective, which would time out behind a slow rank.
    while group.store.add(FINISHED_KEY, 0) < group.world_size and not group.store.check([ERROR_KEY]):
        if progress is not None:
            progress(*_done_counts(group.store))
        time.sleep(POLL_SECONDS)


def _unit_written(group: Group, progress: Progress | None, unit: Unit) -> None:
    tensors_done = group.store.add(TENSORS_DONE_KEY, unit.tensors_in)
    bytes_done = group.store.add(BYTES_DONE_KEY, unit.bytes_in)
    if progress is not None:
        progress(tensors_done, bytes_done)
    if group.store.check([ERROR_KEY]):
        raise _PeerFailed


# ---- --workers: local processes ----------------------------------------------------------------


def launch(
    plan: Plan,
    output: Path,
    workers: int,
    *,
    device: str = "cpu",
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Progress | None = None,
) -> dict:
    """Convert with `workers` local processes, as torchrun would on one node: this process
    hosts the rendezvous store, shows progress, and returns rank 0's report or raises the first
    failure (a worker that dies without one, e.g. killed, is that failure). The plan, pure data,
    goes to each worker pickled."""
    check_workers(plan, workers, device)
    check_output(plan, output, force)
    start = time.perf_counter()
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    store = _run_store(server)
    processes: list[subprocess.Popen] = []
    try:
        for rank in range(workers):
            processes.append(_start_worker((rank, workers, server.port, plan, device, output, force, max_shard_bytes)))
        _supervise(processes, store, progress)
    finally:
        _stop(processes)
        failure = _published_failure(store)
        if failure is not None or not store.check([REPORT_KEY]):
            _remove_staging(store)  # left behind only when rank 0 was killed
    if failure is not None:
        raise failure
    report = json.loads(store.get(REPORT_KEY))
    seconds = time.perf_counter() - start  # what the user waits for: worker start-up included
    return report | {"seconds": seconds, "mb_per_s": plan.bytes_in / 1e6 / seconds}


def check_workers(plan: Plan, workers: int, device: str) -> None:
    """Refuse a --workers request that cannot run: fewer than one, a single-file input, more
    workers than GPUs for --device cuda."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    _check_directory_input(plan)
    if torch.device(device).type == "cuda" and workers > torch.cuda.device_count():
        raise UsageError(f"--workers {workers} --device cuda needs one GPU per worker; {torch.cuda.device_count()} here")


def _start_worker(args: tuple) -> subprocess.Popen:
    """A fresh interpreter running _worker(*args): unlike multiprocessing's spawn, it does not
    re-run the caller's main module. It inherits stdout and stderr but prints nothing itself."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
    command = [sys.executable, "-c", "from nvfp4cli.distributed import worker_main; worker_main()"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
    with process.stdin:
        pickle.dump(args, process.stdin)
    return process


def worker_main() -> None:
    """Entry point of a --workers process: its arguments come pickled on stdin."""
    try:
        _worker(*pickle.load(sys.stdin.buffer))
    except KeyboardInterrupt:  # Ctrl-C reaches every worker; the parent reports it
        raise SystemExit(130) from None


def _supervise(processes: list[subprocess.Popen], store: dist.Store, progress: Progress | None) -> None:
    """Wait for the workers, showing progress; a worker that exits with an error it did not
    publish (killed, crashed) is published here, so that the others stop."""
    failed_at = None
    while True:
        running = [process.poll() is None for process in processes]
        for rank, process in enumerate(processes):
            if process.returncode not in (None, 0) and not store.check([ERROR_KEY]):
                _publish(store, rank, len(processes), _exit_reason(process.returncode))
        if not any(running):
            return
        if store.check([ERROR_KEY]):
            failed_at = failed_at or time.monotonic()
            if time.monotonic() - failed_at > STOP_GRACE_SECONDS:
                return  # the survivors are terminated
        elif progress is not None:
            progress(*_done_counts(store))
        time.sleep(POLL_SECONDS)


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"worker process was killed by {signal.Signals(-returncode).name}"
    return f"worker process exited with code {returncode}"


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _remove_staging(store: dist.Store) -> None:
    if store.check([STAGING_KEY]):
        shutil.rmtree(store.get(STAGING_KEY).decode(), ignore_errors=True)


def _worker(
    rank: int, world_size: int, port: int, plan: Plan, device: str, output: Path, force: bool, max_shard_bytes: int
) -> None:
    """One --workers process: join the group through the parent's store and convert its share."""
    if torch.device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, torch.get_num_threads() // world_size))  # share the cores
    server = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=COLLECTIVE_TIMEOUT)
    try:
        with connect(device, store=server, rank=rank, world_size=world_size, local_rank=rank) as group:
            report = run(plan, output, group, force=force, max_shard_bytes=max_shard_bytes)
    except (DataError, UsageError) as exc:  # reported by the parent, from the store
        _publish(_run_store(server), rank, world_size, exc)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # a bug: say it to the parent, and show the traceback here
        _publish(_run_store(server), rank, world_size, exc)
        raise
    if report is not None:
        _run_store(server).set(REPORT_KEY, json.dumps(report))
