"""What a conversion writes, decided from the headers before any tensor is read.

    plan = plan_quantize(open_checkpoint("model_dir"), QuantizeOptions(mode="rs", seed=7))

A plan is pure data (picklable, so --workers processes and torchrun ranks get the same one): for
each unit (one tensor, or a fused group that shares a global scale) the logical weights it reads,
what it does with them (copy, quantize, dequantize) and the tensors it writes, plus the config and
side files of a directory output. execute.py carries it out.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import __version__, formats
from .api import FLOAT_DTYPES, SUPPORTED_DTYPES, parse_mode
from .errors import DataError, UsageError
from .format import BLOCK_SIZE, SCALE_RULES, Mode
from .formats import LogicalWeight
from .formats.modelopt import HF_QUANT_CONFIG_NAME
from .io import INDEX_SUFFIX, SAFETENSORS_SUFFIX, Checkpoint, TensorSpec
from .kernels import resolve_backend
from .modules import default_skip_reason, fused_group_key, module_name
from .rng import SEED_LIMIT

COPY, QUANTIZE, DEQUANTIZE = "copy", "quantize", "dequantize"


@dataclass(frozen=True)
class Selection:
    """The decision for one weight tensor: quantize it, or keep it and say why."""

    name: str
    quantize: bool
    reason: str = ""
    group: str | None = None  # fused group key, when it shares a global scale with others


@dataclass(frozen=True)
class Unit:
    """Logical weights read together, what is done with them, and the tensors written."""

    action: str  # COPY, QUANTIZE or DEQUANTIZE
    inputs: tuple[str, ...]  # logical weight names (a fused group has several)
    outputs: tuple[TensorSpec, ...]
    bytes_in: int
    tensors_in: int  # stored tensors read

    @property
    def converted(self) -> tuple[str, ...]:
        """The logical weights (de)quantized here; none for a copy."""
        return () if self.action == COPY else self.inputs


@dataclass(frozen=True)
class QuantizeOptions:
    """Settings of a quantize job (see `nvfp4 quantize --help`)."""

    mode: Mode = Mode.RN
    seed: int | None = None  # required for RS: each tensor gets tensor_seed(seed, name)
    fmt: str = formats.compressed_tensors.NAME
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    backend: str = "auto"  # auto, reference or triton (resolved by plan_quantize)
    device: str = "cpu"
    scale_rule: str = "max"  # how block scales are chosen: max, 4over6 or mse (docs/format.md)
    block_2d: bool = False  # each block's scale from its 16x16 tile (a weight and its transpose quantize alike)
    # Experts get tensor scale 1 (global scale 1), the one per-expert layout transformers 5.x
    # loads correctly (it drops the experts' global scales; docs/moe.md); costs about 3 dB there.
    experts_unit_scale: bool = False
    # W4A4: each Linear's calibrated input amax by module name (nvfp4cli.calibrate); () is W4A16.
    input_amax: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class DequantizeOptions:
    dtype: torch.dtype = torch.bfloat16
    device: str = "cpu"  # where NVFP4 weights are decoded (the bytes are the same)


@dataclass
class Plan:
    """Everything a run writes, known before any tensor is read. Pure data."""

    operation: str  # QUANTIZE or DEQUANTIZE
    input_path: Path
    directory: Path | None  # the input's model directory; None for a single file (file output)
    weights: dict[str, LogicalWeight]
    units: list[Unit]
    options: QuantizeOptions | DequantizeOptions
    record: dict  # this run's settings, stored in every output file's metadata
    selections: list[Selection] = field(default_factory=list)
    config: dict | None = None  # config.json for a directory output
    extra_files: dict[str, dict] = field(default_factory=dict)  # more JSON files to write
    dropped_files: tuple[str, ...] = ()  # input side files not to copy (superseded metadata)
    skipped_files: list[dict[str, str]] = field(default_factory=list)  # weight files neither converted nor copied
    metadata: dict[str, str] = field(default_factory=dict)  # the input's safetensors metadata, kept

    def __post_init__(self) -> None:
        # An input may already hold a name a converted weight produces ("X.weight_scale" beside
        # a float "X.weight"): refuse rather than write one name twice.
        producer: dict[str, str] = {}
        for unit in self.units:
            for spec in unit.outputs:
                if spec.name in producer:
                    raise DataError(f"{self.input_path}: output tensor {spec.name!r} would come both from {producer[spec.name]!r} and from {unit.inputs[0]!r}")
                producer[spec.name] = unit.inputs[0]

    @property
    def bytes_in(self) -> int:
        return sum(unit.bytes_in for unit in self.units)

    @property
    def bytes_out(self) -> int:
        return sum(spec.nbytes for unit in self.units for spec in unit.outputs)

    @property
    def tensors_in(self) -> int:
        return sum(unit.tensors_in for unit in self.units)

    def summary(self) -> dict:
        """What the plan does, for --dry-run and the final report. ratio: the output's size with
        its NVFP4 weights counted at bf16 (2 bytes an element), over its size as written: the
        same number `nvfp4 inspect` gives for the output, whatever the input's dtypes."""
        converted = [unit for unit in self.units if unit.action != COPY]
        ratio = None
        if self.operation == QUANTIZE and self.bytes_out:
            as_bf16 = sum(2 * math.prod(self.weights[name].shape) for unit in converted for name in unit.inputs)
            copied = sum(spec.nbytes for unit in self.units if unit.action == COPY for spec in unit.outputs)
            ratio = (as_bf16 + copied) / self.bytes_out
        return {
            "operation": self.operation,
            "input": str(self.input_path),
            **{key: value for key, value in self.record.items() if key not in ("producer", "quantization_config")},
            "tensors_in": self.tensors_in,
            f"tensors_{self.operation}d": sum(len(unit.inputs) for unit in converted),
            "tensors_copied": len(self.units) - len(converted),
            f"{self.operation}d": [name for unit in converted for name in unit.inputs],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.selections if not s.quantize],
            "skipped_files": self.skipped_files,
            "fused_groups": _fused_groups(self.selections),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "ratio": ratio,
        }


def _fused_groups(selections: list[Selection]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for selection in selections:
        if selection.group is not None:
            groups.setdefault(selection.group, []).append(selection.name)
    return {key: names for key, names in groups.items() if len(names) > 1}


# ---- which weights are quantized ---------------------------------------------------------------


def _ineligible_reason(weight: LogicalWeight, spec: TensorSpec, block_2d: bool = False) -> str:
    if len(weight.shape) != 2:
        return f"{len(weight.shape)}-D: only 2-D weights are quantized"
    if not weight.quantized and spec.torch_dtype not in SUPPORTED_DTYPES:
        return f"dtype {spec.dtype} is not bfloat16, float16 or float32"
    if weight.shape[-1] % BLOCK_SIZE or weight.shape[-1] == 0:
        return f"last dim {weight.shape[-1]} is not a multiple of {BLOCK_SIZE}"
    if weight.shape[0] == 0:
        return "no rows (an empty tensor): nothing to quantize"
    if block_2d and weight.shape[0] % BLOCK_SIZE:
        return f"{weight.shape[0]} rows are not a multiple of {BLOCK_SIZE}, which --block-2d needs"
    return ""


def _policy_reason(name: str, include: tuple[str, ...], exclude: tuple[str, ...], kept: dict[str, str]) -> str:
    if name in kept:
        return kept[name]
    for pattern in exclude:
        if fnmatch.fnmatchcase(name, pattern):
            return f"excluded by --exclude {pattern!r}"
    if include:
        return "" if any(fnmatch.fnmatchcase(name, pattern) for pattern in include) else "not matched by --include"
    return default_skip_reason(name)


def _unmatched_patterns(names: list[str], flag: str, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise UsageError(f"{flag} {pattern!r} matches no weight of this checkpoint")


def select_weights(
    checkpoint: Checkpoint,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    weights: dict[str, LogicalWeight] | None = None,
    block_2d: bool = False,
) -> list[Selection]:
    """A decision for every `*.weight` of two or more dims; other tensors are always copied.

    Quantized: 2-D weights (float, or decoded from a quantized input) whose last dim is a
    multiple of 16, except embeddings, lm_head, norms and MoE routers. --include globs (on
    tensor names) replace those name rules; --exclude globs win over everything; a glob that
    matches no weight is a usage error. Shape and dtype rules cannot be overridden. A fused group
    is quantized whole or kept whole: a member kept keeps the others, with the reason.
    """
    weights = weights if weights is not None else formats.logical_weights(checkpoint)
    candidates = [name for name, weight in weights.items() if name.endswith(".weight") and len(weight.shape) >= 2]
    _unmatched_patterns(candidates, "--include", include)
    _unmatched_patterns(candidates, "--exclude", exclude)
    kept = always_kept(checkpoint, candidates)
    reasons = {}
    for name in candidates:
        weight = weights[name]
        reasons[name] = _ineligible_reason(weight, checkpoint.info(weight.tensors[0]), block_2d) or _policy_reason(name, include, exclude, kept)
    groups: dict[str, list[str]] = {}
    for name in candidates:
        if fused_group_key(name) is not None:
            groups.setdefault(fused_group_key(name), []).append(name)
    for key, members in groups.items():
        kept = [name for name in members if reasons[name]]
        if kept and len(kept) < len(members):
            why = f"fused with {kept[0]} in {key}, which is kept ({reasons[kept[0]]}): engines need the group whole"
            reasons.update({name: why for name in members if not reasons[name]})
    return [Selection(name, not reasons[name], reasons[name], None if reasons[name] else fused_group_key(name)) for name in candidates]


def _config_flag(config: dict, key: str) -> bool:
    """A config flag, also where a multimodal config nests it in text_config."""
    text_config = config.get("text_config")
    return bool(config.get(key, text_config.get(key, False) if isinstance(text_config, dict) else False))


def not_converted_patterns(checkpoint: Checkpoint) -> list[str]:
    """Module patterns an input's quantization_config lists as left unquantized."""
    quantization = formats.base.input_quantization(checkpoint)
    patterns: list[str] = []
    for key in ("modules_to_not_convert", "ignored_layers", "ignore", "exclude_modules"):
        value = quantization.get(key)
        if isinstance(value, list):
            patterns.extend(item for item in value if isinstance(item, str))
    return patterns


def _matches_module(module: str, pattern: str) -> bool:
    """A compressed-tensors "re:" regex, or a glob naming the module or one of its parents."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module) is not None
    return fnmatch.fnmatchcase(module, pattern) or fnmatch.fnmatchcase(module, pattern + ".*")


def always_kept(checkpoint: Checkpoint, names: list[str]) -> dict[str, str]:
    """Weights no option quantizes, with the reason: those the input's quantization_config lists
    as not converted (they stay as they are), and tied weights (an embedding that is also the
    output head: quantizing one name leaves the other missing at load time). A safetensors file
    cannot store one tensor under two names (readers refuse overlapping data), so tie_word_embeddings
    is the one way a checkpoint ties weights."""
    config = checkpoint.config or {}
    patterns = not_converted_patterns(checkpoint)
    kept = {}
    for name in names:
        pattern = next((p for p in patterns if _matches_module(module_name(name), p)), None)
        if pattern is not None:
            kept[name] = f"listed as not converted ({pattern!r}) by the input's quantization_config"
    if _config_flag(config, "tie_word_embeddings"):
        for name in names:
            if default_skip_reason(name) in ("embedding", "lm_head"):
                kept.setdefault(name, "tied to the other end of the model (tie_word_embeddings): kept in high precision")
    return kept


def _ignored_modules(selections: list[Selection]) -> list[str]:
    # Every weight left in high precision, and lm_head even when tied to the embedding (absent
    # from the file): loaders quantize every Linear that is not ignored.
    ignore = [module_name(selection.name) for selection in selections if not selection.quantize]
    if not any(module_name(selection.name).split(".")[-1] == "lm_head" for selection in selections if selection.quantize):
        ignore.append("lm_head")
    return list(dict.fromkeys(ignore))


# ---- plans -------------------------------------------------------------------------------------


def _stored_bytes(checkpoint: Checkpoint, weight: LogicalWeight) -> int:
    total = sum(checkpoint.info(name).nbytes for name in weight.tensors)
    if weight.view is not None:  # one part of one expert of a 3-D expert tensor
        return total // (checkpoint.info(weight.tensors[0]).shape[0] * weight.view.parts)
    return total


def _copy(checkpoint: Checkpoint, weight: LogicalWeight) -> list[Unit]:
    specs = tuple(checkpoint.info(name) for name in weight.tensors)
    return [Unit(COPY, (name,), (spec,), spec.nbytes, 1) for name, spec in zip(weight.tensors, specs)]


def _dequantize(checkpoint: Checkpoint, weight: LogicalWeight, dtype: torch.dtype) -> Unit:
    spec = TensorSpec.of(weight.name, dtype, weight.shape)
    return Unit(DEQUANTIZE, (weight.name,), (spec,), _stored_bytes(checkpoint, weight), len(weight.tensors))


def check_quantize_options(options: QuantizeOptions) -> QuantizeOptions:
    """The options with mode as a Mode, checked; a UsageError names what is wrong."""
    mode = parse_mode(options.mode)
    formats.output_format(options.fmt)
    if mode is Mode.RS and not (isinstance(options.seed, int) and 0 <= options.seed < SEED_LIMIT):
        raise UsageError(f"mode 'rs' needs a seed, an integer in [0, 2^63); got {options.seed!r}")
    if options.scale_rule not in SCALE_RULES:
        raise UsageError(f"unknown scale rule {options.scale_rule!r}; valid: {', '.join(SCALE_RULES)}")
    if options.block_2d and options.scale_rule != "max":
        raise UsageError(f"--block-2d takes the scale rule max only, got {options.scale_rule!r}")
    try:
        device = torch.device(options.device)
    except RuntimeError:
        raise UsageError(f"unknown device {options.device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    backend = resolve_backend(options.backend, device)
    # RN uses no random bits: a seed would only make equal outputs differ in their metadata.
    return QuantizeOptions(**{**vars(options), "mode": mode, "seed": options.seed if mode is Mode.RS else None, "backend": backend})


def _new_metadata(checkpoint: Checkpoint) -> dict[str, str]:
    """The input's own safetensors metadata (author, license, ...), without this tool's record."""
    return {key: value for key, value in checkpoint.metadata.items() if key != formats.base.METADATA_KEY}


def plan_quantize(checkpoint: Checkpoint, options: QuantizeOptions) -> Plan:
    """Decide what every tensor becomes and lay out the output; reads headers only."""
    options = check_quantize_options(options)
    output = formats.output_format(options.fmt)
    weights = formats.logical_weights(checkpoint, split_experts=True)
    already = next((weight for weight in weights.values() if weight.nvfp4), None)
    if already is not None:
        raise DataError(f"{checkpoint.path}: already NVFP4 ({already.format}: {already.tensors[0]}); use `nvfp4 convert` to re-lay it out, or dequantize it first")
    formats.check_decodable(checkpoint, weights)
    selections = select_weights(checkpoint, options.include, options.exclude, weights, options.block_2d)
    chosen = {selection.name: selection for selection in selections if selection.quantize}
    members: dict[str, list[str]] = {}
    for name, selection in chosen.items():
        members.setdefault(selection.group or name, []).append(name)
    units: list[Unit] = []
    for name, weight in weights.items():
        if name not in chosen:
            # A quantized input weight left out is decoded to bf16: its old layout leaves with its
            # config; a float expert of a 3-D tensor is written per expert like the quantized ones.
            if weight.quantized or weight.view is not None:
                units.append(_dequantize(checkpoint, weight, checkpoint.info(weight.tensors[0]).torch_dtype if not weight.quantized else torch.bfloat16))
            else:
                units.extend(_copy(checkpoint, weight))
            continue
        names = tuple(members.pop(chosen[name].group or name, ()))
        if names:  # a fused group becomes one unit where its first member appears
            specs = tuple(spec for member in names for spec in output.specs(member, weights[member].shape))
            bytes_in = sum(_stored_bytes(checkpoint, weights[member]) for member in names)
            tensors_in = sum(len(weights[member].tensors) for member in names)
            units.append(Unit(QUANTIZE, names, specs, bytes_in, tensors_in))
    if options.input_amax:
        units = _with_input_scales(checkpoint, units, dict(options.input_amax), options.fmt)
    quantization_config, extra_files = output.configs(_ignored_modules(selections), activations=bool(options.input_amax))
    record = {
        "producer": f"nvfp4cli {__version__}",
        "format": options.fmt,
        "mode": options.mode.value,
        "seed": options.seed,
        "scale_rule": options.scale_rule,
        **({"block_2d": True} if options.block_2d else {}),
        **({"experts_unit_scale": True} if options.experts_unit_scale else {}),
        **({"scheme": "w4a4"} if options.input_amax else {}),
        "quantization_config": quantization_config,
    }
    config = None if checkpoint.config is None else {**checkpoint.config, "quantization_config": quantization_config}
    used = {name: weights[name] for unit in units for name in unit.inputs if name in weights}
    return Plan(
        QUANTIZE, checkpoint.path, checkpoint.directory, used, units, options, record, selections, config, extra_files,
        (HF_QUANT_CONFIG_NAME,), checkpoint.skipped_files, _new_metadata(checkpoint),
    )  # fmt: skip


def _with_input_scales(checkpoint: Checkpoint, units: list[Unit], amax: dict[str, float], fmt: str) -> list[Unit]:
    """W4A4: each quantize unit also writes its Linears' input scales (one per fused group)."""
    from .calibrate import input_scale_specs  # here: a weight-only plan never loads calibrate

    result = []
    for unit in units:
        if unit.action == QUANTIZE:
            modules = [module_name(name) for name in unit.inputs]
            missing = next((module for module in modules if module not in amax), None)
            if missing is not None:
                raise DataError(f"{checkpoint.path}: {missing!r} has no calibrated input amax (it never ran on the calibration samples): --exclude it, or use --scheme w4a16")
            unit = replace(unit, outputs=unit.outputs + input_scale_specs(modules, fmt))
        result.append(unit)
    return result


def plan_dequantize(checkpoint: Checkpoint, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> Plan:
    """Quantized weights (any format) back to float `dtype`; every other tensor is copied as is."""
    from .bench import parse_device  # here: bench loads numpy and its peers' set-up, which quantize never needs

    weights = formats.logical_weights(checkpoint)
    units = []
    formats.check_decodable(checkpoint, weights)
    for weight in weights.values():
        units.extend(_copy(checkpoint, weight) if not weight.quantized else [_dequantize(checkpoint, weight, dtype)])
    if not any(unit.converted for unit in units):
        raise DataError(f"{checkpoint.path}: no quantized weights to dequantize")
    config = None
    if checkpoint.config is not None:
        config = {key: value for key, value in checkpoint.config.items() if key != "quantization_config"}
    short_names = {value: key for key, value in FLOAT_DTYPES.items()}
    record = {"producer": f"nvfp4cli {__version__}", "dtype": short_names[dtype]}
    used = {name: weights[name] for unit in units for name in unit.inputs if name in weights}
    return Plan(
        DEQUANTIZE, checkpoint.path, checkpoint.directory, used, units, DequantizeOptions(dtype, str(parse_device(device))), record,
        config=config, dropped_files=(HF_QUANT_CONFIG_NAME,), skipped_files=checkpoint.skipped_files, metadata=_new_metadata(checkpoint),
    )  # fmt: skip


def default_output(input_path: Path, suffix: str = "nvfp4") -> Path:
    """in.safetensors -> in.nvfp4.safetensors; a directory D (or D/x.index.json) -> D-nvfp4, its
    sibling (also for `.` or `..`, which name no directory of their own)."""
    if input_path.is_dir():
        if input_path.name in ("", ".", ".."):
            input_path = input_path.resolve()
        return input_path.parent / f"{input_path.name}-{suffix}"  # named as given, not after a symlink's target
    if input_path.name.endswith(INDEX_SUFFIX):
        return default_output(input_path.parent, suffix)
    return input_path.with_name(f"{input_path.name.removesuffix(SAFETENSORS_SUFFIX)}.{suffix}{SAFETENSORS_SUFFIX}")
