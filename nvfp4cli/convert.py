"""Checkpoint conversion: the jobs behind `nvfp4 quantize`, `nvfp4 dequantize` and `nvfp4 inspect`.

    plan = plan_quantize(open_checkpoint("model_dir"), QuantizeOptions(mode="rs", seed=7))
    report = run(plan, Path("model_dir-nvfp4"), force=False, max_shard_bytes=5 * 10**9)

A plan says, before anything is read, what each input tensor becomes (quantized, in which fused
group, or copied, and why) and what the output holds; run() then streams it one unit (a tensor
or a fused group) at a time into shards whose layout is fixed up front, so memory stays near the
largest unit whatever the checkpoint size. Progress goes to a callback; nothing here prints.
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from . import __version__
from .api import SUPPORTED_DTYPES, QuantizedTensor, parse_dtype, parse_mode, parse_scale_rule, quantize, raise_if_not_finite
from .checkpoint import (
    COMPRESSED_TENSORS_FORMAT,
    CONFIG_NAME,
    INDEX_SUFFIX,
    METADATA_KEY,
    MODELOPT_FORMAT,
    SAFETENSORS_SUFFIX,
    Checkpoint,
    LogicalWeight,
    SafetensorsWriter,
    TensorSpec,
    check_output_path,
    shard_file_names,
    split_into_shards,
    staged_output,
    write_index,
    write_json,
)
from .errors import DataError, UsageError
from .format import BLOCK_SIZE, Mode, per_tensor_scale_from_amax
from .kernels import get_backend, resolve_backend
from .modules import default_skip_reason, fused_group_key, module_name
from .rng import SEED_LIMIT, tensor_seed

QUANT_FORMATS = (COMPRESSED_TENSORS_FORMAT, MODELOPT_FORMAT)
CT_FORMAT_NAME = "nvfp4-pack-quantized"
MODELOPT_QUANT_ALGO = "W4A16_NVFP4"
HF_QUANT_CONFIG_NAME = "hf_quant_config.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
# Files of other weight formats are not copied: they would carry the unquantized weights along.
WEIGHT_FILE_SUFFIXES = (SAFETENSORS_SUFFIX, INDEX_SUFFIX, ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")

Progress = Callable[[int, int], None]  # (input tensors done, input bytes done)


@dataclass(frozen=True)
class Selection:
    """The decision for one weight tensor: quantize it, or keep it and say why."""

    name: str
    quantize: bool
    reason: str = ""
    group: str | None = None  # fused group key, when it shares a global scale with others


def _ineligible_reason(spec: TensorSpec) -> str:
    if len(spec.shape) != 2:
        return f"{len(spec.shape)}-D: only 2-D weights are quantized"
    if spec.dtype not in SUPPORTED_DTYPES:
        return f"dtype {spec.dtype} is not bfloat16, float16 or float32"
    if spec.shape[-1] % BLOCK_SIZE or spec.shape[-1] == 0:
        return f"last dim {spec.shape[-1]} is not a multiple of {BLOCK_SIZE}"
    return ""


def _policy_reason(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    for pattern in exclude:
        if fnmatch.fnmatchcase(name, pattern):
            return f"excluded by --exclude {pattern!r}"
    if include:
        return "" if any(fnmatch.fnmatchcase(name, pattern) for pattern in include) else "not matched by --include"
    return default_skip_reason(name)


def select_weights(checkpoint: Checkpoint, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[Selection]:
    """A decision for every `*.weight` of two or more dims; other tensors are always copied.

    Quantized: 2-D floating weights whose last dim is a multiple of 16, except embeddings,
    lm_head, norms and MoE routers. --include globs (on tensor names) replace those name rules;
    --exclude globs win over everything. Shape and dtype rules cannot be overridden.
    """
    selections = []
    for name in checkpoint.tensor_names():
        spec = checkpoint.info(name)
        if not name.endswith(".weight") or len(spec.shape) < 2:
            continue
        reason = _ineligible_reason(spec) or _policy_reason(name, include, exclude)
        selections.append(Selection(name, not reason, reason, None if reason else fused_group_key(name)))
    return selections


@dataclass(frozen=True)
class Unit:
    """Input tensors read together and the output tensors made from them."""

    inputs: tuple[str, ...]
    outputs: tuple[TensorSpec, ...]
    bytes_in: int
    produce: Callable[[], dict[str, torch.Tensor]] = field(repr=False)
    converted: tuple[str, ...] = ()  # logical weights (de)quantized here; none for a copy


@dataclass
class Plan:
    """Everything a run writes, known before any tensor is read."""

    operation: str  # "quantize" or "dequantize"
    checkpoint: Checkpoint
    units: list[Unit]
    record: dict  # this run's settings, stored in every output file's metadata
    selections: list[Selection] = field(default_factory=list)
    config: dict | None = None  # config.json for a directory output
    extra_files: dict[str, dict] = field(default_factory=dict)  # more JSON files to write
    dropped_files: tuple[str, ...] = ()  # input files not to copy (superseded metadata)

    def __post_init__(self) -> None:
        # An input may already hold a name a converted weight produces ("X.weight_scale" beside
        # a float "X.weight"): refuse rather than write one name twice.
        producer: dict[str, str] = {}
        for unit in self.units:
            for spec in unit.outputs:
                if spec.name in producer:
                    raise DataError(f"{self.checkpoint.path}: output tensor {spec.name!r} would come both from {producer[spec.name]!r} and from {unit.inputs[0]!r}")
                producer[spec.name] = unit.inputs[0]

    @property
    def bytes_in(self) -> int:
        return sum(unit.bytes_in for unit in self.units)

    @property
    def bytes_out(self) -> int:
        return sum(spec.nbytes for unit in self.units for spec in unit.outputs)

    @property
    def tensors_in(self) -> int:
        return sum(len(unit.inputs) for unit in self.units)

    def summary(self) -> dict:
        """What the plan does, for --dry-run and the final report."""
        converted = [name for unit in self.units for name in unit.converted]
        return {
            "operation": self.operation,
            "input": str(self.checkpoint.path),
            **{key: value for key, value in self.record.items() if key not in ("producer", "quantization_config")},
            "tensors_in": self.tensors_in,
            f"tensors_{self.operation}d": len(converted),
            "tensors_copied": sum(not unit.converted for unit in self.units),
            f"{self.operation}d": converted,
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.selections if not s.quantize],
            "fused_groups": _fused_groups(self.selections),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "ratio": self.bytes_in / self.bytes_out if self.bytes_out else None,
        }


def _fused_groups(selections: list[Selection]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for selection in selections:
        if selection.group is not None:
            groups.setdefault(selection.group, []).append(selection.name)
    return {key: names for key, names in groups.items() if len(names) > 1}


# ---- output layouts --------------------------------------------------------------------------


def quantized_specs(name: str, shape: tuple[int, ...], fmt: str) -> tuple[TensorSpec, ...]:
    """The stored tensors of an NVFP4 weight `name` of logical shape [..., K] in format fmt."""
    *lead, k = shape
    packed_shape, scale_shape = (*lead, k // 2), (*lead, k // BLOCK_SIZE)
    if fmt == COMPRESSED_TENSORS_FORMAT:
        module = module_name(name)
        return (
            TensorSpec(f"{module}.weight_packed", torch.uint8, packed_shape),
            TensorSpec(f"{module}.weight_scale", torch.float8_e4m3fn, scale_shape),
            TensorSpec(f"{module}.weight_global_scale", torch.float32, (1,)),
        )
    return (
        TensorSpec(name, torch.uint8, packed_shape),
        TensorSpec(f"{name}_scale", torch.float8_e4m3fn, scale_shape),
        TensorSpec(f"{name}_scale_2", torch.float32, ()),
    )


def quantized_tensors(name: str, q: QuantizedTensor, fmt: str) -> dict[str, torch.Tensor]:
    """Stored tensors of q: compressed-tensors keeps 1/pts as the global scale, ModelOpt pts."""
    packed, scales, scale_spec = quantized_specs(name, tuple(q.shape), fmt)
    per_tensor = q.global_scale if fmt == COMPRESSED_TENSORS_FORMAT else q.per_tensor_scale
    return {packed.name: q.packed, scales.name: q.scales, scale_spec.name: per_tensor.reshape(scale_spec.shape)}


def compressed_tensors_config(ignore: list[str]) -> dict:
    """config.json's quantization_config for weight-only NVFP4, as compressed-tensors writes it."""
    return {
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 4,
                    "type": "float",
                    "symmetric": True,
                    "group_size": BLOCK_SIZE,
                    "strategy": "tensor_group",
                    "dynamic": False,
                    "scale_dtype": "torch.float8_e4m3fn",
                },
                "input_activations": None,
                "output_activations": None,
                "format": CT_FORMAT_NAME,
            }
        },
        "quant_method": "compressed-tensors",
        "kv_cache_scheme": None,
        "format": CT_FORMAT_NAME,
        "quantization_status": "compressed",
        "ignore": ignore,
    }


def modelopt_configs(ignore: list[str]) -> tuple[dict, dict]:
    """(config.json's quantization_config, hf_quant_config.json) for ModelOpt W4A16_NVFP4."""
    quantization_config = {"quant_method": "modelopt", "quant_algo": MODELOPT_QUANT_ALGO, "group_size": BLOCK_SIZE, "ignore": ignore}
    hf_quant_config = {
        "producer": {"name": "nvfp4cli", "version": __version__},
        "quantization": {"quant_algo": MODELOPT_QUANT_ALGO, "kv_cache_quant_algo": None, "group_size": BLOCK_SIZE, "exclude_modules": ignore},
    }
    return quantization_config, hf_quant_config


def _ignored_modules(selections: list[Selection]) -> list[str]:
    # Every weight left in high precision, and lm_head even when tied to the embedding (absent
    # from the file): loaders quantize every Linear that is not ignored.
    ignore = [module_name(selection.name) for selection in selections if not selection.quantize]
    if not any(module_name(selection.name).split(".")[-1] == "lm_head" for selection in selections if selection.quantize):
        ignore.append("lm_head")
    return list(dict.fromkeys(ignore))


# ---- producing tensors -----------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeOptions:
    """Settings of a quantize job (see `nvfp4 quantize --help`)."""

    mode: Mode | str = Mode.RN
    seed: int | None = None  # required for RS: each tensor gets tensor_seed(seed, name)
    fmt: str = COMPRESSED_TENSORS_FORMAT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    backend: str = "auto"
    device: str = "cpu"
    scale_rule: str = "max"  # how block scales are chosen: max, 4over6 or mse (docs/format.md)


def _group_per_tensor_scale(checkpoint: Checkpoint, tensors: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    amaxes = []
    for name, x in tensors.items():
        amax = get_backend(backend).amax(x.contiguous())
        try:
            raise_if_not_finite(x, amax)
        except DataError as exc:  # the same words as for a weight quantized alone
            raise DataError(f"{checkpoint.file(name)}: tensor {name!r}: {exc}") from None
        amaxes.append(amax)
    return per_tensor_scale_from_amax(torch.stack(amaxes).amax())


def _quantize_unit(checkpoint: Checkpoint, names: tuple[str, ...], options: QuantizeOptions, backend: str) -> dict[str, torch.Tensor]:
    device = torch.device(options.device)
    tensors = {name: checkpoint.get_tensor(name).to(device) for name in names}
    shared_pts = _group_per_tensor_scale(checkpoint, tensors, backend) if len(names) > 1 else None
    outputs: dict[str, torch.Tensor] = {}
    for name in names:
        x = tensors.pop(name)  # free each input as soon as it is quantized
        seed = tensor_seed(options.seed, name) if options.mode is Mode.RS else None
        try:
            q = quantize(x, options.mode, seed=seed, offset=0, per_tensor_scale=shared_pts, backend=backend, scale_rule=options.scale_rule)
        except DataError as exc:
            raise DataError(f"{checkpoint.file(name)}: tensor {name!r}: {exc}") from None
        outputs.update({key: value.cpu() for key, value in quantized_tensors(name, q, options.fmt).items()})
    return outputs


def _copy_unit(checkpoint: Checkpoint, name: str) -> dict[str, torch.Tensor]:
    return {name: checkpoint.get_tensor(name)}


def _copy(checkpoint: Checkpoint, name: str) -> Unit:
    spec = checkpoint.info(name)
    return Unit((name,), (spec,), spec.nbytes, partial(_copy_unit, checkpoint, name))


def _check_not_quantized(checkpoint: Checkpoint) -> None:
    for weight in checkpoint.logical_weights().values():
        if weight.quantized:
            raise DataError(f"{checkpoint.path}: already NVFP4 ({weight.format}: {weight.tensors[0]}); dequantize it first")


def _resolve_device_backend(options: QuantizeOptions) -> str:
    try:
        device = torch.device(options.device)
    except RuntimeError:
        raise UsageError(f"unknown device {options.device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return resolve_backend(options.backend, device)


def plan_quantize(checkpoint: Checkpoint, options: QuantizeOptions) -> Plan:
    """Decide what every tensor becomes and lay out the output; reads headers only."""
    mode = parse_mode(options.mode)
    if options.fmt not in QUANT_FORMATS:
        raise UsageError(f"unknown format {options.fmt!r}; valid: {', '.join(QUANT_FORMATS)}")
    if mode is Mode.RS and options.seed is None:
        raise UsageError("mode 'rs' needs a seed")
    if mode is Mode.RS and not (isinstance(options.seed, int) and 0 <= options.seed < SEED_LIMIT):
        raise UsageError(f"seed must be an integer in [0, 2^63), got {options.seed!r}")
    # RN uses no random bits: a seed would only make equal outputs differ in their metadata.
    options = replace(options, mode=mode, seed=options.seed if mode is Mode.RS else None)
    backend = _resolve_device_backend(options)
    parse_scale_rule(options.scale_rule, backend)
    _check_not_quantized(checkpoint)
    selections = select_weights(checkpoint, options.include, options.exclude)
    chosen = {selection.name: selection for selection in selections if selection.quantize}
    members: dict[str, list[str]] = {}
    for name, selection in chosen.items():
        members.setdefault(selection.group or name, []).append(name)
    units: list[Unit] = []
    for name in checkpoint.tensor_names():
        if name not in chosen:
            units.append(_copy(checkpoint, name))
            continue
        names = tuple(members.pop(chosen[name].group or name, ()))
        if names:  # a fused group becomes one unit where its first member appears
            specs = tuple(spec for member in names for spec in quantized_specs(member, checkpoint.shape(member), options.fmt))
            bytes_in = sum(checkpoint.info(member).nbytes for member in names)
            units.append(Unit(names, specs, bytes_in, partial(_quantize_unit, checkpoint, names, options, backend), names))
    ignore = _ignored_modules(selections)
    record = {"producer": f"nvfp4cli {__version__}", "format": options.fmt, "mode": mode.value, "seed": options.seed, "scale_rule": options.scale_rule}
    extra_files: dict[str, dict] = {}
    if options.fmt == COMPRESSED_TENSORS_FORMAT:
        quantization_config = compressed_tensors_config(ignore)
    else:
        quantization_config, extra_files[HF_QUANT_CONFIG_NAME] = modelopt_configs(ignore)
    record["quantization_config"] = quantization_config
    config = None if checkpoint.config is None else {**checkpoint.config, "quantization_config": quantization_config}
    return Plan("quantize", checkpoint, units, record, selections, config, extra_files, (HF_QUANT_CONFIG_NAME,))


def _dequantize_unit(weight: LogicalWeight, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {weight.name: weight.load_float(dtype)}


def plan_dequantize(checkpoint: Checkpoint, dtype: str = "bf16") -> Plan:
    """NVFP4 weights (either format) back to float `dtype`; every other tensor is copied as is."""
    float_dtype = parse_dtype(dtype)
    units = []
    for name, weight in checkpoint.logical_weights().items():
        if not weight.quantized:
            units.append(_copy(checkpoint, name))
            continue
        bytes_in = sum(checkpoint.info(stored).nbytes for stored in weight.tensors)
        spec = TensorSpec(name, float_dtype, weight.shape)
        units.append(Unit(weight.tensors, (spec,), bytes_in, partial(_dequantize_unit, weight, float_dtype), (name,)))
    if not any(unit.converted for unit in units):
        raise DataError(f"{checkpoint.path}: no NVFP4 weights to dequantize")
    config = None
    if checkpoint.config is not None:
        config = {key: value for key, value in checkpoint.config.items() if key != "quantization_config"}
    record = {"producer": f"nvfp4cli {__version__}", "dtype": dtype}
    return Plan("dequantize", checkpoint, units, record, config=config, dropped_files=(HF_QUANT_CONFIG_NAME,))


# ---- running a plan --------------------------------------------------------------------------


def default_output(input_path: Path, suffix: str = "nvfp4") -> Path:
    """in.safetensors -> in.nvfp4.safetensors; a directory D (or D/x.index.json) -> D-nvfp4, its
    sibling (also for `.` or `..`, which name no directory of their own)."""
    if input_path.is_dir():
        if input_path.name in ("", ".", ".."):
            input_path = input_path.resolve()
        return input_path.parent / f"{input_path.resolve().name}-{suffix}"
    if input_path.name.endswith(INDEX_SUFFIX):
        return default_output(input_path.parent, suffix)
    return input_path.with_name(f"{input_path.name.removesuffix(SAFETENSORS_SUFFIX)}.{suffix}{SAFETENSORS_SUFFIX}")


def _copy_side_files(source: Path, target: Path, skipped: set[str]) -> list[str]:
    copied = []
    for entry in sorted(source.iterdir()):
        if entry.name in skipped or entry.name.endswith(WEIGHT_FILE_SUFFIXES):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name)
        else:
            shutil.copyfile(entry, target / entry.name)
        copied.append(entry.name)
    return copied


def _open_writers(plan: Plan, staging: Path, is_dir: bool, max_shard_bytes: int, metadata: dict[str, str]) -> dict[str, SafetensorsWriter]:
    """One writer per output file; returns the writer of every output tensor by name."""
    units = [list(unit.outputs) for unit in plan.units]
    if not is_dir:
        shards, paths = [[spec for unit in units for spec in unit]], [staging]
    else:
        shards = split_into_shards(units, max_shard_bytes)
        names = shard_file_names(len(shards))
        paths = [staging / name for name in names]
        if len(shards) > 1:
            write_index(staging / ("model" + INDEX_SUFFIX), shards, names)
    return open_writers(shards, paths, metadata)


def open_writers(shards: list[list[TensorSpec]], paths: list[Path], metadata: dict[str, str]) -> dict[str, SafetensorsWriter]:
    """A writer per shard file; returns the writer of every tensor by name."""
    writers: dict[str, SafetensorsWriter] = {}
    for shard, path in zip(shards, paths):
        writer = SafetensorsWriter(path, shard, metadata)
        writers.update({spec.name: writer for spec in shard})
    return writers


def file_metadata(plan: Plan) -> dict[str, str]:
    """The safetensors metadata of every output file: this run's record as sorted JSON."""
    return {"format": "pt", METADATA_KEY: json.dumps(plan.record, sort_keys=True)}


def write_units(units: list[Unit], writers: dict[str, SafetensorsWriter], unit_written: Callable[[Unit], None]) -> None:
    """Produce each unit, write its tensors and call unit_written (which may raise to stop);
    close every file when all is written, or abort them all on any error."""
    try:
        for unit in units:
            for name, tensor in unit.produce().items():
                writers[name].write(name, tensor)
            unit_written(unit)
        for writer in dict.fromkeys(writers.values()):
            writer.close()
    except BaseException:
        for writer in dict.fromkeys(writers.values()):
            writer.abort()
        raise


def write_metadata_files(plan: Plan, staging: Path) -> list[str]:
    """config.json, the plan's extra JSON files and the input directory's side files (tokenizer
    ...); returns the names copied."""
    directory = plan.checkpoint.directory
    skipped = {CONFIG_NAME, *plan.dropped_files, *plan.extra_files}
    copied = _copy_side_files(directory, staging, skipped) if directory is not None else []
    if plan.config is not None:
        write_json(staging / CONFIG_NAME, plan.config)
    for name, payload in plan.extra_files.items():
        write_json(staging / name, payload)
    return copied


def run(plan: Plan, output: Path, *, force: bool = False, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, progress: Progress | None = None) -> dict:
    """Write the plan's output at `output` (a file for a file input, else a directory).

    Written under a temporary sibling and renamed when complete: after any error nothing is
    left at `output`, and an existing output is replaced (only with force) at the very end.
    """
    is_dir = plan.checkpoint.directory is not None
    if not is_dir and not output.name.endswith(SAFETENSORS_SUFFIX):
        raise UsageError(f"output {output} must end with {SAFETENSORS_SUFFIX} for a single-file input")
    check_output_path(output, plan.checkpoint.path, force)
    start = time.perf_counter()
    tensors_done = bytes_done = 0

    def unit_written(unit: Unit) -> None:
        nonlocal tensors_done, bytes_done
        tensors_done += len(unit.inputs)
        bytes_done += unit.bytes_in
        if progress is not None:
            progress(tensors_done, bytes_done)

    with staged_output(output, is_dir) as staging:
        writers = _open_writers(plan, staging, is_dir, max_shard_bytes, file_metadata(plan))
        write_units(plan.units, writers, unit_written)
        copied = write_metadata_files(plan, staging) if is_dir else []
        files = sorted(path.name for path in dict.fromkeys(writer.path for writer in writers.values()))
    return run_report(plan, output, files, copied, time.perf_counter() - start)


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


def inspect_checkpoint(checkpoint: Checkpoint) -> dict:
    """Per logical tensor: shape, stored dtype, format, scales; totals and compression ratio.

    bytes_float counts an NVFP4 weight at 2 bytes an element (its bf16 size)."""
    rows = []
    for name, weight in checkpoint.logical_weights().items():
        stored = sum(checkpoint.info(tensor).nbytes for tensor in weight.tensors)
        row = {"name": name, "shape": list(weight.shape), "format": weight.format, "quantized": weight.quantized, "bytes": stored}
        if weight.quantized:
            pts = float(weight.load_per_tensor_scale())
            row.update(dtype="nvfp4", bytes_float=math.prod(weight.shape) * 2, per_tensor_scale=pts, global_scale=1.0 / pts)
        else:
            row.update(dtype=str(checkpoint.dtype(name)).removeprefix("torch."), bytes_float=stored)
        rows.append(row)
    bytes_stored = sum(row["bytes"] for row in rows)
    bytes_float = sum(row["bytes_float"] for row in rows)
    return {
        "path": str(checkpoint.path),
        "files": [str(file) for file in checkpoint.files],
        "metadata": {key: value for key, value in checkpoint.metadata.items() if key != METADATA_KEY},
        "record": checkpoint.record(),
        "tensors": rows,
        "totals": {
            "tensors": len(rows),
            "quantized": sum(row["quantized"] for row in rows),
            "bytes_float": bytes_float,
            "bytes_stored": bytes_stored,
            "ratio": bytes_float / bytes_stored if bytes_stored else None,
        },
    }
