"""Independent decoders for the already-quantized inputs of docs/format.md §7, in plain numpy, written from
the spec and the formats' public descriptions (DeepSeek-V3's FP8 block layout, compressed-tensors'
float-quantized format, the OCP MX spec as gpt-oss stores it). They share no code with nvfp4cli and
none with transformers or compressed-tensors, so agreement with either is evidence.

Every function takes raw bytes (uint8 arrays: view a torch float8 tensor as uint8 first) and fp32
or uint8 scales, and returns float32 numpy arrays, exact: each element is one fp32 product.
"""

from __future__ import annotations

import numpy as np


def _e4m3_table() -> np.ndarray:
    """float32 value of each of the 256 float8_e4m3fn bytes, from its bits: sign, 4 exponent bits
    (bias 7), 3 mantissa bits; exponent 0 is subnormal (m/8 * 2^-6); S.1111.111 is NaN; no inf."""
    table = np.empty(256, dtype=np.float32)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exponent, mantissa = (byte >> 3) & 0xF, byte & 0x7
        if exponent == 0xF and mantissa == 0x7:
            table[byte] = np.nan
        elif exponent == 0:
            table[byte] = sign * np.ldexp(mantissa / 8.0, -6)
        else:
            table[byte] = sign * np.ldexp(1.0 + mantissa / 8.0, exponent - 7)
    return table


def _e2m1_table() -> np.ndarray:
    """float32 value of each 4-bit E2M1 code: sign, 2 exponent bits (bias 1), 1 mantissa bit;
    exponent 0 is subnormal (m * 0.5)."""
    table = np.empty(16, dtype=np.float32)
    for code in range(16):
        sign = -1.0 if code & 0x8 else 1.0
        exponent, mantissa = (code >> 1) & 0x3, code & 0x1
        table[code] = sign * (mantissa * 0.5 if exponent == 0 else np.ldexp(1.0 + mantissa / 2.0, exponent - 1))
    return table


E4M3 = _e4m3_table()
E2M1 = _e2m1_table()


def _as_uint8(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"{what} must be raw bytes (uint8), got {array.dtype}")
    return array


def fp8_block_dequant(w8_uint8_array, scale_inv, block: tuple[int, int] = (128, 128)) -> np.ndarray:
    """DeepSeek-V3 FP8 block weights: w[i, j] = fp32(w8[i, j]) * scale_inv[i // bn, j // bk], with
    w8 [..., N, K] float8_e4m3fn bytes and scale_inv fp32 [..., ceil(N/bn), ceil(K/bk)]; edge blocks
    may be partial. One fp32 multiply per element, no bf16 step."""
    w8 = _as_uint8(w8_uint8_array, "FP8 weight")
    scale_inv = np.asarray(scale_inv, dtype=np.float32)
    rows, cols = w8.shape[-2:]
    block_rows, block_cols = block
    grid = (-(-rows // block_rows), -(-cols // block_cols))
    if scale_inv.shape != (*w8.shape[:-2], *grid):
        raise ValueError(f"scale_inv shape {scale_inv.shape} does not match weight {w8.shape} in {block} blocks")
    full_scale = np.repeat(np.repeat(scale_inv, block_rows, axis=-2), block_cols, axis=-1)[..., :rows, :cols]
    return E4M3[w8] * full_scale


def ct_fp8_dequant(w8, scale) -> np.ndarray:
    """compressed-tensors float-quantized FP8: w = fp32(w8) * weight_scale, the scale per output
    channel [N, 1] or per tensor [1] (or a 0-d scalar)."""
    w8 = _as_uint8(w8, "FP8 weight")
    scale = np.asarray(scale, dtype=np.float32)
    if scale.size != 1 and scale.shape != (w8.shape[0], 1):
        raise ValueError(f"weight_scale shape {scale.shape} is neither [1] nor [{w8.shape[0]}, 1]")
    return E4M3[w8] * (scale.reshape(()) if scale.size == 1 else scale)


def mxfp4_decode(blocks, scales) -> np.ndarray:
    """MXFP4 as gpt-oss stores it: blocks uint8 [..., G, 16] (element 2j in the low nibble of byte j,
    2j+1 in the high nibble), scales uint8 [..., G] E8M0 (2^(s - 127); 255 is NaN). Returns
    [..., G * 32] float32 in the on-disk orientation ([E, out, in] for gpt-oss experts)."""
    blocks = _as_uint8(blocks, "MXFP4 blocks")
    scales = _as_uint8(scales, "E8M0 scales")
    if blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"blocks {blocks.shape} and scales {scales.shape} are not [..., G, 16] and [..., G]")
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*scales.shape, 32)
    is_nan = scales == 255
    scale = np.ldexp(np.float32(1.0), np.where(is_nan, 127, scales).astype(np.int32) - 127).astype(np.float32)
    scale[is_nan] = np.nan
    return (E2M1[codes] * scale[..., None]).reshape(*scales.shape[:-1], scales.shape[-1] * 32)
