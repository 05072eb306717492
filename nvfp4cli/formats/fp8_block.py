"""FP8 with 128x128 block scales (DeepSeek-V3/R1, Kimi-K2, Qwen3-FP8; docs/format.md §7): `X.weight`
float8_e4m3fn [N, K] and `X.weight_scale_inv` float32 [ceil(N/128), ceil(K/128)];
w[i, j] = fp32(w8[i, j]) * scale_inv[i // 128, j // 128], in float32 (no bf16 step between).
Blocks at the edges are partial. An input, never written."""

from __future__ import annotations

import torch

from ..errors import DataError
from ..io import Checkpoint
from .base import LogicalWeight, StoredWeight, input_quantization

NAME = "fp8-block"
DEFAULT_BLOCK = (128, 128)


def _block(checkpoint: Checkpoint) -> tuple[int, int]:
    quantization = input_quantization(checkpoint)
    block = quantization.get("weight_block_size", DEFAULT_BLOCK)
    if not (isinstance(block, list | tuple) and len(block) == 2 and all(isinstance(n, int) and n > 0 for n in block)):
        raise DataError(f"{checkpoint.path}: quantization_config weight_block_size {block!r} is not two positive integers")
    return tuple(block)


def find(checkpoint: Checkpoint) -> list[LogicalWeight]:
    specs = checkpoint.specs
    names = [name for name, spec in specs.items() if name.endswith(".weight") and spec.dtype == "F8_E4M3" and f"{name}_scale_inv" in specs]
    if not names:
        return []
    block_rows, block_cols = _block(checkpoint)
    weights = []
    for name in names:
        values, scale_inv = specs[name], specs[f"{name}_scale_inv"]
        if len(values.shape) != 2:
            raise DataError(f"{checkpoint.path}: FP8 block weight {name!r} of shape {list(values.shape)} is not 2-D")
        rows, cols = values.shape
        grid = (-(-rows // block_rows), -(-cols // block_cols))
        if scale_inv.dtype != "F32" or scale_inv.shape != grid:
            raise DataError(
                f"{checkpoint.path}: {name}_scale_inv is {scale_inv.dtype} {list(scale_inv.shape)}; "
                f"a weight of shape {[rows, cols]} in {block_rows}x{block_cols} blocks needs F32 {list(grid)}"
            )
        # A static activation scale belongs to the FP8 layout and leaves with it.
        extra = (f"{name.removesuffix('.weight')}.input_scale",) if f"{name.removesuffix('.weight')}.input_scale" in specs else ()
        weights.append(LogicalWeight(name, (rows, cols), NAME, (name, f"{name}_scale_inv", *extra)))
    return weights


def read(weight: LogicalWeight, checkpoint: Checkpoint) -> StoredWeight:
    scale_inv = checkpoint.read(weight.tensors[1])
    if not torch.isfinite(scale_inv).all():
        raise DataError(f"{checkpoint.file(weight.tensors[1])}: tensor {weight.tensors[1]!r} holds non-finite block scales")
    parts = {"values": checkpoint.read(weight.name), "scale_inv": scale_inv, "block": torch.tensor(_block(checkpoint))}
    return StoredWeight(weight, parts)


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    values, scale_inv = stored.parts["values"], stored.parts["scale_inv"]
    block_rows, block_cols = stored.parts["block"].tolist()
    rows, cols = values.shape
    scale = scale_inv.repeat_interleave(block_rows, dim=0)[:rows].repeat_interleave(block_cols, dim=1)[:, :cols]
    return (values.to(torch.float32) * scale).to(dtype)
