"""What the two NVFP4 layouts share (docs/format.md §5): a weight is three stored tensors, packed
E2M1 codes uint8 [..., K/2], E4M3 block scales [..., K/16] and one float32 tensor scale; they
differ in names and in whether the tensor scale is pts or its reciprocal."""

from __future__ import annotations

import torch

from ..api import QuantizedTensor
from ..errors import DataError
from ..format import BLOCK_SIZE
from ..io import Checkpoint, TensorSpec
from .base import LogicalWeight, StoredWeight, recorded_mode


def triple(checkpoint: Checkpoint, fmt: str, name: str, members: tuple[str, str, str]) -> LogicalWeight:
    """The logical weight `name` stored as members (packed, block scales, tensor scale), checked
    from the headers alone."""
    missing = [member for member in members[1:] if member not in checkpoint.specs]
    if missing:
        raise DataError(f"{checkpoint.path}: {fmt} tensor {members[0]!r} has no {missing[0]!r}")
    packed, scales, tensor_scale = (checkpoint.info(member) for member in members)
    if (packed.dtype, scales.dtype, tensor_scale.dtype) != ("U8", "F8_E4M3", "F32"):
        raise DataError(f"{checkpoint.path}: {fmt} tensors of {name!r} must be uint8, float8_e4m3fn and float32")
    if not packed.shape or packed.shape[:-1] != scales.shape[:-1] or packed.shape[-1] * 2 != scales.shape[-1] * BLOCK_SIZE:
        raise DataError(f"{checkpoint.path}: {fmt} tensor {members[0]!r} of shape {packed.shape} does not match scales {members[1]!r} of shape {scales.shape}")
    if tensor_scale.shape not in ((), (1,)):
        raise DataError(f"{checkpoint.path}: {fmt} tensor {members[2]!r} must hold one value, has shape {tensor_scale.shape}")
    return LogicalWeight(name, (*packed.shape[:-1], packed.shape[-1] * 2), fmt, members, nvfp4=True)


def block_scales(checkpoint: Checkpoint, name: str) -> torch.Tensor:
    scales = checkpoint.read(name)
    nans = int(((scales.view(torch.uint8) & 0x7F) == 0x7F).sum())  # E4M3FN's only NaN: all exponent and mantissa bits set
    if nans:
        raise DataError(f"{checkpoint.file(name)}: tensor {name!r} holds {nans} NaN block scale(s)")
    return scales


def tensor_scale(weight: LogicalWeight, checkpoint: Checkpoint) -> torch.Tensor:
    # pts (ModelOpt) or 1/pts (compressed-tensors): either way it and its reciprocal must be
    # positive and finite, or every value of the weight decodes to 0, Inf or NaN.
    name = weight.tensors[2]
    stored = checkpoint.read(name).reshape(())
    if not (stored > 0 and torch.isfinite(stored) and torch.isfinite(1.0 / stored)):
        raise DataError(f"{checkpoint.file(name)}: tensor {name!r} holds {float(stored)}; a tensor scale must be positive and finite")
    return stored


def read(weight: LogicalWeight, checkpoint: Checkpoint) -> StoredWeight:
    packed = checkpoint.read(weight.tensors[0])
    parts = {"packed": packed, "scales": block_scales(checkpoint, weight.tensors[1]), "tensor_scale": tensor_scale(weight, checkpoint)}
    return StoredWeight(weight, parts)


def quantized(stored: StoredWeight, per_tensor_scale: torch.Tensor, checkpoint: Checkpoint) -> QuantizedTensor:
    """The QuantizedTensor of a weight read by read(), given pts from its stored tensor scale."""
    parts = stored.parts
    return QuantizedTensor(parts["packed"], parts["scales"], per_tensor_scale, recorded_mode(checkpoint))


def specs(names: tuple[str, str, str], shape: tuple[int, ...], tensor_scale_shape: tuple[int, ...]) -> tuple[TensorSpec, ...]:
    *lead, k = shape
    return (
        TensorSpec.of(names[0], torch.uint8, (*lead, k // 2)),
        TensorSpec.of(names[1], torch.float8_e4m3fn, (*lead, k // BLOCK_SIZE)),
        TensorSpec.of(names[2], torch.float32, tensor_scale_shape),
    )


def encode(names: tuple[str, str, str], q: QuantizedTensor, tensor_scale: torch.Tensor, tensor_scale_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {names[0]: q.packed, names[1]: q.scales, names[2]: tensor_scale.reshape(tensor_scale_shape)}
