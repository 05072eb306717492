"""Where a conversion runs: in this process, as this rank of a torchrun group, or spread over
local worker processes. All three write the same tensors (execute.py, distributed.py)."""

from __future__ import annotations

from pathlib import Path

from . import distributed, execute
from .io import Checkpoint
from .plan import Plan, QuantizeOptions


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
        device = plan.options.device if isinstance(plan.options, QuantizeOptions) else "cpu"
        return distributed.launch(plan, output, workers, device=device, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
    return execute.run(plan, output, checkpoint=checkpoint, force=force, max_shard_bytes=max_shard_bytes, progress=progress)


def describe(plan: Plan, world_size: int, max_shard_bytes: int) -> dict:
    """The split over ranks, for --dry-run."""
    return {"workers": world_size, "ranks": execute.plan_layout(plan, world_size, max_shard_bytes).ranks(plan)}
