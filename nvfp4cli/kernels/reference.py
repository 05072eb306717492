"""Reference backend: SPEC.md §2-§3 in plain, vectorized PyTorch (CPU and CUDA).

Large tensors are processed in row chunks so that temporaries stay near CHUNK_BYTES beyond
the input and the outputs, whatever the tensor size.
"""

from __future__ import annotations

import torch

from ..format import BLOCK_SIZE, E2M1_MAX, E4M3_MAX, E4M3_MIN_NORMAL, SIGN_BIT, Mode, pack_codes
from ..rng import block_random_bytes

CHUNK_BYTES = 256 * 2**20
BYTES_PER_ELEMENT_IN_FLIGHT = 32  # float32 temporaries and int64 bucket indices of one chunk


def _rn_thresholds(device: torch.device) -> torch.Tensor:
    # Midpoints between neighbouring E2M1 magnitudes; a midpoint rounds to the even code, so a
    # value equal to a midpoint whose upper neighbour is even must count as above it: for those
    # the threshold is the float32 just below the midpoint. bucketize then counts thresholds < a.
    mid = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=torch.float32, device=device)
    upper_is_even = torch.tensor([False, True, False, True, False, True, False], device=device)
    below = torch.nextafter(mid, torch.zeros_like(mid))
    return torch.where(upper_is_even, below, mid)


def amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a float32 0-d tensor (NaN if x holds NaN), chunked to bound memory."""
    flat = x.reshape(-1)
    step = max(1, CHUNK_BYTES // 4)
    parts = [flat[i : i + step].abs().amax() for i in range(0, flat.numel(), step)]
    return torch.stack(parts).amax().to(torch.float32)


def block_scales(blocks: torch.Tensor, per_tensor_scale: torch.Tensor) -> torch.Tensor:
    """E4M3 block scales: fp8(clamp((block_amax / 6) / pts, 2^-6, 448)), RNE."""
    block_scale = blocks.abs().amax(dim=-1) / E2M1_MAX / per_tensor_scale
    return block_scale.clamp(E4M3_MIN_NORMAL, E4M3_MAX).to(torch.float8_e4m3fn)


def _stochastic_magnitudes(a: torch.Tensor, random_bytes: torch.Tensor) -> torch.Tensor:
    # Grid spacing is 0.5 below 2, 1 below 4, 2 up to 6; every step below is exact in float32.
    step = torch.where(a < 2, 0.5, torch.where(a < 4, 1.0, 2.0))
    q = a / step
    lo = torch.floor(q)
    u = (random_bytes.to(torch.float32) + 0.5) / 256
    return (lo + (q - lo > u).to(torch.float32)) * step


def _quantize_rows(
    x2d: torch.Tensor, per_tensor_scale: torch.Tensor, mode: Mode, seed, offset, first_block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = x2d.to(torch.float32).reshape(-1, BLOCK_SIZE)
    scales = block_scales(blocks, per_tensor_scale)
    ratio = (1.0 / per_tensor_scale) / scales.to(torch.float32)
    v = (blocks * ratio.unsqueeze(-1)).clamp(-E2M1_MAX, E2M1_MAX)
    a = v.abs()
    if mode is Mode.RS:
        a = _stochastic_magnitudes(a, block_random_bytes(seed, offset, first_block, blocks.shape[0], x2d.device))
    codes = torch.bucketize(a, _rn_thresholds(x2d.device), out_int32=True).to(torch.uint8)
    codes |= torch.signbit(v).to(torch.uint8) * SIGN_BIT  # the sign of -0.0 too
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
    rows_per_chunk = max(1, CHUNK_BYTES // (BYTES_PER_ELEMENT_IN_FLIGHT * k))
    pts = per_tensor_scale.to(torch.float32)
    for start in range(0, rows, rows_per_chunk):
        stop = min(rows, start + rows_per_chunk)
        first_block = start * (k // BLOCK_SIZE)
        packed[start:stop], scales[start:stop] = _quantize_rows(x2d[start:stop], pts, mode, seed, offset, first_block)
    return packed.reshape(*x.shape[:-1], k // 2), scales.reshape(*x.shape[:-1], k // BLOCK_SIZE)
