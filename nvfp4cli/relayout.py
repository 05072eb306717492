"""Re-lay out an NVFP4 checkpoint without going back to float (`nvfp4 convert`), and repair what
verify flags that can be repaired (`--fix`).

    conversion = plan_convert(checkpoint, ConvertOptions(fmt="modelopt", fix=True))
    report = execute.run(conversion.plan, Path("out"), checkpoint=checkpoint)
    repairs = measure_repairs(conversion, checkpoint, open_checkpoint("out"))

FP4 codes and E4M3 block scales are copied byte for byte; the names, the tensor-scale convention
(compressed-tensors stores 1/pts, ModelOpt pts) and the config come from the output format's
handler (formats/). A format's stored scale is copied as is when the format does not change.
W4A4 activation scales travel with their weights (2688 / amax in compressed-tensors, amax / 2688
in ModelOpt: float32 reciprocals).

--fix, for members of one fused matmul with different global scales: the group gets one tensor
scale pts_new >= the largest pts of its members, so every rescaled block scale s8 * pts_old /
pts_new shrinks and none can overflow E4M3. With the FP4 codes kept, all values of a block scale
by one factor, so the E4M3 value nearest to s8 * pts_old / pts_new (ties to even) is the block
scale of least error against the unrepaired values. A weight's error then depends only on how
much code energy sits on each of the 127 block-scale values, so pts_new is searched: the largest
pts, each member's pts times the power of two that reaches it (that member stays exact), and
1 + j/1024 times the largest, scored exactly in O(127) each; the best worst-member SQNR wins.
measure_repairs reports the SQNR of every repaired tensor as written. --fix also stores NVFP4 MoE
routers, shared-expert gates and embeddings in float (dequantized), which no engine's NVFP4 path
loads, and quantizes (RN) the float members of a fused group whose others are NVFP4, with the
group's scale. A NaN or missing part cannot be repaired: plan_convert refuses, nothing is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import __version__, formats
from .api import SUPPORTED_DTYPES, QuantizedTensor, quantize, raise_if_not_finite
from .calibrate import input_scale_specs
from .errors import DataError
from .format import BLOCK_SIZE, E4M3_MAX, Mode, byte_lookup, byte_values, per_tensor_scale_from_amax
from .formats.base import StoredWeight, record, recorded_mode
from .formats.modelopt import HF_QUANT_CONFIG_NAME
from .io import Checkpoint, TensorSpec
from .metrics import sqnr_db
from .modules import default_skip_reason, fused_group_key, module_name
from .plan import COPY, DEQUANTIZE, Plan, Unit
from .verify import SUFFIXES, check_tensors, find_modules, view_of

SEARCH_STEPS = 1024  # shared-scale candidates between the largest pts and twice it (see _shared_scale)
REPACKAGE = "repackage"  # the plan operation and unit action: same codes, new names and conventions
# What --fix stores in float: weights no engine's NVFP4 path loads (verify's "target" findings).
FLOAT_ONLY = ("MoE router", "shared expert gate", "embedding")
# Positive finite E4M3 values by byte (0x00..0x7E): ascending, so the byte is the table index.
E4M3_TABLE = torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float64)


@dataclass(frozen=True)
class ConvertOptions:
    fmt: str = formats.compressed_tensors.NAME
    fix: bool = False
    dtype: torch.dtype = torch.bfloat16  # of the weights --fix stores in float


@dataclass(frozen=True)
class Repair:
    """A fused group whose members get one tensor scale (chosen when the codes are read);
    quantized: its members stored in float, quantized (RN) with that scale."""

    group: str
    members: tuple[str, ...]
    quantized: tuple[str, ...] = ()


@dataclass
class Conversion:
    """The plan execute.run writes, and what --fix changes in it."""

    plan: Plan
    repairs: list[Repair] = field(default_factory=list)
    dequantized: list[str] = field(default_factory=list)


def e4m3_nearest(values: torch.Tensor) -> torch.Tensor:
    """The E4M3 value nearest to each float64 value in [0, 448], ties to the even byte (RNE),
    in one rounding (a cast through float32 would round twice)."""
    if not bool(((values >= 0) & (values <= E4M3_MAX)).all()):
        raise ValueError("block scales to round must lie in [0, 448]")
    upper = torch.searchsorted(E4M3_TABLE, values).clamp(max=len(E4M3_TABLE) - 1)
    lower = (upper - 1).clamp(min=0)
    below, above = values - E4M3_TABLE[lower], E4M3_TABLE[upper] - values
    take_lower = (below < above) | ((below == above) & (lower % 2 == 0))
    return torch.where(take_lower, lower, upper).to(torch.uint8).view(torch.float8_e4m3fn)


def rescale_block_scales(scales: torch.Tensor, ratio: float) -> torch.Tensor:
    """E4M3 block scales for a tensor scale changed by 1/ratio (ratio = pts_old / pts_new <= 1):
    nearest E4M3 of s8 * ratio, the product taken in float64 (exact to 2^-53)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio {ratio} is not in (0, 1]: the shared scale must be at least the group's largest pts")
    if ratio == 1:
        return scales
    return e4m3_nearest(scales.to(torch.float64) * ratio).reshape(scales.shape)


def scale_energy(packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """float64 [127]: for each E4M3 block-scale byte, the summed e2m1(code)^2 of the blocks that
    use it. A weight's error under a rescale depends only on this (a block of scale s and codes c
    errs by sum c^2 * (s * ratio - rounded)^2), so candidate scales are scored in O(127) each."""
    byte_energy = byte_values().square().sum(-1).to(torch.float64)  # exact: multiples of 1/4 up to 72
    energy = byte_lookup(byte_energy, packed).unflatten(-1, (-1, BLOCK_SIZE // 2)).sum(-1)
    return torch.zeros(len(E4M3_TABLE), dtype=torch.float64).index_add_(0, scales.view(torch.uint8).reshape(-1).long(), energy.reshape(-1))


def rescale_sqnr_db(energy: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """float64 [len(ratios)]: the SQNR (dB) of a weight whose block scales go from s8 to
    rescale_block_scales(s8, ratio), its codes kept, against the weight before (energy:
    scale_energy); inf when nothing changes."""
    if ratios.dtype != torch.float64:
        raise ValueError("ratios must be float64, as rescale_block_scales uses them")
    exact = ratios[:, None] * E4M3_TABLE[None, :]
    noise = (energy * (exact - e4m3_nearest(exact).to(torch.float64)).square()).sum(-1)
    signal = (energy * exact.square()).sum(-1)
    return torch.where(noise == 0, math.inf, 10 * torch.log10(signal / noise))


def shared_scale_candidates(stored: dict[str, float], fmt: str, steps: int = SEARCH_STEPS) -> list[float]:
    """Stored tensor scales (float32 values) the group may share, all at or above the largest
    pts: first the largest pts itself and each member's pts times the smallest power of two that
    reaches it (that member's block scales stay exact), then the largest pts times 1 + j/steps.
    (A float member enters as the stored scale of its own pts: a floor, no block scales.)"""
    pts = {name: pts_of(value, fmt) for name, value in stored.items()}
    largest = max(pts, key=pts.__getitem__)
    candidates = [stored[largest]]
    for name, value in stored.items():
        k = 0
        while pts[name] * 2.0**k < pts[largest]:
            k += 1
        candidates.append(value * 2.0**-k if fmt == formats.compressed_tensors.NAME else value * 2.0**k)
    for step in range(1, steps):
        factor = 1 + step / steps
        scaled = stored[largest] / factor if fmt == formats.compressed_tensors.NAME else stored[largest] * factor
        candidates.append(float(torch.tensor(scaled, dtype=torch.float32)))
    return list(dict.fromkeys(candidates))


def pts_of(stored: float, fmt: str) -> float:
    """pts in float64 from a stored tensor scale (compressed-tensors stores 1/pts)."""
    return 1.0 / stored if fmt == formats.compressed_tensors.NAME else stored


def pts_ratio(stored_old: float, stored_new: float, fmt: str) -> float:
    """pts_old / pts_new in float64 from the stored tensor scales, in one division."""
    return stored_new / stored_old if fmt == formats.compressed_tensors.NAME else stored_old / stored_new


# ---- planning ---------------------------------------------------------------------------------


def _refuse(checkpoint: Checkpoint, problems: list) -> None:
    if problems:
        first = problems[0]
        raise DataError(f"{checkpoint.path}: cannot convert: {len(problems)} problem(s) no repair fixes, first {first.tensor}: {first.message} (`nvfp4 verify` lists them all)")


def _stored_scale(checkpoint: Checkpoint, weight: formats.LogicalWeight) -> float:
    return float(checkpoint.read(weight.tensors[2]).reshape(-1)[0])


def _quantizable(weight: formats.LogicalWeight, checkpoint: Checkpoint) -> bool:
    spec = checkpoint.info(weight.name)
    return spec.torch_dtype in SUPPORTED_DTYPES and len(weight.shape) == 2 and weight.shape[0] > 0 and weight.shape[-1] % BLOCK_SIZE == 0


def _plan_repairs(checkpoint: Checkpoint, weights: dict[str, formats.LogicalWeight], fmt: str) -> dict[str, Repair]:
    """Fused groups to give one scale, by member: NVFP4 members with different stored tensor or
    activation scales, and groups with float members beside NVFP4 ones (those get quantized).
    DataError for a float member that cannot be quantized."""
    groups: dict[str, list[str]] = {}
    for name, weight in weights.items():
        if fused_group_key(name) is not None and (weight.nvfp4 or (not weight.quantized and name.endswith(".weight") and len(weight.shape) >= 2)):
            groups.setdefault(fused_group_key(name), []).append(name)
    repairs = {}
    for key, members in groups.items():
        floats = tuple(name for name in members if not weights[name].nvfp4)
        if len(floats) == len(members):
            continue
        unusable = next((name for name in floats if not _quantizable(weights[name], checkpoint)), None)
        if unusable is not None:
            raise DataError(f"{checkpoint.path}: cannot convert: {unusable} is float in the NVFP4 fused layer {key} and cannot be quantized ({checkpoint.info(unusable).dtype} {list(weights[unusable].shape)})")
        inputs = {float(checkpoint.read(_input_scale_name(name, fmt)).reshape(-1)[0]) for name in members if _input_scale_name(name, fmt) in checkpoint.specs}
        if floats or len({_stored_scale(checkpoint, weights[name]) for name in members}) > 1 or len(inputs) > 1:
            repairs.update({name: Repair(key, tuple(members), floats) for name in members})
    return repairs


def _float_modules(weights: dict[str, formats.LogicalWeight], in_float: set[str]) -> list[str]:
    """The ignore / exclude list of the output: every 2-D+ weight it stores in float, and lm_head
    when it is not NVFP4 (even when tied to the embedding and absent from the file)."""
    ignore = [module_name(name) for name, weight in weights.items() if name in in_float and name.endswith(".weight") and len(weight.shape) >= 2]
    if not any(module_name(name).rpartition(".")[2] == "lm_head" for name in weights if name not in in_float):
        ignore.append("lm_head")
    return list(dict.fromkeys(ignore))


def _input_scale_name(weight: str, fmt: str) -> str:
    return f"{module_name(weight)}.{SUFFIXES[fmt]['input']}"


def _input_scale_spec(weight: str, fmt: str) -> TensorSpec:
    """The activation scale quantize writes for a weight: compressed-tensors' input_global_scale
    (2688 / amax) [1], ModelOpt's input_scale (amax / 2688) 0-d."""
    return input_scale_specs([module_name(weight)], fmt)[0]


def _input_scales(plan: Plan, checkpoint: Checkpoint, unit: Unit, in_fmt: str) -> dict[str, torch.Tensor]:
    """The activation scales of a unit's weights in the output's convention (the reciprocal when
    the format changes); a repaired group shares the largest amax (no activation clips)."""
    stored = {name: checkpoint.read(_input_scale_name(name, in_fmt)).reshape(()) for name in unit.inputs if _input_scale_name(name, in_fmt) in checkpoint.specs}
    if not stored:
        return {}
    if len(unit.inputs) > 1:  # the largest amax: the smallest 2688/amax, the largest amax/2688
        shared = (min if in_fmt == formats.compressed_tensors.NAME else max)(stored.values(), key=float)
        stored = dict.fromkeys(stored, shared)
    out = plan.options.fmt
    specs = {name: _input_scale_spec(name, out) for name in stored}
    return {specs[name].name: (value if out == in_fmt else 1.0 / value).reshape(specs[name].shape) for name, value in stored.items()}


def _stored_bytes(checkpoint: Checkpoint, weight: formats.LogicalWeight) -> int:
    return sum(checkpoint.info(name).nbytes for name in weight.tensors)


def plan_convert(checkpoint: Checkpoint, options: ConvertOptions) -> Conversion:
    """What every tensor becomes, from the headers and the tensor scales. DataError (nothing
    written) for what cannot be converted or repaired."""
    out = formats.output_format(options.fmt)
    view = view_of(checkpoint)
    in_fmt, modules = find_modules(view)
    if in_fmt is None:
        raise DataError(f"{checkpoint.path}: no NVFP4 weights to convert")
    _refuse(checkpoint, list(check_tensors(view, in_fmt, modules)))
    input_scales = {module.weight: module.parts["input"] for module in modules.values() if "input" in module.parts}
    without = next((module.weight for module in modules.values() if "input" not in module.parts), None)
    if input_scales and without is not None:
        raise DataError(f"{checkpoint.path}: cannot convert: activation scales on some NVFP4 weights but not on {without} (W4A4 needs one on every weight)")
    weights = formats.logical_weights(checkpoint)
    other = next((weight for weight in weights.values() if weight.quantized and not weight.nvfp4), None)
    if other is not None:  # the output config would describe NVFP4 only and leave it unloadable
        raise DataError(f"{checkpoint.path}: {other.name} is {other.format}, not NVFP4: convert re-lays out checkpoints whose quantized weights are all NVFP4")
    repairs = _plan_repairs(checkpoint, weights, in_fmt) if options.fix else {}
    quantized_floats = next((name for repair in repairs.values() for name in repair.quantized), None)
    if input_scales and quantized_floats is not None:
        raise DataError(f"{checkpoint.path}: cannot convert: {quantized_floats} would need an activation scale to join its W4A4 fused layer, which takes calibration")
    dequantized = {name for name, weight in weights.items() if options.fix and weight.nvfp4 and default_skip_reason(name) in FLOAT_ONLY}
    units: list[Unit] = []
    done: set[str] = set()
    done.update(input_scales.values())  # each travels with its weight (and is dropped with a dequantized one)
    for name, weight in weights.items():
        if name in done:
            continue
        if weight.nvfp4 and name in dequantized:
            units.append(Unit(DEQUANTIZE, (name,), (TensorSpec.of(name, options.dtype, weight.shape),), _stored_bytes(checkpoint, weight), 3))
        elif weight.nvfp4 or name in repairs:
            members = repairs[name].members if name in repairs else (name,)
            specs = tuple(spec for member in members for spec in out.specs(member, weights[member].shape))
            specs += tuple(_input_scale_spec(member, options.fmt) for member in members if member in input_scales)
            stored_inputs = [input_scales[member] for member in members if member in input_scales]
            bytes_in = sum(_stored_bytes(checkpoint, weights[m]) for m in members) + sum(checkpoint.info(stored).nbytes for stored in stored_inputs)
            units.append(Unit(REPACKAGE, members, specs, bytes_in, sum(len(weights[m].tensors) for m in members) + len(stored_inputs)))
            done.update(members)
        else:
            units += [Unit(COPY, (stored,), (checkpoint.info(stored),), checkpoint.info(stored).nbytes, 1) for stored in weight.tensors]
    in_float = {name for name, weight in weights.items() if not weight.nvfp4 and name not in repairs} | dequantized
    quantization_config, extra_files = out.configs(_float_modules(weights, in_float), activations=bool(input_scales))
    previous = {key: value for key, value in (record(checkpoint) or {}).items() if key in ("mode", "seed", "scale_rule")}
    run_record = {"producer": f"nvfp4cli {__version__}", **previous, "format": options.fmt, "converted_from": in_fmt, "fix": options.fix, "quantization_config": quantization_config}
    config = None if checkpoint.config is None else {**checkpoint.config, "quantization_config": quantization_config}
    used = {name: weights[name] for unit in units if unit.action != COPY for name in unit.inputs}
    metadata = {key: value for key, value in checkpoint.metadata.items() if key != formats.base.METADATA_KEY}
    plan = Plan(
        REPACKAGE, checkpoint.path, checkpoint.directory, used, units, options, run_record,
        config=config, extra_files=extra_files, dropped_files=(HF_QUANT_CONFIG_NAME,), skipped_files=checkpoint.skipped_files, metadata=metadata,
    )  # fmt: skip
    return Conversion(plan, sorted({repair.group: repair for repair in repairs.values()}.values(), key=lambda repair: repair.group), sorted(dequantized))


# ---- producing ----------------------------------------------------------------------------------


def _shared_scale(stored: dict[str, StoredWeight], fmt: str, floor: float | None = None) -> torch.Tensor:
    """The stored tensor scale a group shares: its own for one weight or equal scales, else the
    candidate with the best worst-member SQNR (the earliest on ties). floor: the stored scale of
    the pts its float members need (their amax / 2688), when it has any."""
    values = {name: float(parts.parts["tensor_scale"]) for name, parts in stored.items()}
    first = next(iter(stored.values())).parts["tensor_scale"]
    if len(set(values.values())) == 1 and floor is None:
        return first
    energy = {name: scale_energy(parts.parts["packed"], parts.parts["scales"]) for name, parts in stored.items()}
    candidates = shared_scale_candidates(values if floor is None else {**values, None: floor}, fmt)
    worst = torch.stack([rescale_sqnr_db(energy[name], torch.tensor([pts_ratio(values[name], c, fmt) for c in candidates], dtype=torch.float64)) for name in stored]).amin(0)
    best = candidates[int(torch.argmax(worst))]  # argmax takes the first of equal maxima
    return torch.tensor(best, dtype=torch.float32).reshape(first.shape)


def _float_members(plan: Plan, checkpoint: Checkpoint, unit: Unit) -> tuple[dict[str, torch.Tensor], float | None]:
    """The float members of a repaired group (checked finite) and the stored scale of the pts
    they need, in the input format's convention; ({}, None) when there are none."""
    values = {name: checkpoint.read(name).to(torch.float32) for name in unit.inputs if not plan.weights[name].nvfp4}
    if not values:
        return {}, None
    amaxes = []
    for name, x in values.items():
        amax = x.abs().amax()
        try:
            raise_if_not_finite(x, amax)
        except DataError as exc:
            raise DataError(f"{checkpoint.file(name)}: tensor {name!r}: {exc}") from None
        amaxes.append(amax)
    pts = per_tensor_scale_from_amax(torch.stack(amaxes).amax())
    in_fmt = next(plan.weights[name].format for name in unit.inputs if plan.weights[name].nvfp4)
    return values, float(1.0 / pts if in_fmt == formats.compressed_tensors.NAME else pts)


def produce(plan: Plan, checkpoint: Checkpoint, unit: Unit) -> dict[str, torch.Tensor]:
    """The output tensors of a REPACKAGE unit: one weight, or a fused group given one scale
    (its float members, if any, quantized with it)."""
    out = formats.output_format(plan.options.fmt)
    in_fmt = next(plan.weights[name].format for name in unit.inputs if plan.weights[name].nvfp4)
    handler = formats.ALL_FORMATS[in_fmt]
    stored = {name: handler.read(plan.weights[name], checkpoint) for name in unit.inputs if plan.weights[name].nvfp4}
    floats, floor = _float_members(plan, checkpoint, unit)
    shared = _shared_scale(stored, in_fmt, floor)
    pts = handler.per_tensor_scale(shared)
    tensors: dict[str, torch.Tensor] = {}
    for name in unit.inputs:
        if name in floats:
            q = quantize(floats.pop(name), Mode.RN, per_tensor_scale=pts, backend="reference")
        else:
            parts = stored[name].parts
            ratio = pts_ratio(float(parts["tensor_scale"]), float(shared), in_fmt)
            q = QuantizedTensor(parts["packed"], rescale_block_scales(parts["scales"], ratio), pts, recorded_mode(checkpoint))
        encoded = out.encode(name, q)
        if out.NAME == in_fmt:  # the format's own stored scale, not a reciprocal of a reciprocal
            scale_spec = out.specs(name, plan.weights[name].shape)[2]
            encoded[scale_spec.name] = shared.reshape(scale_spec.shape)
        tensors.update(encoded)
    return tensors | _input_scales(plan, checkpoint, unit, in_fmt)


def measure_repairs(conversion: Conversion, checkpoint: Checkpoint, output: Checkpoint) -> list[dict]:
    """Per repaired group: the shared pts and, per member, the SQNR (dB) of the weight as
    written against the input's dequantized weight (None where equal), read back from both."""
    written = formats.logical_weights(output)
    rows = []
    for repair in conversion.repairs:
        sqnr = {}
        for name in repair.members:
            before = formats.load_float(conversion.plan.weights[name], checkpoint, torch.float32)
            after = formats.load_float(written[name], output, torch.float32)
            sqnr[name] = sqnr_db(before, after)
        pts = float(formats.load_per_tensor_scale(written[repair.members[0]], output))
        known = [value for name, value in sqnr.items() if value is not None and name not in repair.quantized]
        row = {"group": repair.group, "per_tensor_scale": pts, "sqnr_db": sqnr, "min_sqnr_db": min(known) if known else None}
        rows.append(row | ({"quantized_from_float": list(repair.quantized)} if repair.quantized else {}))
    return rows
