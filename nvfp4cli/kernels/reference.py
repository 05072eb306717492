"""Reference backend: docs/format.md §2-§3 and §8 in plain, vectorized PyTorch (CPU and CUDA), plus the
block scale rules of docs/format.md §4 (max, 4over6, mse): the Backend Protocol of
kernels/__init__.py, the contract every other backend matches bit for bit.

Tensors are processed in row chunks, so extra memory beyond the input and the outputs stays
bounded (a few tens of MB) whatever the tensor size.
"""

from __future__ import annotations

import torch

from ..format import BLOCK_SIZE, E2M1_MAX, E4M3_MAX, E4M3_MIN_NORMAL, SIGN_BIT, Mode, e2m1_values, pack_codes
from ..format import SCALE_RULES as SCALE_RULES  # re-exported: this backend implements every rule
from ..rng import block_random_bytes
from . import HADAMARD_SIGNS, quantize_amax_in_steps

# About a million elements a chunk: temporaries stay in cache-sized pieces (faster on CPU than
# whole-tensor passes) and extra memory stays far below 256 MB whatever the tensor size.
CHUNK_ELEMENTS = 1 << 20

FOUR_OVER_SIX_TARGET = 4.0  # 4over6's second candidate maps the block max to 4 instead of 6
# E4M3 bytes of the clamp range [2^-6, 448]: candidate scales stay E4M3 normals within it.
E4M3_MIN_NORMAL_BYTE = 0x08
E4M3_MAX_BYTE = 0x7E
# mse candidates as steps in E4M3 code space from the max->6 scale, in tie-break order: max->6
# itself, the six next larger scales (the block max lands between 6 and about 3.4; the max->4
# scale is always among them, so mse never does worse than 4over6), then the next smaller one,
# which clips the block max (the squared error accounts for the clipping).
MSE_SCALE_STEPS = (0, 1, 2, 3, 4, 5, 6, -1)


def amax(x: torch.Tensor, *, hadamard: bool = False) -> torch.Tensor:
    """max |x| (of rht(x) with hadamard) as a float32 0-d tensor (NaN if x holds NaN), chunked
    to bound memory; 0 for an empty x."""
    flat = x.reshape(-1)
    chunk = CHUNK_ELEMENTS  # a multiple of 16: RHT blocks never straddle chunks
    parts = [_abs_max(_maybe_rht(flat[i : i + chunk], hadamard)) for i in range(0, flat.numel(), chunk)]
    if not parts:
        return torch.zeros((), dtype=torch.float32, device=x.device)
    return torch.stack(parts).amax().to(torch.float32)


def amax_rowcol(x: torch.Tensor, *, col_hadamard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(amax(x), amax of the columnwise input x.T, or of rht(x.T) with col_hadamard)."""
    rows = amax(x)
    return rows, amax(x.T.contiguous(), hadamard=True) if col_hadamard else rows


def _maybe_rht(x: torch.Tensor, hadamard: bool) -> torch.Tensor:
    return rht(x, signs=HADAMARD_SIGNS) if hadamard else x


def rht(x: torch.Tensor, *, signs: tuple[int, ...] = HADAMARD_SIGNS, inverse: bool = False) -> torch.Tensor:
    """docs/format.md §9: per 16-element block along the last dim, v = fp32(x) * signs, the Sylvester
    butterfly (h = 1, 2, 4, 8: pairs (i, i + h) inside each 2h-group -> (a + b, a - b)), v * 0.25.
    inverse undoes it (butterfly, * 0.25, then * signs; H H = 16 I): exact up to fp32 rounding."""
    sign = torch.tensor(signs, dtype=torch.float32, device=x.device)
    v = x.to(torch.float32).reshape(-1, BLOCK_SIZE)
    if not inverse:
        v = v * sign
    for h in (1, 2, 4, 8):
        pairs = v.reshape(-1, BLOCK_SIZE // (2 * h), 2, h)
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        v = torch.stack((a + b, a - b), dim=2).reshape(-1, BLOCK_SIZE)
    v = v * 0.25  # a power of two: exact but for subnormal results, on every backend alike
    if inverse:
        v = v * sign
    return v.reshape(x.shape)


def _abs_max(x: torch.Tensor) -> torch.Tensor:
    # max(max, -min) equals amax(|x|) and skips materializing |x|.
    low, high = torch.aminmax(x)
    return torch.maximum(high, -low)


def _block_abs_max(blocks: torch.Tensor) -> torch.Tensor:
    """max |.| over the last dim of blocks [..., 16], as maxima of halves (on a CPU four times as
    fast as a reduction along a dim of 16); NaN propagates."""
    m = blocks.abs()
    while m.shape[-1] > 1:
        half = m.shape[-1] // 2
        m = torch.maximum(m[..., :half], m[..., half:])
    return m.squeeze(-1)


def _e4m3_scales(block_amax: torch.Tensor, target: float, per_tensor_scale: torch.Tensor) -> torch.Tensor:
    """fp8(clamp((block_amax / target) / pts, 2^-6, 448)), RNE: the scale mapping the block max to target."""
    # A device tensor, not a Python number: CUDA divides by a number as a multiply by its
    # reciprocal, which rounds differently from the true division the spec asks for.
    divisor = torch.full((), target, dtype=torch.float32, device=block_amax.device)  # no host copy, no sync
    block_scale = block_amax / divisor / per_tensor_scale
    return block_scale.clamp(E4M3_MIN_NORMAL, E4M3_MAX).to(torch.float8_e4m3fn)


def _e4m3_step(scales: torch.Tensor, steps: int) -> torch.Tensor:
    """The E4M3 value `steps` codes away from each scale, kept within the clamp range."""
    codes = scales.view(torch.uint8).to(torch.int16) + steps
    return codes.clamp(E4M3_MIN_NORMAL_BYTE, E4M3_MAX_BYTE).to(torch.uint8).view(torch.float8_e4m3fn)


def block_scales(
    blocks: torch.Tensor, per_tensor_scale: torch.Tensor, scale_rule: str = "max", block_amax: torch.Tensor | None = None
) -> torch.Tensor:
    """E4M3 scale of each block [N, 16] under scale_rule (docs/format.md §4).

    max: fp8(clamp((block_amax / 6) / pts, 2^-6, 448)), RNE (torchao's rule). 4over6 and mse
    pick, per block, the candidate scale with the lowest squared RN error; ties go to the
    earlier candidate, max->6 first. block_amax [N] replaces the blocks' own (2-D scaling).
    """
    if block_amax is None:
        block_amax = _block_abs_max(blocks)
    max_to_six = _e4m3_scales(block_amax, E2M1_MAX, per_tensor_scale)
    if scale_rule == "max":
        return max_to_six
    if scale_rule == "4over6":
        candidates = [max_to_six, _e4m3_scales(block_amax, FOUR_OVER_SIX_TARGET, per_tensor_scale)]
    else:
        candidates = [_e4m3_step(max_to_six, steps) for steps in MSE_SCALE_STEPS]
    return _lowest_rn_error(blocks.abs(), per_tensor_scale, candidates)


def _lowest_rn_error(magnitudes: torch.Tensor, per_tensor_scale: torch.Tensor, candidates: list[torch.Tensor]) -> torch.Tensor:
    """Per block, the first candidate scale whose squared RN error is strictly lowest.

    Errors are measured in units of pts, one unit for every candidate (|x| / pts <= 2688 for the
    tensor's own pts, so they do not underflow for tiny tensors); every step is one float32
    rounding and the 16 squares add in a fixed pairwise tree, so all backends agree bit for bit.
    """
    target = magnitudes / per_tensor_scale
    inverse_pts = 1.0 / per_tensor_scale
    grid = e2m1_values(magnitudes.device)
    best_scales, best_errors = None, None
    for scales in candidates:
        scale = scales.to(torch.float32).unsqueeze(-1)
        a = (magnitudes * (inverse_pts / scale)).clamp_(max=E2M1_MAX)
        codes = _rn_codes(a)
        values = grid.index_select(0, codes.view(-1).int()).view(codes.shape)  # faster than grid[codes]
        errors = _pairwise_sum((target - values * scale).square_())
        if best_scales is None:
            best_scales, best_errors = scales.view(torch.uint8), errors
            continue
        better = errors < best_errors
        best_scales = torch.where(better, scales.view(torch.uint8), best_scales)
        best_errors = torch.where(better, errors, best_errors)
    return best_scales.view(torch.float8_e4m3fn)


def _pairwise_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim (a power of two) as a tree: 16 -> 8 -> 4 -> 2 -> 1, neighbours (2i, 2i+1)."""
    while values.shape[-1] > 1:
        values = values[..., 0::2] + values[..., 1::2]
    return values.squeeze(-1)


def _grid_steps(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranges passed, q) for a in [0, 6]: the grid's step is 0.5 below 2, 1 below 4 and 2 up to
    6, and q = a / step counts steps; the three ranges' codes start at 0, 2 + 2 and 4 + 2, so
    a's code is q rounded + 2 * (ranges passed). All exact in float32."""
    passed = (a >= 2).to(torch.uint8).add_(a >= 4)
    # q = 2a / 2^passed: a >= 2 is a normal float, so lowering its exponent field divides exactly
    # (a select between three products took three times as long on a CPU); in place where a
    # temporary is done with, which saves fresh pages
    q = passed.to(torch.int32).bitwise_left_shift_(23)
    return passed, torch.sub(a.view(torch.int32), q, out=q).view(torch.float32).mul_(2)


def _rn_codes(a: torch.Tensor) -> torch.Tensor:
    """E2M1 magnitude code (0..7) of a in [0, 6], round to nearest, ties to even: q rounds half
    to even, and a code has q's parity (one rounding, where counting the seven midpoints a passes
    took twice as long)."""
    passed, q = _grid_steps(a)
    return q.round_().to(torch.uint8).add_(passed.mul_(2))


def _rs_codes(a: torch.Tensor, random_bytes: torch.Tensor) -> torch.Tensor:
    """E2M1 magnitude code of a in [0, 6], rounded up with probability equal to its fraction
    of the grid step (docs/format.md §3); all arithmetic here is exact in float32."""
    passed, q = _grid_steps(a)
    lo = torch.floor(q)
    # frac > u = (byte + 0.5) / 256 as 256 frac - 0.5 > byte: 256 frac is exact, and so is
    # subtracting 0.5 from it wherever the result is not negative
    up = q.sub_(lo).mul_(256).sub_(0.5) > random_bytes
    return lo.to(torch.uint8).add_(up).add_(passed.mul_(2))


def _tile_amax(blocks: torch.Tensor, block_cols: int) -> torch.Tensor:
    """Each block's 16x16-tile amax (16 rows x one block column), for blocks [16 r * block_cols, 16]."""
    tiles = _block_abs_max(blocks).reshape(-1, BLOCK_SIZE, block_cols).amax(dim=1, keepdim=True)
    return tiles.expand(-1, BLOCK_SIZE, block_cols).reshape(-1)


def _flag_if(nonfinite: torch.Tensor, condition: torch.Tensor) -> None:
    """NaN into the nonfinite flag where the 0-d bool condition (on any device) holds."""
    nonfinite.masked_fill_(condition.to(nonfinite.device), float("nan"))


def quantize_rows(
    x2d: torch.Tensor,
    *,
    per_tensor_scale: torch.Tensor,
    mode: Mode,
    seed,
    offset,
    first_block: int = 0,
    scale_rule: str = "max",
    hadamard: bool = False,
    block_2d: bool = False,
    nonfinite: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize() of the rows x2d [R, K], all at once (no chunks: plain PyTorch that torch.compile
    takes whole, nvfp4cli.bench's peer); their blocks' Philox counters start at offset + first_block.
    nonfinite: as quantize's, from the values quantized."""
    if hadamard:
        x2d = rht(x2d)
    blocks = x2d.to(torch.float32).reshape(-1, BLOCK_SIZE)
    if nonfinite is not None:
        _flag_if(nonfinite, ~torch.isfinite(blocks).all())
    tile_amax = _tile_amax(blocks, x2d.shape[1] // BLOCK_SIZE) if block_2d else None
    scales = block_scales(blocks, per_tensor_scale, scale_rule, tile_amax)
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
    *,
    per_tensor_scale: torch.Tensor,
    mode: Mode,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
    scale_rule: str = "max",
    hadamard: bool = False,
    block_2d: bool = False,
    nonfinite: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes uint8 [..., K/2] and row-major E4M3 scales [..., K/16] of a contiguous x.

    scale_rule (one of SCALE_RULES) chooses the block scales; element rounding is the same for all.
    hadamard quantizes rht(x) (docs/format.md §9); block_2d (2-D x, rows a multiple of 16) gives each
    block the scale of its 16x16 tile's amax. nonfinite: NaN into it where rht(x) or x holds
    NaN or Inf, chunk by chunk from the values quantized, or per_tensor_scale is not positive
    and finite (Backend.quantize): the chunks flag a copy on x's device, read once at the end,
    so none waits for the device when the flag lives elsewhere (the host).
    """
    k = x.shape[-1]
    x2d = x.reshape(-1, k)
    rows = x2d.shape[0]
    packed = torch.empty(rows, k // 2, dtype=torch.uint8, device=x.device)
    scales = torch.empty(rows, k // BLOCK_SIZE, dtype=torch.float8_e4m3fn, device=x.device)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // k)
    if block_2d:  # whole 16-row tiles a chunk
        rows_per_chunk = -(-rows_per_chunk // BLOCK_SIZE) * BLOCK_SIZE
    pts = per_tensor_scale.to(torch.float32)
    flag = None if nonfinite is None else torch.zeros(1, device=x.device)
    if flag is not None:
        _flag_if(flag, ~((pts > 0) & torch.isfinite(pts)))
    for start in range(0, rows, rows_per_chunk):
        stop = min(rows, start + rows_per_chunk)
        first_block = start * (k // BLOCK_SIZE)
        packed[start:stop], scales[start:stop] = quantize_rows(
            x2d[start:stop], per_tensor_scale=pts, mode=mode, seed=seed, offset=offset, first_block=first_block,
            scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d, nonfinite=flag,
        )
    if flag is not None:
        _flag_if(nonfinite, flag.isnan()[0])
    return packed.reshape(*x.shape[:-1], k // 2), scales.reshape(*x.shape[:-1], k // BLOCK_SIZE)


def quantize_amax(
    x: torch.Tensor,
    *,
    mode: Mode,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
    scale_rule: str = "max",
    hadamard: bool = False,
    block_2d: bool = False,
    host_amax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """quantize with the per-tensor scale from x's amax (of rht(x) with hadamard): (packed,
    scales, per_tensor_scale, amax); host_amax (int32 [1] on the host) receives amax's float32 bits."""
    return quantize_amax_in_steps(
        amax, quantize, x, mode=mode, seed=seed, offset=offset, scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d, host_amax=host_amax
    )


def quantize_rowcol(
    x: torch.Tensor,
    *,
    per_tensor_scale: torch.Tensor,
    col_per_tensor_scale: torch.Tensor,
    mode: Mode,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
    block_2d: bool = False,
    col_hadamard: bool = False,
    nonfinite: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """quantize(x) and quantize(x.T) (docs/format.md §9): the columnwise Philox stream starts where the
    rowwise one ends, at offset + numel(x) / 16, so no random bit is used twice."""
    rows = quantize(x, per_tensor_scale=per_tensor_scale, mode=mode, seed=seed, offset=offset, block_2d=block_2d, nonfinite=nonfinite)
    col_offset = offset + x.numel() // BLOCK_SIZE
    cols = quantize(
        x.T.contiguous(), per_tensor_scale=col_per_tensor_scale, mode=mode, seed=seed, offset=col_offset,
        hadamard=col_hadamard, block_2d=block_2d, nonfinite=nonfinite,
    )
    return (*rows, *cols)


def quantize_many_rn(xs: torch.Tensor, per_tensor_scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RN with the max rule of n small tensors of one shape at once: xs [n, ..., K], per_tensor_scales
    [n]. The same bytes as quantize() of each xs[i] with its own scale (every step is elementwise,
    with each block's pts beside it); one pass of a few operations instead of n, for checkpoints
    of many small tensors where the per-call cost dominates."""
    n, k = xs.shape[0], xs.shape[-1]
    rows = xs.reshape(-1, k)
    blocks_each = xs[0].numel() // BLOCK_SIZE
    pts = per_tensor_scales.to(torch.float32).repeat_interleave(blocks_each)  # one per block
    packed, scales = quantize_rows(rows, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)
    return packed.reshape(*xs.shape[:-1], k // 2), scales.reshape(*xs.shape[:-1], k // BLOCK_SIZE)
