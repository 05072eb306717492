"""Carry out a plan: make each unit's tensors and stream them into shard files.

    report = run(plan, Path("model_dir-nvfp4"), force=False)

One path for any number of processes: the units are split over ranks (Layout), each rank writes
its own shard files with write_share, and rank 0 finishes the output (index, config, side files)
with finish. A single process is rank 0 of one; distributed.py runs the same functions on many.
"""

from __future__ import annotations

import heapq
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from . import formats, pipeline
from .api import QuantizedTensor, quantize, raise_if_not_finite
from .errors import DataError, UsageError
from .format import Mode, per_tensor_scale_from_amax, per_tensor_scales_from_amaxes
from .formats.base import METADATA_KEY
from .io import (
    CONFIG_NAME,
    INDEX_SUFFIX,
    SAFETENSORS_SUFFIX,
    Checkpoint,
    SafetensorsWriter,
    TensorSpec,
    is_weight_file,
    open_checkpoint,
    open_writers,
    shard_file_names,
    split_into_shards,
    write_index,
    write_json,
)
from .kernels import get_backend, reference
from .modules import is_expert, module_name
from .process import return_freed_buffers, threads_for
from .plan import COPY, DEQUANTIZE, QUANTIZE, Plan, QuantizeOptions, Unit
from .rng import tensor_seed
from .staging import check_output_path, staged_output

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
SYNC_BYTES = 64 * 2**20  # the disk is handed each file's bytes every this many bytes (pipeline.DiskSync)
Progress = Callable[[int, int], None]  # (input tensors done, input bytes done)


# ---- one unit ----------------------------------------------------------------------------------


def _weight_error(checkpoint: Checkpoint, plan: Plan, name: str, exc: DataError) -> DataError:
    return DataError(f"{checkpoint.file(plan.weights[name].tensors[0])}: tensor {name!r}: {exc}")


def _group_per_tensor_scale(plan: Plan, checkpoint: Checkpoint, tensors: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    """The scale a fused group shares, from its members' amaxes, read back to the host at once
    (one wait for the GPU, not one a member) to refuse a member that is not finite. With every
    amax finite the scale is finite and positive, so the members quantize unchecked."""
    amaxes = torch.stack([get_backend(backend).amax(x.contiguous()) for x in tensors.values()])
    for (name, x), amax in zip(tensors.items(), amaxes.cpu().tolist()):
        try:
            raise_if_not_finite(x, amax)
        except DataError as exc:  # the same words as for a weight quantized alone
            raise _weight_error(checkpoint, plan, name, exc) from None
    return per_tensor_scale_from_amax(amaxes.amax())


def _to_host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors on the CPU. From a GPU each is copied into page-locked memory without a wait,
    then one wait for them all: a copy into pageable memory waits each time, through the driver's
    staging buffer, into fresh pages that fault in one by one. The page-locked buffers come back
    to torch's pinned-memory cache once written."""
    devices = {tensor.device for tensor in tensors.values() if tensor.device.type == "cuda"}
    if not devices:
        return tensors
    host = {
        name: torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor, non_blocking=True) if tensor.device.type == "cuda" else tensor
        for name, tensor in tensors.items()
    }
    for device in devices:
        torch.cuda.current_stream(device).synchronize()
    return host


def _input_values(plan: Plan, checkpoint: Checkpoint, name: str, device: torch.device) -> torch.Tensor:
    """A weight to quantize: a plain float tensor as stored; a quantized input decoded exactly, in float32."""
    weight = plan.weights[name]
    # Without a wait: from page-locked memory the copy runs while the kernels queue up behind it
    # (torch keeps the buffer from reuse until the copy is done); from pageable memory it is a
    # plain copy.
    if weight.quantized:
        return formats.load_float(weight, checkpoint, torch.float32).to(device, non_blocking=True)
    return formats.plain.read(weight, checkpoint).parts["values"].to(device, non_blocking=True)


def _quantize_mxfp4_unit(plan: Plan, checkpoint: Checkpoint, unit: Unit) -> dict[str, QuantizedTensor] | None:
    """MXFP4 weights re-encoded without a rounding where their block exponents allow (docs/format.md §7):
    one power-of-two tensor scale for the unit (a fused group shares it); None when the unit
    holds other formats, or nothing non-zero, and takes the usual path."""
    options: QuantizeOptions = plan.options
    if options.scale_rule != "max" or options.block_2d or _unit_scale(plan, unit) is not None:
        return None
    if any(plan.weights[name].format != formats.mxfp4.NAME for name in unit.inputs):
        return None
    stored = {name: formats.mxfp4.read(plan.weights[name], checkpoint) for name in unit.inputs}
    kmax = formats.mxfp4.top_exponent(list(stored.values()))
    pts = None if kmax is None else formats.mxfp4.lossless_per_tensor_scale(kmax)
    if pts is None:
        return None
    results = {}
    for name, parts in stored.items():
        seed = tensor_seed(options.seed, name) if options.mode is Mode.RS else None
        results[name], _ = formats.mxfp4.lossless(parts, pts.to(options.device), kmax, options.mode, seed, options.backend)
    return results


def _unit_scale(plan: Plan, unit: Unit) -> torch.Tensor | None:
    """pts = 1 for MoE experts when asked (QuantizeOptions.experts_unit_scale); None otherwise."""
    if plan.options.experts_unit_scale and all(is_expert(name) for name in unit.inputs):
        return torch.ones((), device=plan.options.device)
    return None


def _quantize_unit(plan: Plan, checkpoint: Checkpoint, unit: Unit) -> dict[str, torch.Tensor]:
    options: QuantizeOptions = plan.options
    output = formats.output_format(options.fmt)
    lossless = _quantize_mxfp4_unit(plan, checkpoint, unit)
    if lossless is not None:
        return _to_host({key: value for name, q in lossless.items() for key, value in output.encode(name, q).items()})
    device = torch.device(options.device)
    with pipeline.timed("make: H2D", device):
        tensors = {name: _input_values(plan, checkpoint, name, device) for name in unit.inputs}
    with pipeline.timed("make: kernels", device):
        shared_pts, checked = _unit_scale(plan, unit), False
        if shared_pts is None and len(unit.inputs) > 1:
            shared_pts, checked = _group_per_tensor_scale(plan, checkpoint, tensors, options.backend), True
        outputs: dict[str, torch.Tensor] = {}
        for name in unit.inputs:
            x = tensors.pop(name)  # free each input as soon as it is quantized
            seed = tensor_seed(options.seed, name) if options.mode is Mode.RS else None
            try:
                q = quantize(
                    x, options.mode, seed=seed, offset=0, per_tensor_scale=shared_pts, backend=options.backend, scale_rule=options.scale_rule,
                    block_2d=options.block_2d, check_finite=not checked,
                )  # fmt: skip
            except DataError as exc:
                raise _weight_error(checkpoint, plan, name, exc) from None
            outputs.update(output.encode(name, q))
    with pipeline.timed("make: D2H", device):
        return _to_host(outputs)


# Units whose tensors are this small and alike are quantized together (reference backend, RN, max
# rule): per call, a tensor of a few thousand elements costs more in overhead than in arithmetic.
BATCH_MAX_ELEMENTS = 1 << 16
BATCH_TOTAL_ELEMENTS = 1 << 22


def _batchable(plan: Plan, unit: Unit) -> bool:
    options = plan.options
    if unit.action != QUANTIZE or not isinstance(options, QuantizeOptions) or options.input_amax:
        return False
    if (options.backend, options.mode, options.scale_rule, options.block_2d, options.experts_unit_scale) != ("reference", Mode.RN, "max", False, False):
        return False
    weights = [plan.weights[name] for name in unit.inputs]
    return all(not weight.quantized and math.prod(weight.shape) <= BATCH_MAX_ELEMENTS for weight in weights)


def _quantize_batch(plan: Plan, checkpoint: Checkpoint, units: list[Unit]) -> list[dict[str, torch.Tensor]] | None:
    """The tensors of units (all _batchable, inputs of one shape and dtype) from one reference
    call; None when an input is not finite (the one-unit path then says where)."""
    names = [name for unit in units for name in unit.inputs]
    xs = torch.stack([_input_values(plan, checkpoint, name, torch.device("cpu")) for name in names])
    low, high = torch.aminmax(xs.reshape(len(names), -1), dim=1)
    amaxes = torch.maximum(high, -low).to(torch.float32)
    if not torch.isfinite(amaxes).all():
        return None
    # A fused group's members share the largest amax of the group (docs/format.md §5).
    group_amax, position = [], 0
    for unit in units:
        shared = amaxes[position : position + len(unit.inputs)].amax()
        group_amax.extend([shared] * len(unit.inputs))
        position += len(unit.inputs)
    pts = per_tensor_scales_from_amaxes(torch.stack(group_amax))
    packed, scales = reference.quantize_many_rn(xs, pts)
    output = formats.output_format(plan.options.fmt)
    results, position = [], 0
    for unit in units:
        tensors = {}
        for name in unit.inputs:
            q = QuantizedTensor(packed[position], scales[position], pts[position], Mode.RN)
            tensors.update(output.encode(name, q))
            position += 1
        results.append(tensors)
    return results


def _largest_call(plan: Plan, units: list[Unit]) -> int:
    """The most elements one kernel call of these units handles (a batch counts as one call)."""
    single = max((math.prod(plan.weights[name].shape) for unit in units if unit.action != COPY for name in unit.inputs), default=0)
    return max(single, BATCH_TOTAL_ELEMENTS) if any(_batchable(plan, unit) for unit in units) else single


def execute_all(plan: Plan, checkpoint: Checkpoint, units: list[Unit]) -> Iterator[tuple[Unit, dict[str, torch.Tensor]]]:
    """(unit, its tensors) for each unit in order, as execute() gives them; runs of small,
    alike float weights to quantize go through the reference backend as one batch (same bytes)."""
    index = 0
    while index < len(units):
        batch = [units[index]]
        if _batchable(plan, units[index]):
            signature = {(plan.weights[name].shape, checkpoint.info(plan.weights[name].tensors[0]).dtype) for name in units[index].inputs}
            elements = sum(math.prod(plan.weights[name].shape) for name in units[index].inputs)
            while index + len(batch) < len(units) and elements < BATCH_TOTAL_ELEMENTS:
                following = units[index + len(batch)]
                alike = {(plan.weights[name].shape, checkpoint.info(plan.weights[name].tensors[0]).dtype) for name in following.inputs}
                if not _batchable(plan, following) or alike != signature or len(signature) != 1:
                    break
                batch.append(following)
                elements += sum(math.prod(plan.weights[name].shape) for name in following.inputs)
        results = _quantize_batch(plan, checkpoint, batch) if len(batch) > 1 else None
        if results is None:
            batch, results = batch[:1], [execute(plan, checkpoint, batch[0])]
        yield from zip(batch, results)
        index += len(batch)


def execute(plan: Plan, checkpoint: Checkpoint, unit: Unit) -> dict[str, torch.Tensor]:
    """The output tensors of one unit, by name (raw bytes for a copied tensor of a dtype torch lacks)."""
    if unit.action == COPY:
        return {name: checkpoint.read(name) for name in unit.inputs}
    if unit.action == DEQUANTIZE:
        return _to_host({spec.name: formats.load_float(plan.weights[name], checkpoint, spec.torch_dtype) for name, spec in zip(unit.inputs, unit.outputs)})
    if unit.action != QUANTIZE:  # relayout's REPACKAGE (nvfp4 convert): loaded only by the runs that have one
        from .relayout import produce

        return produce(plan, checkpoint, unit)
    amax = dict(plan.options.input_amax)  # W4A4: the unit's input scales too (plan checked they exist)
    scales = {}
    if amax:
        from .calibrate import input_scale_tensors  # here: a weight-only run never loads calibrate

        scales = input_scale_tensors({module_name(name): amax[module_name(name)] for name in unit.inputs}, plan.options.fmt)
    return _quantize_unit(plan, checkpoint, unit) | scales


# ---- who writes what ---------------------------------------------------------------------------


def assign_units(units: list[Unit], world_size: int) -> list[list[int]]:
    """Unit indices per rank, balanced by input bytes: each unit, largest first, goes to the
    least loaded rank (ties to the lower rank); each rank's list is in plan order. The same on
    every rank, since it depends on the plan alone."""
    loads = [(0, rank) for rank in range(world_size)]
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for index in sorted(range(len(units)), key=lambda i: (-units[i].bytes_in, i)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(index)
        heapq.heappush(loads, (load + units[index].bytes_in, rank))
    return [sorted(share) for share in shares]


@dataclass(frozen=True)
class Layout:
    """Each rank's units and the shard files it writes (file names numbered over all ranks)."""

    shares: list[list[int]]
    shards: list[list[list[TensorSpec]]]
    names: list[list[str]]

    @property
    def files(self) -> list[str]:
        return [name for rank_names in self.names for name in rank_names]

    def ranks(self, plan: Plan) -> list[dict]:
        """Per rank: input tensors, input bytes and the files it writes."""
        rows = []
        for rank, share in enumerate(self.shares):
            units = [plan.units[index] for index in share]
            tensors_in, bytes_in = sum(unit.tensors_in for unit in units), sum(unit.bytes_in for unit in units)
            rows.append({"rank": rank, "tensors_in": tensors_in, "bytes_in": bytes_in, "files": self.names[rank]})
        return rows


def plan_layout(plan: Plan, world_size: int, max_shard_bytes: int) -> Layout:
    """Split the plan over world_size ranks; each rank cuts its units into shards of at most
    max_shard_bytes as a single process does (so one rank gives the single-process files)."""
    shares = assign_units(plan.units, world_size)
    shards = [
        split_into_shards([list(plan.units[index].outputs) for index in share], max_shard_bytes) if share or rank == 0 else []
        for rank, share in enumerate(shares)
    ]
    names = iter(shard_file_names(sum(len(rank_shards) for rank_shards in shards)))
    return Layout(shares, shards, [[next(names) for _ in rank_shards] for rank_shards in shards])


# ---- writing -----------------------------------------------------------------------------------


def file_metadata(plan: Plan) -> dict[str, str]:
    """The safetensors metadata of every output file: the input's own (author, license, ...) and
    this run's record as sorted JSON."""
    return {**plan.metadata, "format": "pt", METADATA_KEY: json.dumps(plan.record, sort_keys=True)}


def write_units(
    plan: Plan,
    checkpoint: Checkpoint,
    units: list[Unit],
    writers: dict[str, SafetensorsWriter],
    unit_written: Callable[[Unit], None],
    *,
    overlap: bool | None = None,
) -> None:
    """Make each unit, write its tensors and call unit_written (which may raise to stop) once
    they are handed to the writer; close every file when all is written, or abort them all on
    any error. With overlap (pipeline.py) reading, making and writing run side by side, with
    the same bytes as the plain loop; None: overlap unless every unit is under
    pipeline.OVERLAP_MIN_BYTES. A run whose tensors are all small runs on one CPU thread, and
    freed tensor buffers go back to the system (process.py says why)."""
    return_freed_buffers()
    device = getattr(plan.options, "device", "cpu")
    largest = _largest_call(plan, units)

    disk = pipeline.DiskSync(SYNC_BYTES)

    def write(name: str, tensor: torch.Tensor) -> None:
        writers[name].write(name, tensor)

    def write_behind(name: str, tensor: torch.Tensor) -> None:
        write(name, tensor)
        disk.wrote(writers[name].path, tensor.numel() * tensor.element_size())

    try:
        with threads_for(largest, device):
            if overlap or overlap is None and pipeline.worth_overlapping(units):
                disk.start()
                pipeline.convert_units(plan, checkpoint, units, execute, write_behind, unit_written, device=device)
                with pipeline.timed("close: wait for the disk sync"):
                    disk.stop()
            else:
                for unit, tensors in execute_all(plan, checkpoint, units):
                    for name, tensor in tensors.items():
                        write(name, tensor)
                    unit_written(unit)
        with pipeline.timed("close: fsync and close"):
            for writer in dict.fromkeys(writers.values()):
                writer.close()
    except BaseException:
        disk.stop(wait=False)  # its descriptors close with it; what is aborted needs no sync
        for writer in dict.fromkeys(writers.values()):
            writer.abort()
        raise


def write_share(plan: Plan, checkpoint: Checkpoint, layout: Layout, rank: int, directory: Path, unit_written: Callable[[Unit], None], *, overlap: bool | None = None) -> None:
    """Rank `rank`'s units into its shard files in directory."""
    units = [plan.units[index] for index in layout.shares[rank]]
    writers = open_writers(layout.shards[rank], [directory / name for name in layout.names[rank]], file_metadata(plan))
    write_units(plan, checkpoint, units, writers, unit_written, overlap=overlap)


def _copy_side_files(source: Path, target: Path, skipped: set[str]) -> list[str]:
    """Everything beside the checkpoint but weight files, at any depth (a tokenizer, configs,
    a README), so no high-precision weights ride along."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [name for name in names if is_weight_file(Path(directory) / name)]

    copied = []
    for entry in sorted(source.iterdir()):
        if entry.name in skipped or is_weight_file(entry):
            continue
        if entry.is_dir() and not any(path.is_file() and not is_weight_file(path) for path in entry.rglob("*")):
            continue  # a folder of weight files alone (shards/, original/) would arrive empty
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, ignore=ignore)
        else:
            shutil.copyfile(entry, target / entry.name)
        copied.append(entry.name)
    return copied


def finish(plan: Plan, layout: Layout, staging: Path) -> list[str]:
    """Rank 0's last step for a directory output: the index, config.json, the plan's extra JSON
    files and the input's side files (tokenizer ...); returns the side files copied."""
    shards = [shard for rank_shards in layout.shards for shard in rank_shards]
    if len(shards) > 1:
        write_index(staging / ("model" + INDEX_SUFFIX), shards, layout.files)
    skipped = {CONFIG_NAME, *plan.dropped_files, *plan.extra_files}
    copied = _copy_side_files(plan.directory, staging, skipped) if plan.directory is not None else []
    if plan.config is not None:
        write_json(staging / CONFIG_NAME, plan.config)
    for name, payload in plan.extra_files.items():
        write_json(staging / name, payload)
    return copied


def check_output(plan: Plan, output: Path, force: bool) -> None:
    """A file output for a file input, a directory (not named *.safetensors) for a directory."""
    if plan.directory is None and not output.name.endswith(SAFETENSORS_SUFFIX):
        raise UsageError(f"output {output} must end with {SAFETENSORS_SUFFIX} for a single-file input")
    if plan.directory is not None and output.name.endswith(SAFETENSORS_SUFFIX):
        raise UsageError(f"output {output} names a file, but the input is a model directory: the output is a directory")
    check_output_path(output, plan.input_path, force)


def run(
    plan: Plan,
    output: Path,
    *,
    checkpoint: Checkpoint | None = None,
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Progress | None = None,
    overlap: bool | None = None,
) -> dict:
    """Write the plan's output at `output` in this process (rank 0 of 1); overlap: read, make
    and write side by side (pipeline.py), else one after the other (the same bytes); None:
    overlap where the units are large enough to gain (write_units).

    Written under a temporary sibling and renamed when complete: after any error nothing is
    left at `output`, and an existing output is replaced (only with force) at the very end.
    """
    check_output(plan, output, force)
    checkpoint = checkpoint if checkpoint is not None else open_checkpoint(plan.input_path)
    start = time.perf_counter()
    tensors_done = bytes_done = 0

    def unit_written(unit: Unit) -> None:
        nonlocal tensors_done, bytes_done
        tensors_done += unit.tensors_in
        bytes_done += unit.bytes_in
        if progress is not None:
            progress(tensors_done, bytes_done)

    is_dir = plan.directory is not None
    with staged_output(output, is_dir, force) as staging:
        if is_dir:
            layout = plan_layout(plan, 1, max_shard_bytes)
            write_share(plan, checkpoint, layout, 0, staging, unit_written, overlap=overlap)
            copied, files = finish(plan, layout, staging), layout.files
        else:  # one file: every unit into the staging file itself
            specs = [spec for unit in plan.units for spec in unit.outputs]
            writers = open_writers([specs], [staging], file_metadata(plan))
            write_units(plan, checkpoint, plan.units, writers, unit_written, overlap=overlap)
            copied, files = [], [output.name]
    return run_report(plan, output, sorted(files), copied, time.perf_counter() - start)


def run_report(plan: Plan, output: Path, files: list[str], copied: list[str], seconds: float) -> dict:
    """What a finished run wrote and how fast: the plan's summary, the files, the time."""
    return {
        **plan.summary(),
        "output": str(output),
        "files": files,
        "copied_files": copied,
        "seconds": seconds,
        "mb_per_s": plan.bytes_in / 1e6 / seconds if seconds > 0 else None,
    }
