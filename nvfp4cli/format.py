"""NVFP4 format constants, E2M1 code tables, nibble packing and the swizzled scale layout (docs/format.md §1, §5)."""

from __future__ import annotations

from enum import Enum

import torch

from . import names

BLOCK_SIZE = 16  # elements per FP8 block scale
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_NORMAL = 2.0**-6  # block scales are clamped to [2^-6, 448]: always E4M3 normals
PTS_DIVISOR = E4M3_MAX * E2M1_MAX  # 2688: per-tensor scale = amax / 2688
PTS_FLOOR = 2.0**-120  # keeps 1/pts and the block-scale ratio finite for all-zero tensors
SIGN_BIT = 8
SCALE_RULES = names.SCALE_RULES  # how each block's E4M3 scale is chosen (docs/format.md §4)

# Magnitudes of E2M1 codes 0..7; codes 8..15 are their negatives (code 8 is -0.0).
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


class Mode(str, Enum):
    """Element rounding: round-to-nearest-even or stochastic rounding."""

    RN, RS = names.MODES  # "rn", "rs", written in names.py, which the CLI reads without torch


def e2m1_values(device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 value of each of the 16 codes, sign included."""
    grid = torch.tensor(E2M1_GRID, dtype=torch.float32, device=device)
    return torch.cat([grid, -grid])


def byte_values(device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 values [256, 2] of the two codes in each packed byte, low nibble first."""
    byte = torch.arange(256, device=device)
    return e2m1_values(device)[torch.stack([byte & 0xF, byte >> 4], dim=-1)]


def byte_lookup(table: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """table's row for each byte of packed: [*packed.shape, *table.shape[1:]]. index_select
    takes an int32 index as it is, where indexing makes an int64 copy (twice the time, and
    4 bytes more an index)."""
    rows = table.index_select(0, packed.reshape(-1).int())
    return rows.reshape(*packed.shape, *table.shape[1:])


def per_tensor_scale_from_amax(amax: torch.Tensor) -> torch.Tensor:
    """pts = max(amax / 2688, 2^-120) in float32, as a 0-d tensor."""
    return per_tensor_scales_from_amaxes(amax).reshape(())


def per_tensor_scales_from_amaxes(amaxes: torch.Tensor) -> torch.Tensor:
    """per_tensor_scale_from_amax of each element of amaxes (several tensors at once)."""
    amaxes = amaxes.to(torch.float32)
    # Divide by a tensor: CUDA turns division by a Python number into a multiply by its
    # reciprocal, which rounds differently from the true division the spec asks for.
    divisor = torch.full((), PTS_DIVISOR, dtype=torch.float32, device=amaxes.device)  # no host copy, no sync
    return torch.clamp(amaxes / divisor, min=PTS_FLOOR)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., K] -> packed bytes [..., K/2]; element 2i in the low nibble."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """Packed bytes [..., K/2] -> uint8 codes [..., K]."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def dequantize_blocks(
    packed: torch.Tensor, scales: torch.Tensor, per_tensor_scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """x_hat = e2m1(code) * float32(s8) * pts, computed in float32 and cast to dtype.

    One lookup a byte gives both its values, and the scales multiply in place: the only
    temporaries are an int32 copy of the bytes and the float32 output (an int64 code per element
    and a product per multiply took four times the output's memory)."""
    values = byte_lookup(byte_values(packed.device), packed).flatten(-2)
    blocks = values.unflatten(-1, (-1, BLOCK_SIZE)).mul_(scales.to(torch.float32).unsqueeze(-1))
    return blocks.mul_(per_tensor_scale.to(torch.float32)).flatten(-2).to(dtype)


def swizzled_shape(rows: int, cols: int) -> tuple[int, int]:
    """The scale grid [rows, cols] padded to whole 128x4 tiles of the GEMM layout (docs/format.md §6)."""
    return -(-rows // 128) * 128, -(-cols // 4) * 4


def swizzle_scales(scales: torch.Tensor) -> torch.Tensor:
    """Row-major block scales [M, K/16] -> the GEMM layout of docs/format.md §6, flat.

    Pads to (ceil(M/128)*128, ceil(K/16/4)*4) with zeros; each 128x4 tile is 512 contiguous
    bytes, tiles row-major, and scale (row 32*i + j, col c) of a tile sits at byte 16*j + 4*i + c.
    """
    if scales.dim() != 2:
        raise ValueError(f"swizzle_scales expects a 2-D scale tensor, got shape {tuple(scales.shape)}")
    rows, cols = scales.shape
    padded_rows, padded_cols = swizzled_shape(rows, cols)
    raw = scales.view(torch.uint8)
    padded = torch.zeros(padded_rows, padded_cols, dtype=torch.uint8, device=scales.device)
    padded[:rows, :cols] = raw
    # [tile_r, i(4), j(32), tile_c, c(4)] -> [tile_r, tile_c, j, i, c]
    tiles = padded.view(padded_rows // 128, 4, 32, padded_cols // 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(-1).view(torch.float8_e4m3fn)


def unswizzle_scales(swizzled: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of swizzle_scales: flat GEMM-layout scales -> row-major [rows, cols]."""
    padded_rows, padded_cols = swizzled_shape(rows, cols)
    raw = swizzled.view(torch.uint8).reshape(padded_rows // 128, padded_cols // 4, 32, 4, 4)
    padded = raw.permute(0, 3, 2, 1, 4).reshape(padded_rows, padded_cols)
    return padded[:rows, :cols].contiguous().view(torch.float8_e4m3fn)
