"""Reference backend: SPEC.md §2-§3 in plain, vectorized PyTorch (CPU and CUDA).

Tensors are processed in row chunks, so extra memory beyond the input and the outputs stays
bounded (a few tens of MB) whatever the tensor size.
"""

from __future__ import annotations

import torch

from ..format import BLOCK_SIZE, E2M1_MAX, E4M3_MAX, E4M3_MIN_NORMAL, SIGN_BIT, Mode, pack_codes
from ..rng import block_random_bytes

# About a million elements a chunk: temporaries stay in cache-sized pieces (faster on CPU than
# whole-tensor passes) and extra memory stays far below 256 MB whatever the tensor size.
CHUNK_ELEMENTS = 1 << 20

# Midpoints between neighbouring E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6. A value on a midpoint
# rounds to the even code: up (>=) where the upper neighbour's code is even, down (>) elsewhere.
_RN_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))


def amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a float32 0-d tensor (NaN if x holds NaN), chunked to bound memory."""
    flat = x.reshape(-1)
    parts = [_abs_max(flat[i : i + CHUNK_ELEMENTS]) for i in range(0, flat.numel(), CHUNK_ELEMENTS)]
    return torch.stack(parts).amax().to(torch.float32)


def _abs_max(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    # max(max, -min) equals amax(|x|) and skips materializing |x|.
    low, high = torch.aminmax(x) if dim is None else torch.aminmax(x, dim=dim)
    return torch.maximum(high, -low)


def block_scales(blocks: torch.Tensor, per_tensor_scale: torch.Tensor) -> torch.Tensor:
    """E4M3 block scales: fp8(clamp((block_amax / 6) / pts, 2^-6, 448)), RNE."""
    block_scale = _abs_max(blocks, dim=-1) / E2M1_MAX / per_tensor_scale
    return block_scale.clamp(E4M3_MIN_NORMAL, E4M3_MAX).to(torch.float8_e4m3fn)


def _rn_codes(a: torch.Tensor) -> torch.Tensor:
    """E2M1 magnitude code (0..7) of a in [0, 6], round to nearest, ties to even."""
    codes = torch.zeros(a.shape, dtype=torch.uint8, device=a.device)
    for midpoint, tie_goes_up in _RN_MIDPOINTS:
        codes += a >= midpoint if tie_goes_up else a > midpoint
    return codes


def _rs_codes(a: torch.Tensor, random_bytes: torch.Tensor) -> torch.Tensor:
    """E2M1 magnitude code of a in [0, 6], rounded up with probability equal to its fraction
    of the grid step (SPEC.md §3); all arithmetic here is exact in float32."""
    ge2, ge4 = a >= 2, a >= 4
    # Steps 0.5, 1, 2 below 2, below 4, up to 6: q = a / step counts steps; codes of the three
    # ranges start at 0, 2 + 2, 4 + 2, i.e. code = q + 2 * (number of ranges passed).
    q = a * torch.where(ge2, torch.where(ge4, 0.5, 1.0), 2.0)
    lo = torch.floor(q)
    u = (random_bytes.to(torch.float32) + 0.5) / 256
    codes = lo.to(torch.uint8) + (q - lo > u)
    return codes + 2 * (ge2.to(torch.uint8) + ge4)


def _quantize_rows(
    x2d: torch.Tensor, per_tensor_scale: torch.Tensor, mode: Mode, seed, offset, first_block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = x2d.to(torch.float32).reshape(-1, BLOCK_SIZE)
    scales = block_scales(blocks, per_tensor_scale)
    ratio = (1.0 / per_tensor_scale) / scales.to(torch.float32)
    v = (blocks * ratio.unsqueeze(-1)).clamp_(-E2M1_MAX, E2M1_MAX)
    negative = torch.signbit(v)  # the sign bit, so -0.0 gives code 8 too
    a = v.abs_()
    if mode is Mode.RS:
        codes = _rs_codes(a, block_random_bytes(seed, offset, first_block, blocks.shape[0], x2d.device))
    else:
        codes = _rn_codes(a)
    codes |= negative.to(torch.uint8) * SIGN_BIT
    return pack_codes(codes.reshape(x2d.shape)), scales.reshape(x2d.shape[0], -1)


def quantize(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    mode: Mode,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes uint8 [..., K/2] and row-major E4M3 scales [..., K/16] of a contiguous x."""
    k = x.shape[-1]
    x2d = x.reshape(-1, k)
    rows = x2d.shape[0]
    packed = torch.empty(rows, k // 2, dtype=torch.uint8, device=x.device)
    scales = torch.empty(rows, k // BLOCK_SIZE, dtype=torch.float8_e4m3fn, device=x.device)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // k)
    pts = per_tensor_scale.to(torch.float32)
    for start in range(0, rows, rows_per_chunk):
        stop = min(rows, start + rows_per_chunk)
        first_block = start * (k // BLOCK_SIZE)
        packed[start:stop], scales[start:stop] = _quantize_rows(x2d[start:stop], pts, mode, seed, offset, first_block)
    return packed.reshape(*x.shape[:-1], k // 2), scales.reshape(*x.shape[:-1], k // BLOCK_SIZE)
