"""compressed-tensors FP8, format "float-quantized" (docs/format.md §7): `X.weight` float8_e4m3fn [N, K]
and `X.weight_scale` float32 per output channel [N, 1] or per tensor [1]; w = fp32(w8) * scale.
An input, never written."""

from __future__ import annotations

import torch

from ..errors import DataError
from ..io import Checkpoint
from ..modules import module_name
from .base import LogicalWeight, StoredWeight

NAME = "fp8-compressed-tensors"


def find(checkpoint: Checkpoint) -> list[LogicalWeight]:
    specs = checkpoint.specs
    weights = []
    for name, spec in specs.items():
        scale = specs.get(f"{name}_scale")
        if not (name.endswith(".weight") and spec.dtype == "F8_E4M3" and scale is not None and scale.dtype == "F32"):
            continue
        if len(spec.shape) != 2 or scale.shape not in ((), (1,), (spec.shape[0], 1)):
            raise DataError(f"{checkpoint.path}: FP8 weight {name!r} of shape {list(spec.shape)} has a {name}_scale of shape {list(scale.shape)}; expected [{spec.shape[0]}, 1] or [1]")
        # Activation scales of a static FP8 scheme belong to the FP8 layout and leave with it.
        module = module_name(name)
        extra = tuple(f"{module}.{part}" for part in ("input_scale", "input_zero_point", "weight_zero_point") if f"{module}.{part}" in specs)
        weights.append(LogicalWeight(name, spec.shape, NAME, (name, f"{name}_scale", *extra)))
    return weights


def read(weight: LogicalWeight, checkpoint: Checkpoint) -> StoredWeight:
    scale = checkpoint.read(weight.tensors[1])
    if not torch.isfinite(scale).all():
        raise DataError(f"{checkpoint.file(weight.tensors[1])}: tensor {weight.tensors[1]!r} holds non-finite scales")
    return StoredWeight(weight, {"values": checkpoint.read(weight.name), "scale": scale})


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    scale = stored.parts["scale"]
    scale = scale.reshape(()) if scale.numel() == 1 else scale
    return (stored.parts["values"].to(torch.float32) * scale).to(dtype)
