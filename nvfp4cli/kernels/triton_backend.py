"""Triton backend: SPEC.md §2-§3 as two memory-bound kernels (CUDA, or CPU under TRITON_INTERPRET=1).

- amax: max |x| as an integer max over the magnitude bits (exact, and NaN bits sort above Inf),
  one partial per program and a one-program finish that widens the bits to float32.
- quantize: one thread owns whole 16-element blocks, so the block max, the scale, the Philox call
  (`tl.randint4x`, one per block) and the packing into one int64 of 16 nibbles stay in registers.
  The input is read as raw 16-byte chunks of integer bits and widened by bit operations; E4M3 and
  E2M1 rounding are integer bit operations too (the interpreter's float8 cast is wrong, SPEC §6).

`seed`, `offset` and the per-tensor scale may live in device memory and are read in the kernel, so
a captured CUDA graph replays with whatever values those tensors hold. The ops `nvfp4::amax` and
`nvfp4::quantize` (torch.library) let torch.compile(fullgraph=True) trace through both kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..format import BLOCK_SIZE, Mode

# Blocks each quantize program owns, and its warps, by problem size (tuned on an H100: docs/benchmarks.md).
QUANTIZE_BLOCKS = 256
QUANTIZE_WARPS = 4
AMAX_ELEMENTS = 8192  # elements each amax program reduces
AMAX_WARPS = 8
AMAX_FINISH_ELEMENTS = 1024

_INPUT_KIND = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
_ELEMENT_BITS_DTYPE = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
_MAGNITUDE_MASK = {torch.bfloat16: 0x7FFF, torch.float16: 0x7FFF, torch.float32: 0x7FFFFFFF}


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _magnitude_to_float(bits, INPUT_KIND: tl.constexpr):
    """Magnitude bits as an int32 (sign cleared) -> float32."""
    if INPUT_KIND == 0:
        x = (bits << 16).to(tl.float32, bitcast=True)
    elif INPUT_KIND == 1:
        x = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    else:
        x = bits.to(tl.float32, bitcast=True)
    return x


@triton.jit
def _amax_partial_kernel(bits_ptr, partial_ptr, n_elements, MAGNITUDE_MASK: tl.constexpr, ELEMENTS: tl.constexpr):
    # Programs walk the tensor from its end, so that the quantize pass, which starts at its
    # beginning, finds the most recently read part still in L2.
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    offsets = tile.to(tl.int64) * ELEMENTS + tl.arange(0, ELEMENTS)
    bits = tl.load(bits_ptr + offsets, mask=offsets < n_elements, other=0)
    # Non-negative integers order like the floats they encode; NaN sorts above Inf.
    magnitude = bits.to(tl.int32) & MAGNITUDE_MASK
    tl.store(partial_ptr + tl.program_id(0), tl.max(magnitude, axis=0))


@triton.jit
def _amax_finish_kernel(partial_ptr, amax_ptr, n_partials, INPUT_KIND: tl.constexpr, ELEMENTS: tl.constexpr):
    best = tl.zeros([ELEMENTS], dtype=tl.int32)
    for start in range(0, n_partials, ELEMENTS):
        offsets = start + tl.arange(0, ELEMENTS)
        best = tl.maximum(best, tl.load(partial_ptr + offsets, mask=offsets < n_partials, other=0))
    tl.store(amax_ptr, _magnitude_to_float(tl.max(best, axis=0), INPUT_KIND))


@triton.jit
def _load_words(bits_ptr, blocks, mask, WORDS_PER_BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """Int32 words CHUNK*4 .. CHUNK*4 + 3 (16 bytes) of each block: [BLOCKS, 4]."""
    offsets = blocks[:, None] * WORDS_PER_BLOCK + (CHUNK * 4 + tl.arange(0, 4))[None, :]
    return tl.load(bits_ptr + offsets, mask=mask[:, None], other=0)


@triton.jit
def _split_pairs(words, INPUT_KIND: tl.constexpr):
    """Words holding two 16-bit elements -> (even, odd) elements as exact float32."""
    if INPUT_KIND == 0:  # bfloat16, widened by bits: exact also for subnormals (the interpreter's cast is not)
        even = (words << 16).to(tl.float32, bitcast=True)
        odd = (words & -0x10000).to(tl.float32, bitcast=True)
    else:
        even = (words & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        odd = (words >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return even, odd


@triton.jit
def _row_abs_max(x):
    return tl.max(tl.abs(x), axis=1)


@triton.jit
def _e2m1_rn(a):
    """E2M1 magnitude code (0..7) of a in [0, 6]: nearest, ties to the even code."""
    bits = a.to(tl.int32, bitcast=True)
    # a >= 1: round the mantissa to one bit (RNE); exponent and that bit then read as the code,
    # 2 * (e - 126) + m, which the constant folds in before the shift.
    normal = (bits + (0x1FFFFF - (252 << 22)) + ((bits >> 22) & 1)) >> 22
    # a < 1: the step is 0.5 = ulp(2^22), so a + 2^22 rounds a to the grid with ties to even.
    subnormal = (a + 4194304.0).to(tl.int32, bitcast=True) - 0x4A800000
    return tl.where(a < 1.0, subnormal, normal)


@triton.jit
def _e2m1_rs(a, random_byte):
    """E2M1 magnitude code of a in [0, 6], rounded up iff its fraction of the grid step exceeds
    u = (byte + 0.5) / 256 (SPEC.md §3), exactly."""
    bits = a.to(tl.int32, bitcast=True)
    # a >= 1: the fraction is the 22 mantissa bits below the kept one, L / 2^22, and L > u * 2^22
    # iff adding 2^22 - 1 - u * 2^22 = ((255 - byte) << 14) + 0x1FFF carries into the kept bit.
    normal = (bits + ((255 - random_byte) << 14) + (0x1FFF - (252 << 22))) >> 22
    # a < 1: step 0.5, q = 2a, code = floor(q) + (frac > u) = ceil(q - u); q - u is exact where
    # it matters (near 0 and 1) and its sign is always right, so the ceil is exact.
    u = ((random_byte << 15) | 0x3F804000).to(tl.float32, bitcast=True) - 1.0
    subnormal = tl.math.ceil(a * 2.0 - u).to(tl.int32)
    return tl.where(a < 1.0, subnormal, normal)


@triton.jit
def _nibble(x, ratio, random_byte, STOCHASTIC: tl.constexpr):
    """E2M1 code of x * ratio with its sign in bit 3 (from the sign bit: -0.0 gives 8)."""
    a = tl.minimum(tl.abs(x) * ratio[:, None], 6.0)
    if STOCHASTIC:
        code = _e2m1_rs(a, random_byte)
    else:
        code = _e2m1_rn(a)
    return code | ((x.to(tl.int32, bitcast=True) >> 28) & 8)


@triton.jit
def _pair_chunk_nibbles(even, odd, ratio, word_lo, word_hi, STOCHASTIC: tl.constexpr):
    """16-bit input: 8 elements [BLOCKS, 4 words] -> 8 nibbles in one uint32 per block.
    Element j of the chunk takes byte j % 4 of Philox word j // 4 (word_lo, then word_hi)."""
    column = tl.arange(0, 4)[None, :]
    random_half = tl.where(column < 2, word_lo[:, None], word_hi[:, None]) >> (16 * (column % 2))
    low = _nibble(even, ratio, (random_half & 0xFF).to(tl.int32), STOCHASTIC)
    high = _nibble(odd, ratio, ((random_half >> 8) & 0xFF).to(tl.int32), STOCHASTIC)
    return tl.sum((low | (high << 4)).to(tl.uint32) << (8 * column).to(tl.uint32), axis=1)


@triton.jit
def _chunk_nibbles(x, ratio, word, STOCHASTIC: tl.constexpr):
    """32-bit input: 4 elements [BLOCKS, 4] -> 4 nibbles in the low 16 bits of a uint32 per block."""
    column = tl.arange(0, 4)[None, :]
    random_byte = ((word[:, None] >> (8 * column)) & 0xFF).to(tl.int32)
    nibble = _nibble(x, ratio, random_byte, STOCHASTIC)
    return tl.sum(nibble.to(tl.uint32) << (4 * column).to(tl.uint32), axis=1)


@triton.jit
def _scalar(value, IN_MEMORY: tl.constexpr):
    if IN_MEMORY:
        value = tl.load(value)
    return value


@triton.jit(do_not_specialize=["seed", "offset", "unit_stride"])
def _quantize_kernel(
    words_ptr,
    pts_ptr,
    seed,
    offset,
    packed_ptr,
    scales_ptr,
    n_blocks,
    scale_cols,
    unit_stride,
    INPUT_KIND: tl.constexpr,
    STOCHASTIC: tl.constexpr,
    SEED_IN_MEMORY: tl.constexpr,
    OFFSET_IN_MEMORY: tl.constexpr,
    SWIZZLE: tl.constexpr,
    BLOCKS: tl.constexpr,
):
    PAIRED: tl.constexpr = INPUT_KIND != 2  # two 16-bit elements a word
    WORDS_PER_BLOCK: tl.constexpr = 8 if PAIRED else 16
    blocks = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    mask = blocks < n_blocks

    # Each thread owns whole blocks: 2 (or 4) loads of 16 bytes, and every per-block value below
    # (max, scale, Philox words, packed codes) stays in that thread's registers.
    w0 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 0)
    w1 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 1)
    if PAIRED:
        e0, o0 = _split_pairs(w0, INPUT_KIND)
        e1, o1 = _split_pairs(w1, INPUT_KIND)
        block_max = tl.maximum(tl.maximum(_row_abs_max(e0), _row_abs_max(o0)), tl.maximum(_row_abs_max(e1), _row_abs_max(o1)))
    else:
        w2 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 2)
        w3 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 3)
        x0 = w0.to(tl.float32, bitcast=True)
        x1 = w1.to(tl.float32, bitcast=True)
        x2 = w2.to(tl.float32, bitcast=True)
        x3 = w3.to(tl.float32, bitcast=True)
        block_max = tl.maximum(tl.maximum(_row_abs_max(x0), _row_abs_max(x1)), tl.maximum(_row_abs_max(x2), _row_abs_max(x3)))

    # Block scale s8 = e4m3(clamp((block_max / 6) / pts, 2^-6, 448)), rounded by bits (SPEC §6).
    pts = tl.load(pts_ptr)
    scale = tl.div_rn(tl.div_rn(block_max, 6.0), pts)
    scale = tl.minimum(tl.maximum(scale, 0.015625), 448.0)
    scale_bits = scale.to(tl.int32, bitcast=True)
    scale_bits = (scale_bits + 0x7FFFF + ((scale_bits >> 20) & 1)) & -0x100000
    scale_byte = (scale_bits >> 20) - (120 << 3)  # exponent rebiased 127 -> 7, and 3 mantissa bits
    ratio = tl.div_rn(tl.div_rn(1.0, pts), scale_bits.to(tl.float32, bitcast=True))

    if STOCHASTIC:
        counters = _scalar(offset, OFFSET_IN_MEMORY).to(tl.int64) + blocks
        r0, r1, r2, r3 = tl.randint4x(_scalar(seed, SEED_IN_MEMORY), counters)
    else:  # unused
        r0 = blocks.to(tl.uint32)
        r1, r2, r3 = r0, r0, r0
    if PAIRED:
        packed = _pair_chunk_nibbles(e0, o0, ratio, r0, r1, STOCHASTIC).to(tl.uint64)
        packed |= _pair_chunk_nibbles(e1, o1, ratio, r2, r3, STOCHASTIC).to(tl.uint64) << 32
    else:
        packed = _chunk_nibbles(x0, ratio, r0, STOCHASTIC).to(tl.uint64)
        packed |= _chunk_nibbles(x1, ratio, r1, STOCHASTIC).to(tl.uint64) << 16
        packed |= _chunk_nibbles(x2, ratio, r2, STOCHASTIC).to(tl.uint64) << 32
        packed |= _chunk_nibbles(x3, ratio, r3, STOCHASTIC).to(tl.uint64) << 48
    # unit_stride (1, unknown to the compiler) keeps Triton from re-laying these per-block values
    # out through shared memory to vectorize the stores; one 8-byte store per thread coalesces.
    tl.store(packed_ptr + blocks * unit_stride, packed.to(tl.int64, bitcast=True), mask=mask)

    if SWIZZLE:
        # SPEC §5: 128x4 tiles of 512 bytes, row-major over tiles; (32*i + j, c) -> 16*j + 4*i + c.
        row = blocks // scale_cols
        col = blocks % scale_cols
        tile = (row // 128) * ((scale_cols + 3) // 4) + col // 4
        target = tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + col % 4
    else:
        target = blocks * unit_stride
    tl.store(scales_ptr + target, scale_byte.to(tl.uint8), mask=mask)


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------


def _bits(x: torch.Tensor) -> torch.Tensor:
    """x's raw bits, one integer an element."""
    return x.reshape(-1).view(_ELEMENT_BITS_DTYPE[x.dtype])


def _words(x: torch.Tensor) -> torch.Tensor:
    """x's raw bits as int32 words (two 16-bit elements a word); copies if misaligned for that."""
    flat = x.reshape(-1)
    if flat.storage_offset() * flat.element_size() % 4:
        flat = flat.clone()
    return flat.view(torch.int32)


def _amax(x: torch.Tensor) -> torch.Tensor:
    bits = _bits(x)
    n_partials = triton.cdiv(bits.numel(), AMAX_ELEMENTS)
    partials = torch.empty(n_partials, dtype=torch.int32, device=x.device)
    result = torch.empty((), dtype=torch.float32, device=x.device)
    _amax_partial_kernel[(n_partials,)](
        bits, partials, bits.numel(), MAGNITUDE_MASK=_MAGNITUDE_MASK[x.dtype], ELEMENTS=AMAX_ELEMENTS, num_warps=AMAX_WARPS
    )
    _amax_finish_kernel[(1,)](
        partials, result, n_partials, INPUT_KIND=_INPUT_KIND[x.dtype], ELEMENTS=AMAX_FINISH_ELEMENTS, num_warps=4
    )
    return result


def _swizzled_size(rows: int, cols: int) -> int:
    return triton.cdiv(rows, 128) * 128 * triton.cdiv(cols, 4) * 4


def _quantize(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    stochastic: bool,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
    swizzle: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    k = x.shape[-1]
    n_blocks = x.numel() // BLOCK_SIZE
    scale_cols = k // BLOCK_SIZE
    packed = torch.empty(n_blocks, dtype=torch.int64, device=x.device)
    if swizzle:
        size = _swizzled_size(n_blocks // scale_cols, scale_cols)
        padded = size != n_blocks
        scales = (torch.zeros if padded else torch.empty)(size, dtype=torch.uint8, device=x.device)
    else:
        scales = torch.empty(n_blocks, dtype=torch.uint8, device=x.device)
    pts = per_tensor_scale.to(device=x.device, dtype=torch.float32).reshape(())
    if n_blocks:
        _quantize_kernel[(triton.cdiv(n_blocks, QUANTIZE_BLOCKS),)](
            _words(x),
            pts,
            0 if seed is None else seed,
            offset,
            packed,
            scales,
            n_blocks,
            scale_cols,
            1,
            INPUT_KIND=_INPUT_KIND[x.dtype],
            STOCHASTIC=stochastic,
            SEED_IN_MEMORY=isinstance(seed, torch.Tensor),
            OFFSET_IN_MEMORY=isinstance(offset, torch.Tensor),
            SWIZZLE=swizzle,
            BLOCKS=QUANTIZE_BLOCKS,
            num_warps=QUANTIZE_WARPS,
        )
    packed = packed.view(torch.uint8).reshape(*x.shape[:-1], k // 2)
    scales = scales.view(torch.float8_e4m3fn)
    return packed, scales if swizzle else scales.reshape(*x.shape[:-1], scale_cols)


# ----------------------------------------------------------------------------------------------
# torch.library ops: opaque to torch.compile, safe inside CUDA graphs
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op("nvfp4::amax", mutates_args=())
def amax_op(x: torch.Tensor) -> torch.Tensor:
    """max |x| of a contiguous bf16/fp16/fp32 tensor as float32 0-d (NaN if x holds NaN)."""
    return _amax(x.contiguous())


@amax_op.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((), dtype=torch.float32)


@torch.library.custom_op("nvfp4::quantize", mutates_args=())
def quantize_op(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    stochastic: bool,
    seed: torch.Tensor | None,
    offset: torch.Tensor | None,
    swizzle: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 (packed uint8 [..., K/2], e4m3 scales [..., K/16] or flat swizzled) of x.

    seed and offset: 0-d int64 tensors on x's device (read in the kernel), needed when stochastic;
    offset None means 0."""
    return _quantize(x.contiguous(), per_tensor_scale, stochastic, seed, 0 if offset is None else offset, swizzle)


@quantize_op.register_fake
def _(x, per_tensor_scale, stochastic, seed, offset, swizzle=False):
    k = x.shape[-1]
    packed = x.new_empty((*x.shape[:-1], k // 2), dtype=torch.uint8)
    if swizzle:
        scale_cols = k // BLOCK_SIZE
        scales = x.new_empty(_swizzled_size(x.numel() // k, scale_cols), dtype=torch.float8_e4m3fn)
    else:
        scales = x.new_empty((*x.shape[:-1], k // BLOCK_SIZE), dtype=torch.float8_e4m3fn)
    return packed, scales


# ----------------------------------------------------------------------------------------------
# backend interface (kernels/__init__.py)
# ----------------------------------------------------------------------------------------------


def amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a float32 0-d tensor (NaN if x holds NaN)."""
    return _amax(x)


def quantize(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    mode: Mode,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
    swizzle: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes uint8 [..., K/2] and E4M3 scales: row-major [..., K/16], or with swizzle the
    flat GEMM layout of SPEC.md §5 (rows = all leading dims)."""
    return _quantize(x, per_tensor_scale, Mode(mode) is Mode.RS, seed, offset, swizzle)
