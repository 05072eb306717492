"""Triton backend: SPEC.md §2-§3 as two memory-bound kernels (CUDA, or CPU under TRITON_INTERPRET=1).

- amax: max |x| as an integer max over the magnitude bits (exact, and NaN bits sort above Inf),
  one partial per program and a one-program finish that widens the bits to float32.
- quantize: one thread owns whole 16-element blocks, so the block max, the scale, the Philox call
  (`tl.randint4x`, one per block) and the packing into one int64 of 16 nibbles stay in registers.
  The input is read as raw 16-byte chunks of integer bits and widened by bit operations; E4M3
  rounding is integer bit operations (the interpreter's float8 cast is wrong, SPEC §6), E2M1
  rounding exact float multiply-adds and integer arithmetic, divisions `tl.div_rn`. Stochastic
  rounding is an integer carry test on the bits of 2a, or of a + 1 rounded up (`add.rp`, inline
  PTX) below 1; each code lands in the top nibble of a word with its sign, and funnel shifts pack
  eight of them. That keeps RS within a few percent of RN, which is memory-bound (docs/benchmarks.md).
- block scale rules (docs/format.md "Scale rules"): `max` (block max -> 6, torchao's rule) is
  the default; `4over6` and `mse` pick each block's scale among 2 or 8 E4M3 candidates by the
  lowest squared RN error, bit-identical to the reference backend. They are a constexpr branch
  (max compiles exactly as without them) launched with enable_fp_fusion=False, so each error
  term rounds as the reference's does (no FMA in `d * d + e`).

`seed`, `offset` and the per-tensor scale may live in device memory and are read in the kernel, so
a captured CUDA graph replays with whatever values those tensors hold. The ops `nvfp4::amax` and
`nvfp4::quantize` (torch.library) let torch.compile(fullgraph=True) trace through both kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ..format import BLOCK_SIZE, SCALE_RULES, Mode, swizzled_shape

# (blocks a tile, warps, tiles a program) of the quantize kernel, RN and RS (tuned on an H100:
# docs/benchmarks.md). Inputs of fewer than MIN_PROGRAMS * tiles tiles get one tile a program.
QUANTIZE_CONFIGS = {Mode.RN: (256, 4, 1), Mode.RS: (128, 4, 2)}
MIN_PROGRAMS = 1024
AMAX_WORDS = 4096  # int32 words an amax tile
AMAX_TILES = 8  # tiles each amax program reduces
AMAX_WARPS = 8
AMAX_FINISH_ELEMENTS = 1024

_INPUT_KIND = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
# This backend implements every rule (its SCALE_RULES); the kernel's SCALE_RULE is the rule's index.
_SCALE_RULE_KIND = {rule: kind for kind, rule in enumerate(SCALE_RULES)}


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
def _word_magnitudes(words_ptr, tile, n_words, PAIRED: tl.constexpr, WORDS: tl.constexpr):
    """Magnitude bits of a tile of int32 words: (low halves, high halves) for 16-bit input,
    (words, words) for fp32. Non-negative integers order like the floats; NaN above Inf."""
    offsets = tl.cast(tile, tl.int64) * WORDS + tl.arange(0, WORDS)
    words = tl.load(words_ptr + offsets, mask=offsets < n_words, other=0)
    if PAIRED:
        return words & 0x7FFF, words & 0x7FFF0000
    return words & 0x7FFFFFFF, words & 0x7FFFFFFF


@triton.jit
def _amax_partial_kernel(words_ptr, partial_ptr, n_words, PAIRED: tl.constexpr, WORDS: tl.constexpr, TILES: tl.constexpr):
    # Programs walk the tensor from its end, so that the quantize pass, which starts at its
    # beginning, finds the most recently read part still in L2. The next tile is loaded before
    # the current one is reduced, to keep two tiles in flight.
    first = (tl.num_programs(0) - 1 - tl.program_id(0)) * TILES
    low, high = _word_magnitudes(words_ptr, first, n_words, PAIRED, WORDS)
    best_low, best_high = low, high
    for step in range(1, TILES):
        next_low, next_high = _word_magnitudes(words_ptr, first + step, n_words, PAIRED, WORDS)
        best_low, best_high = tl.maximum(best_low, low), tl.maximum(best_high, high)
        low, high = next_low, next_high
    best_low, best_high = tl.maximum(best_low, low), tl.maximum(best_high, high)
    if PAIRED:
        best_high = best_high >> 16
    tl.store(partial_ptr + tl.program_id(0), tl.maximum(tl.max(best_low, axis=0), tl.max(best_high, axis=0)))


@triton.jit
def _amax_finish_kernel(partial_ptr, amax_ptr, n_partials, INPUT_KIND: tl.constexpr, ELEMENTS: tl.constexpr):
    best = tl.zeros([ELEMENTS], dtype=tl.int32)
    for start in range(0, n_partials, ELEMENTS):
        offsets = start + tl.arange(0, ELEMENTS)
        best = tl.maximum(best, tl.load(partial_ptr + offsets, mask=offsets < n_partials, other=0))
    tl.store(amax_ptr, _magnitude_to_float(tl.max(best, axis=0), INPUT_KIND))


@triton.jit
def _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """Int32 words CHUNK*4 .. CHUNK*4 + 3 (16 bytes) of each block: [BLOCKS, 4]."""
    offsets = blocks[:, None] * WORDS_PER_BLOCK + (CHUNK * 4 + tl.arange(0, 4))[None, :]
    return tl.load(words_ptr + offsets, mask=mask[:, None], other=0)


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
    """E2M1 magnitude code (0..7) of a in [0, 6]: nearest, ties to the even code.

    Steps are 0.5 below 2, 1 below 4, 2 up to 6, so the code is rint(2a), 2 + rint(a) or
    4 + rint(a / 2) there; each of the three is at least the code outside its range, so the code
    is their minimum. rint by the magic constant 1.5 * 2^23 (ulp 1, ties to even = even code,
    since the offsets are even); a * 2 and a / 2 are exact, so the fused multiply-adds round once.
    All float multiply-adds and integer mins: no comparisons, no selects."""
    low = tl.fma(a, 2.0, 12582912.0).to(tl.int32, bitcast=True)
    mid = (a + 12582914.0).to(tl.int32, bitcast=True)
    high = tl.fma(a, 0.5, 12582916.0).to(tl.int32, bitcast=True)
    return tl.minimum(tl.minimum(low, mid), high) - 0x4B400000


@triton.jit
def _e4m3_bits(scale):
    """float32 bits of e4m3(clamp(scale, 2^-6, 448)), RNE, rounded by integer bit operations (SPEC §6)."""
    scale = tl.minimum(tl.maximum(scale, 0.015625), 448.0)
    bits = scale.to(tl.int32, bitcast=True)
    return (bits + 0x7FFFF + ((bits >> 20) & 1)) & -0x100000


@triton.jit
def _e4m3_step_bits(bits, steps):
    """The E4M3 scale `steps` codes away from the one with float32 bits `bits`, kept within
    [2^-6, 448]. bits >> 20 is the E4M3 byte plus 120 << 3, so E4M3 codes step by one there."""
    return tl.minimum(tl.maximum((bits >> 20) + steps, 0x08 + (120 << 3)), 0x7E + (120 << 3)) << 20


@triton.jit
def _squared_rn_errors(x, target, ratio, scale):
    """(|x| / pts - q * s)^2 per element, q the RN E2M1 value of min(|x| * ratio, 6); q * s is exact."""
    code = _e2m1_rn(tl.minimum(tl.abs(x) * ratio[:, None], 6.0))
    value = code.to(tl.float32)
    q = tl.where(code < 4, value * 0.5, tl.where(code < 6, value - 2.0, value * 2.0 - 8.0))  # 0, .5, 1, 1.5, 2, 3, 4, 6
    d = target - q * scale[:, None]
    return d * d


@triton.jit
def _pairwise4(e):
    """[BLOCKS, 4] -> [BLOCKS]: (e0 + e1) + (e2 + e3)."""
    left, right = tl.split(tl.reshape(e, [e.shape[0], 2, 2]))
    left, right = tl.split(left + right)
    return left + right


@triton.jit
def _keep_lower(best_bits, best_error, bits, elements, targets, inv_pts, PAIRED: tl.constexpr):
    """The candidate scale (float32 bits) and its error if its squared RN error (in units of pts,
    summed as the tree 16 -> 8 -> 4 -> 2 -> 1 over neighbours 2i, 2i + 1) is strictly lower than
    best_error, else the best so far: ties keep the earlier candidate."""
    scale = bits.to(tl.float32, bitcast=True)
    ratio = tl.div_rn(inv_pts, scale)
    e0 = _squared_rn_errors(elements[0], targets[0], ratio, scale)
    e1 = _squared_rn_errors(elements[1], targets[1], ratio, scale)
    e2 = _squared_rn_errors(elements[2], targets[2], ratio, scale)
    e3 = _squared_rn_errors(elements[3], targets[3], ratio, scale)
    if PAIRED:  # (even, odd) elements 0..7, then 8..15: e0 + e1 pairs neighbours
        error = _pairwise4(e0 + e1) + _pairwise4(e2 + e3)
    else:  # elements 4c .. 4c + 3
        error = (_pairwise4(e0) + _pairwise4(e1)) + (_pairwise4(e2) + _pairwise4(e3))
    lower = error < best_error
    return tl.where(lower, bits, best_bits), tl.where(lower, error, best_error)


@triton.jit
def _rule_scale_bits(elements, block_max, six_bits, pts, inv_pts, PAIRED: tl.constexpr, SCALE_RULE: tl.constexpr):
    """float32 bits of the block scale 4over6 (SCALE_RULE 1) or mse (2) choose: the first candidate
    with the strictly lowest squared RN error, in docs/format.md's order, max -> 6 first."""
    targets = (
        tl.div_rn(tl.abs(elements[0]), pts),
        tl.div_rn(tl.abs(elements[1]), pts),
        tl.div_rn(tl.abs(elements[2]), pts),
        tl.div_rn(tl.abs(elements[3]), pts),
    )
    no_error = tl.full(block_max.shape, float("inf"), tl.float32)  # the first candidate always wins
    best_bits, best_error = _keep_lower(six_bits, no_error, six_bits, elements, targets, inv_pts, PAIRED)
    if SCALE_RULE == 1:  # max -> 4
        four_bits = _e4m3_bits(tl.div_rn(tl.div_rn(block_max, 4.0), pts))
        best_bits, best_error = _keep_lower(best_bits, best_error, four_bits, elements, targets, inv_pts, PAIRED)
    else:  # the six next larger E4M3 scales, then the next smaller one (reference.MSE_SCALE_STEPS)
        for steps in tl.static_range(1, 7):
            best_bits, best_error = _keep_lower(
                best_bits, best_error, _e4m3_step_bits(six_bits, steps), elements, targets, inv_pts, PAIRED
            )
        best_bits, best_error = _keep_lower(
            best_bits, best_error, _e4m3_step_bits(six_bits, -1), elements, targets, inv_pts, PAIRED
        )
    return best_bits


@triton.jit
def _add_one_round_up(a, PTX: tl.constexpr):
    """a + 1 rounded toward +inf, for a in [0, 6]: one `add.rp` on the GPU; the interpreter, which
    runs no PTX, rounds to nearest and steps one ulp up if that fell below a + 1 (s - 1 is exact)."""
    if PTX:
        return tl.inline_asm_elementwise(
            "add.rp.f32 $0, $1, 0f3F800000;", "=f,f", [a], dtype=tl.float32, is_pure=True, pack=1
        )
    else:
        s = a + 1.0
        return (s.to(tl.int32, bitcast=True) + (s - 1.0 < a).to(tl.int32)).to(tl.float32, bitcast=True)


@triton.jit
def _e2m1_rs_high(a, threshold, PTX: tl.constexpr):
    """E2M1 code of a in [0, 6], rounded up iff its fraction of the grid step exceeds
    u = (byte + 0.5) / 256 (SPEC.md §3), exactly, in bits 28..30 of a uint32 (bit 31 clear, bits
    below it garbage); threshold is the byte's term from _rs_thresholds.

    t = max(a + 1 rounded up, 2a) is 2a for a >= 1 and a + 1 below. Either way the code is
    the bit kept above the 22 mantissa bits L of t, on the exponent, plus the carry of
    L + 2^22 - 1 - u * 2^22: (bits(t) - bits(1.0) + ((255 - byte) << 14) + 0x1FFF) >> 22, here
    computed shifted left by 6. For a >= 1, t = 2a holds a's exact mantissa; for a < 1 rounding
    up keeps the test exact, since u * 2^22 is an integer and L > n iff ceil(L) > n."""
    t = tl.maximum(_add_one_round_up(a, PTX), a + a)
    return (t.to(tl.uint32, bitcast=True) << 6) + threshold


@triton.jit
def _rs_thresholds(words, shift, bias):
    """((255 - byte) << 20) + (0x1FFF << 6) - (bits(1.0) << 6) mod 2^32 for each element, its byte
    bits 8k .. 8k + 7 of its Philox word, rotated left by shift = 20 - 8k mod 32 to bits 20..27.
    That is (rotated & 0x0FF00000) ^ 0x2FF7FFC0; bias holds 0x2FF7FFC0 as a runtime value, so
    that ptxas keeps it in a register and one LOP3 applies mask and bias together."""
    byte_high = (words << shift) | (words >> (32 - shift))
    return (byte_high & 0x0FF00000) ^ bias


@triton.jit
def _nibble_high(x, ratio, threshold, STOCHASTIC: tl.constexpr, PTX: tl.constexpr):
    """E2M1 code of v = x * ratio in bits 28..30 and v's sign (-0.0 too) in bit 31 of a uint32.
    The sign comes from v, not x, so that x is dead once v is computed (fewer live registers)."""
    v = x * ratio[:, None]
    a = tl.minimum(tl.abs(v), 6.0)
    if STOCHASTIC:
        code_high = _e2m1_rs_high(a, threshold, PTX)
    else:
        code_high = _e2m1_rn(a).to(tl.uint32) << 28
    return code_high | (v.to(tl.uint32, bitcast=True) & 0x80000000)


@triton.jit
def _columns(x):
    """The four columns [BLOCKS] of x [BLOCKS, 4] (one thread holds a row: no data moves)."""
    left, right = tl.split(tl.reshape(x, [x.shape[0], 2, 2]))  # columns (0, 2) and (1, 3)
    c0, c2 = tl.split(left)
    c1, c3 = tl.split(right)
    return c0, c1, c2, c3


@triton.jit
def _pack8(n0, n1, n2, n3, n4, n5, n6, n7):
    """Eight nibbles (each the top 4 bits of a uint32) -> one uint32, n0 in the low nibble; each
    step is a funnel shift, so the garbage below a nibble costs no mask."""
    packed = n7 >> 28
    packed = (packed << 4) | (n6 >> 28)
    packed = (packed << 4) | (n5 >> 28)
    packed = (packed << 4) | (n4 >> 28)
    packed = (packed << 4) | (n3 >> 28)
    packed = (packed << 4) | (n2 >> 28)
    packed = (packed << 4) | (n1 >> 28)
    return (packed << 4) | (n0 >> 28)


@triton.jit
def _pair_chunk_nibbles(even, odd, ratio, word_lo, word_hi, bias, STOCHASTIC: tl.constexpr, PTX: tl.constexpr):
    """16-bit input: 8 elements [BLOCKS, 4 words] -> 8 nibbles in one uint32 per block.
    Element j of the chunk takes byte j % 4 of Philox word j // 4 (word_lo, then word_hi)."""
    column = tl.arange(0, 4)[None, :]
    words = tl.where(column < 2, word_lo[:, None], word_hi[:, None])
    # even element 2c takes byte k = 2 (c % 2), odd element 2c + 1 byte k = 2 (c % 2) + 1
    even_thresholds = _rs_thresholds(words, tl.where(column % 2 == 0, 20, 4), bias)
    odd_thresholds = _rs_thresholds(words, tl.where(column % 2 == 0, 12, 28), bias)
    e0, e1, e2, e3 = _columns(_nibble_high(even, ratio, even_thresholds, STOCHASTIC, PTX))
    o0, o1, o2, o3 = _columns(_nibble_high(odd, ratio, odd_thresholds, STOCHASTIC, PTX))
    return _pack8(e0, o0, e1, o1, e2, o2, e3, o3)


@triton.jit
def _chunk_nibbles(x, ratio, word, bias, STOCHASTIC: tl.constexpr, PTX: tl.constexpr):
    """32-bit input: 4 elements [BLOCKS, 4] -> their 4 high nibbles, one [BLOCKS] each; element
    c takes byte c of the Philox word."""
    column = tl.arange(0, 4)[None, :]
    thresholds = _rs_thresholds(word[:, None], tl.where(column == 3, 28, 20 - 8 * column), bias)
    return _columns(_nibble_high(x, ratio, thresholds, STOCHASTIC, PTX))


@triton.jit
def _scalar(value, IN_MEMORY: tl.constexpr):
    if IN_MEMORY:
        value = tl.load(value)
    return value


@triton.jit
def _tile_blocks(tile, n_blocks, BLOCKS: tl.constexpr):
    blocks = tl.cast(tile, tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    return blocks, blocks < n_blocks


@triton.jit
def _load_tile(words_ptr, tile, n_blocks, PAIRED: tl.constexpr, BLOCKS: tl.constexpr):
    """The tile's raw words, 16 bytes a load: two loads a block for 16-bit input, four for fp32
    (w2, w3 repeat w0, w1 for 16-bit input, unused). Past the last tile nothing is read."""
    blocks, mask = _tile_blocks(tile, n_blocks, BLOCKS)
    WORDS_PER_BLOCK: tl.constexpr = 8 if PAIRED else 16
    w0 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 0)
    w1 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 1)
    if PAIRED:
        w2, w3 = w0, w1
    else:
        w2 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 2)
        w3 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 3)
    return w0, w1, w2, w3


@triton.jit
def _quantize_tile(
    w0, w1, w2, w3, packed_ptr, scales_ptr, tile, n_blocks, scale_cols, unit_stride, pts, inv_pts, seed, offset,
    PAIRED: tl.constexpr, INPUT_KIND: tl.constexpr, STOCHASTIC: tl.constexpr, SWIZZLE: tl.constexpr, SCALE_RULE: tl.constexpr,
    BLOCKS: tl.constexpr, PTX: tl.constexpr,
):
    """Quantize one tile of BLOCKS blocks from its words. Each thread owns whole blocks, so every
    per-block value (max, scale, Philox words, packed codes) stays in that thread's registers."""
    blocks, mask = _tile_blocks(tile, n_blocks, BLOCKS)
    if PAIRED:
        e0, o0 = _split_pairs(w0, INPUT_KIND)
        e1, o1 = _split_pairs(w1, INPUT_KIND)
        block_max = tl.maximum(tl.maximum(_row_abs_max(e0), _row_abs_max(o0)), tl.maximum(_row_abs_max(e1), _row_abs_max(o1)))
        elements = (e0, o0, e1, o1)
    else:
        x0 = w0.to(tl.float32, bitcast=True)
        x1 = w1.to(tl.float32, bitcast=True)
        x2 = w2.to(tl.float32, bitcast=True)
        x3 = w3.to(tl.float32, bitcast=True)
        block_max = tl.maximum(tl.maximum(_row_abs_max(x0), _row_abs_max(x1)), tl.maximum(_row_abs_max(x2), _row_abs_max(x3)))
        elements = (x0, x1, x2, x3)

    # Block scale s8 = e4m3(clamp((block_max / 6) / pts, 2^-6, 448)), rounded by bits (SPEC §6).
    scale_bits = _e4m3_bits(tl.div_rn(tl.div_rn(block_max, 6.0), pts))
    if SCALE_RULE != 0:
        scale_bits = _rule_scale_bits(elements, block_max, scale_bits, pts, inv_pts, PAIRED, SCALE_RULE)
    scale_byte = (scale_bits >> 20) - (120 << 3)  # exponent rebiased 127 -> 7, and 3 mantissa bits
    ratio = tl.div_rn(inv_pts, scale_bits.to(tl.float32, bitcast=True))

    bias = (unit_stride * 0x2FF7FFC0).to(tl.uint32)  # see _rs_thresholds
    if STOCHASTIC:  # one Philox call a block (SPEC.md §3)
        r0, r1, r2, r3 = tl.randint4x(seed, offset + blocks)
    else:  # unused
        r0 = blocks.to(tl.uint32)
        r1, r2, r3 = r0, r0, r0
    if PAIRED:
        low = _pair_chunk_nibbles(e0, o0, ratio, r0, r1, bias, STOCHASTIC, PTX)
        high = _pair_chunk_nibbles(e1, o1, ratio, r2, r3, bias, STOCHASTIC, PTX)
    else:
        n0, n1, n2, n3 = _chunk_nibbles(x0, ratio, r0, bias, STOCHASTIC, PTX)
        n4, n5, n6, n7 = _chunk_nibbles(x1, ratio, r1, bias, STOCHASTIC, PTX)
        low = _pack8(n0, n1, n2, n3, n4, n5, n6, n7)
        n0, n1, n2, n3 = _chunk_nibbles(x2, ratio, r2, bias, STOCHASTIC, PTX)
        n4, n5, n6, n7 = _chunk_nibbles(x3, ratio, r3, bias, STOCHASTIC, PTX)
        high = _pack8(n0, n1, n2, n3, n4, n5, n6, n7)
    packed = low.to(tl.uint64) | (high.to(tl.uint64) << 32)
    # unit_stride (1, unknown to the compiler) keeps Triton from re-laying these per-block values
    # out through shared memory to vectorize the stores; one 8-byte store per thread coalesces.
    tl.store(packed_ptr + blocks * unit_stride, packed.to(tl.int64, bitcast=True), mask=mask)

    if SWIZZLE:
        # SPEC §5: 128x4 tiles of 512 bytes, row-major over tiles; (32*i + j, c) -> 16*j + 4*i + c.
        row = blocks // scale_cols
        col = blocks % scale_cols
        swizzled_tile = (row // 128) * ((scale_cols + 3) // 4) + col // 4
        target = swizzled_tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + col % 4
    else:
        target = blocks * unit_stride
    tl.store(scales_ptr + target, scale_byte.to(tl.uint8), mask=mask)


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
    SCALE_RULE: tl.constexpr,
    BLOCKS: tl.constexpr,
    TILES: tl.constexpr,
    PTX: tl.constexpr,
):
    # Each program quantizes TILES consecutive tiles, loading the next tile's words before
    # quantizing the current one, so memory stays busy while it computes.
    pts = tl.load(pts_ptr)
    inv_pts = tl.div_rn(1.0, pts)
    if STOCHASTIC:
        seed = _scalar(seed, SEED_IN_MEMORY)
        offset = _scalar(offset, OFFSET_IN_MEMORY).to(tl.int64)
    PAIRED: tl.constexpr = INPUT_KIND != 2  # two 16-bit elements a word
    first = tl.program_id(0) * TILES
    end = tl.minimum(n_blocks, tl.cast(first + TILES, tl.int64) * BLOCKS)  # this program's blocks
    w0, w1, w2, w3 = _load_tile(words_ptr, first, end, PAIRED, BLOCKS)
    for step in tl.range(TILES, loop_unroll_factor=2):  # unrolled: the prefetched words need no copies
        tile = first + step
        n0, n1, n2, n3 = _load_tile(words_ptr, tile + 1, end, PAIRED, BLOCKS)
        _quantize_tile(
            w0, w1, w2, w3, packed_ptr, scales_ptr, tile, end, scale_cols, unit_stride, pts, inv_pts, seed, offset,
            PAIRED, INPUT_KIND, STOCHASTIC, SWIZZLE, SCALE_RULE, BLOCKS, PTX,
        )
        w0, w1, w2, w3 = n0, n1, n2, n3


# ----------------------------------------------------------------------------------------------
# the backend interface (kernels/__init__.py)
# ----------------------------------------------------------------------------------------------


# Inline PTX where the kernel is compiled for NVIDIA; the interpreter (and ROCm) take the
# plain-Triton twin of each PTX line, which gives the same bits.
_PTX = not isinstance(_quantize_kernel, InterpretedFunction) and torch.version.hip is None


def _words(x: torch.Tensor) -> torch.Tensor:
    """x's raw bits as int32 words (two 16-bit elements a word); copies if misaligned for that."""
    flat = x.reshape(-1)
    if flat.storage_offset() * flat.element_size() % 4:
        flat = flat.clone()
    return flat.view(torch.int32)


def amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| of a contiguous x as a float32 0-d tensor (NaN if x holds NaN)."""
    words = _words(x)
    n_partials = triton.cdiv(words.numel(), AMAX_WORDS * AMAX_TILES)
    partials = torch.empty(n_partials, dtype=torch.int32, device=x.device)
    result = torch.empty((), dtype=torch.float32, device=x.device)
    _amax_partial_kernel[(n_partials,)](
        words, partials, words.numel(), PAIRED=x.element_size() == 2, WORDS=AMAX_WORDS, TILES=AMAX_TILES, num_warps=AMAX_WARPS
    )
    _amax_finish_kernel[(1,)](
        partials, result, n_partials, INPUT_KIND=_INPUT_KIND[x.dtype], ELEMENTS=AMAX_FINISH_ELEMENTS, num_warps=4
    )
    return result


def _swizzled_size(rows: int, cols: int) -> int:
    padded_rows, padded_cols = swizzled_shape(rows, cols)
    return padded_rows * padded_cols


def quantize(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    mode: Mode,
    seed: torch.Tensor | int | None,
    offset: torch.Tensor | int,
    swizzle: bool = False,
    scale_rule: str = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes uint8 [..., K/2] and E4M3 scales of a contiguous x: row-major [..., K/16], or
    with swizzle the flat GEMM layout of SPEC.md §5 (rows = all leading dims).

    scale_rule (one of SCALE_RULES) chooses the block scales; element rounding is the same for all."""
    stochastic = Mode(mode) is Mode.RS
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
    blocks_a_tile, warps, tiles = QUANTIZE_CONFIGS[Mode.RS if stochastic else Mode.RN]
    n_tiles = triton.cdiv(n_blocks, blocks_a_tile)
    if n_tiles < MIN_PROGRAMS * tiles:
        tiles = 1
    # The rules' errors must round once an operation, as the reference's do; max keeps Triton's default.
    fusion = {} if scale_rule == "max" else {"enable_fp_fusion": False}
    if n_blocks:
        _quantize_kernel[(triton.cdiv(n_tiles, tiles),)](
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
            SCALE_RULE=_SCALE_RULE_KIND[scale_rule],
            BLOCKS=blocks_a_tile,
            TILES=tiles,
            PTX=_PTX,
            num_warps=warps,
            **fusion,
        )
    packed = packed.view(torch.uint8).reshape(*x.shape[:-1], k // 2)
    scales = scales.view(torch.float8_e4m3fn)
    return packed, scales if swizzle else scales.reshape(*x.shape[:-1], scale_cols)


# ----------------------------------------------------------------------------------------------
# torch.library ops: opaque to torch.compile, safe inside CUDA graphs
# ----------------------------------------------------------------------------------------------


def _check_op_input(x: torch.Tensor) -> None:
    # The ops are public entry points that bypass nvfp4cli.quantize's checks.
    if x.dtype not in _INPUT_KIND or x.dim() == 0 or x.shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"nvfp4 ops take bfloat16/float16/float32 with a last dim that is a multiple of {BLOCK_SIZE}, "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )


@torch.library.custom_op("nvfp4::amax", mutates_args=())
def amax_op(x: torch.Tensor) -> torch.Tensor:
    """max |x| of a bf16/fp16/fp32 tensor as float32 0-d (NaN if x holds NaN)."""
    _check_op_input(x)
    return amax(x.contiguous())


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
    scale_rule: str = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 (packed uint8 [..., K/2], e4m3 scales [..., K/16] or flat swizzled) of x.

    seed and offset: 0-d int64 tensors on x's device (read in the kernel, so a CUDA graph replays
    with their current values); seed is needed when stochastic, offset None means 0.
    scale_rule: one of SCALE_RULES (docs/format.md "Scale rules")."""
    _check_op_input(x)
    if stochastic and seed is None:
        raise ValueError("nvfp4::quantize with stochastic=True needs a seed tensor")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"nvfp4::quantize: scale_rule must be one of {', '.join(SCALE_RULES)}, got {scale_rule!r}")
    mode = Mode.RS if stochastic else Mode.RN
    return quantize(x.contiguous(), per_tensor_scale, mode, seed, 0 if offset is None else offset, swizzle, scale_rule)


@quantize_op.register_fake
def _(x, per_tensor_scale, stochastic, seed, offset, swizzle=False, scale_rule="max"):
    k = x.shape[-1]
    packed = x.new_empty((*x.shape[:-1], k // 2), dtype=torch.uint8)
    if swizzle:
        scale_cols = k // BLOCK_SIZE
        scales = x.new_empty(_swizzled_size(x.numel() // k, scale_cols), dtype=torch.float8_e4m3fn)
    else:
        scales = x.new_empty((*x.shape[:-1], k // BLOCK_SIZE), dtype=torch.float8_e4m3fn)
    return packed, scales
