"""Where a conversion runs: in this process, as this rank of a torchrun group, or spread over
local worker processes. All three write the same tensors (execute.py, distributed.py).

`--workers N` starts only the processes that pay for their start-up: on CPU one per 3 GB of
input; on CUDA none, since one GPU process already writes its output at the local disk's rate
(docs/distributed.md, "--workers on one GPU host"). torchrun across nodes, each with its own
disk, is unaffected: it starts its ranks itself."""

from __future__ import annotations

import os
from pathlib import Path

from . import distributed, execute
from .io import Checkpoint
from .plan import Plan

WORKER_MIN_BYTES_VARIABLE = "NVFP4_WORKER_MIN_BYTES"
CPU_MIN_BYTES_PER_WORKER = 3 * 10**9
# 2x H200, 31.4 GB bf16: one process 11.4-14.9 s wall, two workers 20.1 s (docs/distributed.md).
ONE_DISK_REASON = "one disk: a GPU process already writes at the disk's rate; NVFP4_WORKER_MIN_BYTES=0 forces workers"


def run(
    plan: Plan,
    output: Path,
    *,
    checkpoint: Checkpoint,
    group: distributed.Group | None = None,
    workers: int | None = None,
    force: bool = False,
    max_shard_bytes: int = execute.DEFAULT_MAX_SHARD_BYTES,
    progress: execute.Progress | None = None,
) -> dict | None:
    """Write the plan's output; the report, or None on a torchrun rank other than 0."""
    if group is not None:
        return distributed.run(plan, output, group, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
    if workers:
        device = getattr(plan.options, "device", "cpu")  # convert has no device: it runs on the CPU
        used, reason = workers_worth_starting(plan, workers, device)
        choice = {"workers": used, "workers_requested": workers, "workers_reason": reason}
        if used > 1:
            return distributed.launch(plan, output, used, device=device, force=force, max_shard_bytes=max_shard_bytes, progress=progress) | choice
        distributed.check_workers(plan, workers, device)  # the same refusals as when they start
        return execute.run(plan, output, checkpoint=checkpoint, force=force, max_shard_bytes=max_shard_bytes, progress=progress) | choice
    return execute.run(plan, output, checkpoint=checkpoint, force=force, max_shard_bytes=max_shard_bytes, progress=progress)


def min_bytes_per_worker(device: str) -> int | None:
    """Input bytes a --workers process must get for its start-up to pay, or None where no size
    does. On CPU about twice what one process converts while a worker starts (imports,
    rendezvous: 3-6 s at about 0.5 GB/s). On CUDA None: one process writes at the disk's rate,
    so a second GPU cannot make the output land sooner, and each worker adds ~4 s of import
    torch and CUDA/Triton set-up. NVFP4_WORKER_MIN_BYTES overrides both (0: start every worker
    asked for)."""
    override = os.environ.get(WORKER_MIN_BYTES_VARIABLE)
    if override is not None:
        return int(override)
    return None if device.startswith("cuda") else CPU_MIN_BYTES_PER_WORKER


def workers_worth_starting(plan: Plan, workers: int, device: str) -> tuple[int, str]:
    """How many of the requested --workers processes to start, and why: one (this process, no
    start-up at all) on CUDA or for a checkpoint too small for more to pay, never more than its
    units."""
    per_worker = min_bytes_per_worker(device)
    if per_worker is None:
        return 1, "as requested" if workers == 1 else ONE_DISK_REASON
    by_size = workers if per_worker <= 0 else max(1, plan.bytes_in // per_worker)
    used = max(1, min(workers, by_size, len(plan.units)))
    if used == workers:
        return used, "as requested"
    if used == len(plan.units) and used < by_size:
        return used, f"{len(plan.units)} unit(s) to convert"
    return used, f"{plan.bytes_in / 1e9:.3g} GB of input: a worker pays for its start-up from {per_worker / 1e9:.3g} GB each"


def describe(plan: Plan, world_size: int, max_shard_bytes: int) -> dict:
    """The split over ranks, for --dry-run."""
    return {"workers": world_size, "ranks": execute.plan_layout(plan, world_size, max_shard_bytes).ranks(plan)}
