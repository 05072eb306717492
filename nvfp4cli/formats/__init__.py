"""On-disk weight formats, one module a format, each owning everything about its layout.

Every format module has:

    NAME                       the format's name (reports, --format)
    find(checkpoint)           the logical weights it recognises among the stored tensors
    read(weight, checkpoint)   the stored parts of one weight, checked (a StoredWeight)
    decode(parts, dtype)       the weight's values, decoded exactly in float32, then cast

and the NVFP4 output formats (compressed-tensors, modelopt) also:

    specs(name, shape)         the stored tensors of an NVFP4 weight `name` of logical shape
    encode(name, q)            those tensors from a QuantizedTensor
    per_tensor_scale(stored)   pts from the stored tensor scale (the conventions differ)
    configs(ignore, ...)       config.json's quantization_config and extra JSON files

Reader and writer use the same module, so a format's names and conventions live in one place.
Adding a format: a module here and one line in INPUT_FORMATS (and OUTPUT_FORMATS if written).
"""

from __future__ import annotations

from types import ModuleType

import torch

from ..api import QuantizedTensor
from ..errors import DataError, UsageError
from ..io import Checkpoint
from ..modules import INTERLEAVED_GATE_UP, expert_tensor_parts
from ..names import OUTPUT_FORMATS as OUTPUT_FORMAT_NAMES
from . import compressed_tensors, ct_fp8, fp8_block, modelopt, mxfp4, nvfp4, plain
from .base import ExpertView, LogicalWeight, StoredWeight, input_quantization

# Tried in this order; a stored tensor belongs to the first format that claims it, and every
# tensor no other format claims is a plain tensor.
INPUT_FORMATS: tuple[ModuleType, ...] = (compressed_tensors, modelopt, fp8_block, ct_fp8, mxfp4)
ALL_FORMATS: dict[str, ModuleType] = {module.NAME: module for module in (*INPUT_FORMATS, plain)}
# The written formats, by the names the CLI offers (names.py, torch-free): a name with no module is a KeyError at import.
OUTPUT_FORMATS: dict[str, ModuleType] = {name: ALL_FORMATS[name] for name in OUTPUT_FORMAT_NAMES}

__all__ = ["LogicalWeight", "StoredWeight", "logical_weights", "handler", "output_format", "load_float", "load_quantized", "load_both"]


# quantization_config quant_methods whose weights the input formats above decode.
DECODED_METHODS = ("fp8", "mxfp4", "compressed-tensors", "modelopt")
DECODED_COMPRESSED_TENSORS_FORMATS = ("float-quantized", compressed_tensors.FORMAT_NAME, "dense")


def check_decodable(checkpoint: Checkpoint, weights: dict[str, LogicalWeight]) -> None:
    """Refuse a quantized input this tool cannot decode, with one line, rather than copy its
    quantized tensors under a new config (which would make a broken model)."""
    quantization = input_quantization(checkpoint)
    method = quantization.get("quant_method")
    if method is not None and method not in DECODED_METHODS:
        raise DataError(f"{checkpoint.path}: quantization_config quant_method {method!r} is not a format nvfp4 decodes ({', '.join(DECODED_METHODS)})")
    if method == "compressed-tensors" and quantization.get("format", "dense") not in DECODED_COMPRESSED_TENSORS_FORMATS:
        raise DataError(f"{checkpoint.path}: compressed-tensors format {quantization.get('format')!r} is not one nvfp4 decodes ({', '.join(DECODED_COMPRESSED_TENSORS_FORMATS)})")
    for name, weight in weights.items():
        if weight.format == plain.NAME and name.endswith(".weight") and checkpoint.info(weight.tensors[0]).dtype.startswith("F8_"):
            raise DataError(f"{checkpoint.path}: FP8 weight {name!r} has no scale nvfp4 knows (weight_scale_inv, weight_scale): cannot decode it")


def handler(weight: LogicalWeight) -> ModuleType:
    """The module of a weight's format."""
    return ALL_FORMATS[weight.format]


def output_format(name: str) -> ModuleType:
    """The NVFP4 output format called name; UsageError for another name."""
    if name not in OUTPUT_FORMATS:
        raise UsageError(f"unknown format {name!r}; valid: {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[name]


def logical_weights(checkpoint: Checkpoint, split_experts: bool = False) -> dict[str, LogicalWeight]:
    """Every logical tensor by name, in stored order: each format's weights as one entry (an
    NVFP4 triple is one "X.weight"), every other stored tensor as itself. With split_experts, a
    3-D expert tensor becomes the per-expert [out, in] weights engines load (see per_expert)."""
    weights: dict[str, LogicalWeight] = {}
    claimed: dict[str, LogicalWeight] = {}
    for module in INPUT_FORMATS:
        for weight in module.find(checkpoint):
            taken = [name for name in weight.tensors if name in claimed] or ([weight.name] if weight.name in weights else [])
            if taken:
                other = claimed.get(taken[0]) or weights[weight.name]
                raise DataError(f"{checkpoint.path}: {weight.name!r} is stored as more than one weight ({weight.format} and {other.format})")
            weights[weight.name] = weight
            claimed.update({name: weight for name in weight.tensors})
    for name in checkpoint.tensor_names():
        if name in claimed:
            continue
        if name in weights:
            raise DataError(f"{checkpoint.path}: {name!r} is stored both as a plain tensor and as a {weights[name].format} weight")
        weights[name] = plain.weight(checkpoint, name)
    order = {name: position for position, name in enumerate(checkpoint.tensor_names())}
    weights = dict(sorted(weights.items(), key=lambda item: order[item[1].tensors[0]]))
    if not split_experts:
        return weights
    model_type = (checkpoint.config or {}).get("model_type", "")
    return {split.name: split for weight in weights.values() for split in per_expert(weight, model_type)}


def per_expert(weight: LogicalWeight, model_type: str) -> list[LogicalWeight]:
    """A 3-D expert tensor (logically [E, in, out], transformers' layout) as per-expert weights
    `{prefix}.{e}.{gate_proj|up_proj|down_proj}.weight` of shape [out, in], in expert order (gate
    and up of an expert side by side); any other weight as itself."""
    found = expert_tensor_parts(weight.name) if len(weight.shape) == 3 else None
    if found is None:
        return [weight]
    prefix, parts = found
    experts, inner, out_total = weight.shape
    if out_total % len(parts):
        raise DataError(f"{weight.name}: {out_total} rows do not split into {len(parts)} projections")
    interleaved = model_type in INTERLEAVED_GATE_UP
    return [
        LogicalWeight(
            f"{prefix}.{expert}.{part_name}.weight", (out_total // len(parts), inner), weight.format, weight.tensors,
            view=ExpertView(expert, part, len(parts), interleaved),
        )  # fmt: skip
        for expert in range(experts)
        for part, part_name in enumerate(parts)
    ]


def load_float(weight: LogicalWeight, checkpoint: Checkpoint, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight's values in dtype, decoded the way its own format does it."""
    module = handler(weight)
    return module.decode(module.read(weight, checkpoint), dtype)


def load_quantized(weight: LogicalWeight, checkpoint: Checkpoint) -> QuantizedTensor | None:
    """The NVFP4 tensor of an NVFP4 weight (its per_tensor_scale is pts); None for another format."""
    return load_both(weight, checkpoint, torch.float32)[1] if weight.nvfp4 else None


def load_both(weight: LogicalWeight, checkpoint: Checkpoint, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, QuantizedTensor | None]:
    """(load_float(dtype), load_quantized()) from one read of the stored tensors."""
    module = handler(weight)
    parts = module.read(weight, checkpoint)
    if not weight.nvfp4:
        return module.decode(parts, dtype), None
    return module.decode(parts, dtype), nvfp4.quantized(parts, module.per_tensor_scale(parts.parts["tensor_scale"]), checkpoint)


def load_per_tensor_scale(weight: LogicalWeight, checkpoint: Checkpoint) -> torch.Tensor:
    """pts (float32 0-d) of an NVFP4 weight, reading only its tensor scale."""
    return handler(weight).per_tensor_scale(nvfp4.tensor_scale(weight, checkpoint))
