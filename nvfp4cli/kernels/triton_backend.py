"""Triton backend: docs/format.md §2-§3 as memory-bound kernels (CUDA, or CPU under TRITON_INTERPRET=1).

- amax: max |x| as an integer max over the magnitude bits (exact, and NaN bits sort above Inf),
  one partial per program and a one-program finish that widens the bits to float32.
- amax+quantize in one launch (quantize_amax, what nvfp4cli.quantize runs without a given scale):
  ticketed programs, the first reduce x's amax, the others wait for it and quantize (see
  _amax_quantize_kernel): one launch where amax, its finish, the scale's tensor ops and quantize
  were six, which is what small tensors pay for. The amax reads ask L2 to keep the part of x the
  quantize reads first (evict_last), and the quantize reads to go first (evict_first), so the
  second read finds part of x in L2 (H200, 8192x8192 RN: 89.5 -> 84.5 us; docs/benchmarks.md).
- quantize: one thread owns whole 16-element blocks, so the block max, the scale, the Philox call
  (`tl.randint4x`, one per block) and the packing into one int64 of 16 nibbles stay in registers.
  The input is read as raw 16-byte chunks of integer bits and widened by bit operations; E4M3
  rounding is integer bit operations (the interpreter's float8 cast is wrong, docs/format.md §11), E2M1
  rounding exact float multiply-adds and integer arithmetic, divisions `tl.div_rn`. Stochastic
  rounding is an integer carry test on the bits of 2a, or of a + 1 rounded up (`add.rp`, inline
  PTX) below 1; each code lands in the top nibble of a word with its sign, and funnel shifts pack
  eight of them; Philox's products are `mul.wide` (one instruction a product). On an H200 RN is
  memory-bound and RS instruction-bound, 1.27x RN (docs/benchmarks.md).
- block scale rules (docs/format.md §4): `max` (block max -> 6, torchao's rule) is
  the default; `4over6` and `mse` pick each block's scale among 2 or 8 E4M3 candidates by the
  lowest squared RN error, bit-identical to the reference backend. They are a constexpr branch
  (max compiles exactly as without them) launched with enable_fp_fusion=False, so each error
  term rounds as the reference's does (no FMA in `d * d + e`).
- training primitives (docs/format.md §9, docs/training.md), in the same kernel: the RHT runs on the
  thread's own block in registers (each butterfly stage pairs elements inside a 4-element chunk or
  across two chunks, in docs/format.md's order); 2-D scaling lays a program's blocks out as 16 rows x N block
  columns and shares the tile max (one value a block) across threads; quantize_rowcol's programs
  run down a column of such tiles, then read them again (from the cache the row pass filled) in
  patches of 16 rows x 2-8 columns, one a thread, whose columns are blocks of x.T: loads of 4-16
  bytes, not one an element, and the x.T blocks a warp stores lie side by side.
  `amax_rowcol` gives amax(x) and amax(rht(x.T)) from one read; `rht` writes float32.

`seed`, `offset` and the per-tensor scales may live in device memory and are read in the kernel,
so a captured CUDA graph replays with whatever values those tensors hold. The ops `nvfp4::amax`,
`nvfp4::amax_rowcol`, `nvfp4::rht`, `nvfp4::quantize` and `nvfp4::quantize_rowcol` (torch.library)
let torch.compile(fullgraph=True) trace through the kernels.
"""

from __future__ import annotations

import functools
import threading

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ..format import BLOCK_SIZE, PTS_DIVISOR, PTS_FLOOR, SCALE_RULES, Mode, swizzled_shape
from . import HADAMARD_SIGNS, quantize_amax_in_steps

# (blocks a tile, warps, tiles a program) of the quantize kernel by (mode, 2-D tiles), tuned on an
# H200 (docs/benchmarks.md; 2-D tiles, for block_2d and rowcol, are 16 rows x blocks/16 block
# columns). Inputs of fewer than MIN_PROGRAMS * tiles tiles get one tile a program.
QUANTIZE_CONFIGS = {
    (Mode.RN, False): (256, 4, 2),
    (Mode.RS, False): (128, 4, 2),
    (Mode.RN, True): (256, 4, 2),
    (Mode.RS, True): (256, 4, 2),
}
# quantize_rowcol's: (blocks a 2-D tile, warps, tiles a program, patch), its columns in patches of
# 16 rows x `patch` (2, 4 or 8) columns, one a thread (_column_patches): tiles * blocks = patch *
# 32 * warps, and blocks >= 32 * warps (a row block a thread). Wider patches take fewer
# instructions an element (sm_90 RS: 41.2 at patch 2, 39.3 at 4) and more registers (58, 126):
# on the H200 RS runs best at patch 2 (col_hadamard 135.1 -> 134.0 us, plain 165.0 -> 141.0 us).
ROWCOL_CONFIGS = {Mode.RN: (128, 4, 4, 4), Mode.RS: (128, 4, 2, 2)}
MIN_PROGRAMS = 1024
# (blocks a tile, warps, tiles a program) of the one-launch amax+quantize's quantize programs
# (each program takes a ticket: fewer, longer programs than the quantize kernel's); H200. The amax
# programs share the shape and load half a tile a step: RS at 256 blocks, not the quantize kernel's
# 128, reads twice as much a load (bf16 RS against (128, 4, 4): 8192x8192 102.8 -> 99.5 us,
# 2048x2048 19.1 -> 14.5, 1024x1024 10.6 -> 8.9; 16x8192 6.6 -> 6.8).
AMAX_QUANTIZE_CONFIGS = {
    (Mode.RN, False): (256, 4, 2),
    (Mode.RS, False): (256, 4, 2),
    (Mode.RN, True): (256, 4, 2),
    (Mode.RS, True): (256, 4, 2),
}
MAX_REGISTERS: int | None = None  # a register cap for the quantize kernels (ptxas's maxnreg); None: the compiler's choice
# The quantize kernel's register caps by (mode, 2-D tiles, nonfinite flag). Uncapped, Triton 3.6
# gives 2-D RN 82 registers, so an SM holds 5 of its 128-thread programs; at 80 it holds 6 (H200:
# 49.9 -> 48.7-49.0 us, 1.111x -> 1.085x 1-D; 72 and 64 spill and gain nothing or lose; 2-D RS loses
# at every cap). With the flag, 1-D RS takes 72 registers, not 56: capped at 72, 61.3 -> 58.7 us
# (RN's 94 gain nothing from a cap).
QUANTIZE_REGISTERS = {(Mode.RN, True, False): 80, (Mode.RN, True, True): 80, (Mode.RS, False, True): 72}
AMAX_WORDS = 4096  # int32 words an amax tile
AMAX_TILES = 8  # tiles each amax program reduces
AMAX_WARPS = 8
AMAX_FINISH_ELEMENTS = 1024
AMAX_CHUNK_TILES = 8  # quantize tiles each amax program of the one-launch amax+quantize reduces
# L2 policy of amax then quantize (H200, 8192x8192 bf16 RN one launch: 89.5 -> 84.5 us; 16384x8192:
# 169.0 -> 161.4 us; all of the steps kept: no gain): the last AMAX_KEPT_FRACTION of each amax
# program's steps load with evict_last, and the one-launch quantize programs' loads with evict_first.
AMAX_KEPT_FRACTION = 0.75
AMAX_STREAM_QUANTIZE = True
# The one-launch amax+quantize of an x of up to 2048 blocks an SM (4.3 M elements on an H200) runs
# resident: one tile a program, at most one program an SM, all resident at once (a cooperative
# launch; one program of up to 8 warps fits an SM whatever its registers), so each program
# quantizes the tile it reduced from its registers and x is read once. (blocks a tile, warps) by
# size: the first whose tiles do not outnumber the SMs. H200, bf16 RN, ticketed -> resident:
# 16x8192 6.86 -> 6.14 us (128 blocks); 1024x1024 8.54 -> 7.58 (512); 256x8192 12.05 -> 8.91
# (1024); 2048x2048 17.06 -> 12.16 (2048). Fewer, larger tiles lose (1024x1024 at 1024 blocks
# 8.10 us), and so do two programs an SM (8.03 us at 256 blocks, 10.2 at 128 blocks and four an
# SM); 4096 blocks spill.
RESIDENT_CONFIGS = ((128, 4), (256, 4), (512, 8), (1024, 8), (2048, 8))
# A larger x of 16-bit elements, up to RESIDENT_MAX_TILES tiles of RESIDENT_TILES_CONFIG a program
# (up to 17 M elements, 35 MB, on an H200, whose L2 holds 50 MB), runs resident too: each program
# reads its tiles, asking L2 to keep them, then quantizes them backwards from the last, still in
# its registers, the others read again from L2. H200, ticketed -> resident, RN: 4096x2048 20.21 ->
# 16.40 us, 3000x4096 24.85 -> 21.52, 4096x4096 28.74 -> 25.70; RS 19.89 -> 18.50, 25.70 -> 23.79,
# 31.36 -> 30.10 (RS spills 48 bytes a thread; at 8 warps RN took 16.75, 21.60, 26.62 us and RS
# spilled 144 bytes and lost at 4096x4096; 2048 blocks and 16 warps spill). More tiles, or 512
# blocks, lose to tickets (8192x8192: 32 tiles 85.3-86.3 us against 84.3-84.6). fp32 takes
# tickets beyond one tile: its tiles hold twice the bytes.
RESIDENT_TILES_CONFIG = (1024, 16)
RESIDENT_MAX_TILES = 8
RESIDENT_LAUNCH = True  # False: every one-launch amax+quantize takes tickets (tests compare the two)

AMAX_BLOCKS_CONFIG = (512, 8)  # (blocks a tile, warps) of the amax of RHT'd rows (H200)
AMAX_ROWCOL_CONFIG = (128, 4, 4, 4)  # amax_rowcol's with col_hadamard, as ROWCOL_CONFIGS
RHT_BLOCKS = 128  # 16-element blocks a program of the rht kernel

PTS_DIVISOR_F32 = tl.constexpr(float(PTS_DIVISOR))
PTS_FLOOR_F32 = tl.constexpr(PTS_FLOOR)

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
def _word_magnitudes(words_ptr, tile, n_words, PAIRED: tl.constexpr, WORDS: tl.constexpr, KEEP: tl.constexpr = False):
    """Magnitude bits of a tile of int32 words: (low halves, high halves) for 16-bit input,
    (words, words) for fp32. Non-negative integers order like the floats; NaN above Inf.
    KEEP asks L2 to keep the words (evict_last) for a second pass that reads them soon."""
    offsets = tl.cast(tile, tl.int64) * WORDS + tl.arange(0, WORDS)
    words = tl.load(words_ptr + offsets, mask=offsets < n_words, other=0, eviction_policy="evict_last" if KEEP else "")
    if PAIRED:
        return words & 0x7FFF, words & 0x7FFF0000
    return words & 0x7FFFFFFF, words & 0x7FFFFFFF


@triton.jit
def _amax_steps(
    words_ptr, base, stride, n_words, low, high, best_low, best_high, FIRST: tl.constexpr, LAST: tl.constexpr,
    KEEP: tl.constexpr, PAIRED: tl.constexpr, WORDS: tl.constexpr, PER: tl.constexpr,
):
    """Steps FIRST .. LAST - 1 of _sweep_max: each loads its tile, then takes the max of the one
    before (low, high)."""
    for step in tl.range(FIRST, LAST, num_stages=1):
        next_low, next_high = _word_magnitudes(words_ptr, base + step // PER * stride + step % PER, n_words, PAIRED, WORDS, KEEP)
        best_low, best_high = tl.maximum(best_low, low), tl.maximum(best_high, high)
        low, high = next_low, next_high
    return low, high, best_low, best_high


@triton.jit
def _sweep_max(
    words_ptr, base, stride, n_words, STEPS: tl.constexpr, KEPT_STEPS: tl.constexpr, PAIRED: tl.constexpr,
    WORDS: tl.constexpr, PER: tl.constexpr,
):
    """Max magnitude bits (int32) of the tiles of WORDS words that a program reads in STEPS steps,
    step s tile base + (s // PER) * stride + s % PER: PER consecutive tiles, then the next window.
    The next tile is loaded before the current one is reduced, to keep two in flight; the last
    KEPT_STEPS (< STEPS) load with evict_last, for a quantize pass that reads those tiles first."""
    low, high = _word_magnitudes(words_ptr, base, n_words, PAIRED, WORDS)
    best_low, best_high = low, high
    low, high, best_low, best_high = _amax_steps(
        words_ptr, base, stride, n_words, low, high, best_low, best_high, 1, STEPS - KEPT_STEPS, False, PAIRED, WORDS, PER
    )
    low, high, best_low, best_high = _amax_steps(
        words_ptr, base, stride, n_words, low, high, best_low, best_high, STEPS - KEPT_STEPS, STEPS, True, PAIRED, WORDS, PER
    )
    best_low, best_high = tl.maximum(best_low, low), tl.maximum(best_high, high)
    if PAIRED:
        best_high = best_high >> 16
    return tl.maximum(tl.max(best_low, axis=0), tl.max(best_high, axis=0))


@triton.jit
def _amax_partial_kernel(
    words_ptr, partial_ptr, n_words, PAIRED: tl.constexpr, WORDS: tl.constexpr, TILES: tl.constexpr, KEPT_STEPS: tl.constexpr
):
    # Step s of every program reads one window of consecutive tiles (program p: tile s * P + p),
    # so the programs sweep the tensor together: DRAM pages stay open, where each program
    # streaming its own region spread the reads over the whole tensor. The windows run from the
    # end, so the quantize pass, which starts at the beginning, finds it in L2 (the last
    # KEPT_STEPS windows are kept there).
    programs = tl.num_programs(0)
    base = (TILES - 1) * programs + tl.program_id(0)
    tl.store(partial_ptr + tl.program_id(0), _sweep_max(words_ptr, base, -programs, n_words, TILES, KEPT_STEPS, PAIRED, WORDS, 1))


@triton.jit
def _amax_finish_kernel(partial_ptr, amax_ptr, n_partials, INPUT_KIND: tl.constexpr, ELEMENTS: tl.constexpr):
    best = tl.zeros([ELEMENTS], dtype=tl.int32)
    for start in range(0, n_partials, ELEMENTS):
        offsets = start + tl.arange(0, ELEMENTS)
        best = tl.maximum(best, tl.load(partial_ptr + offsets, mask=offsets < n_partials, other=0))
    tl.store(amax_ptr, _magnitude_to_float(tl.max(best, axis=0), INPUT_KIND))


@triton.jit
def _load_words(
    words_ptr, blocks, mask, WORDS_PER_BLOCK: tl.constexpr, CHUNK: tl.constexpr, STREAM: tl.constexpr = False, KEEP: tl.constexpr = False
):
    """Int32 words CHUNK*4 .. CHUNK*4 + 3 (16 bytes) of each block: [BLOCKS, 4]. STREAM: read
    once, L2 may evict them first (evict_first); KEEP: read again soon, L2 may evict them last."""
    offsets = blocks[:, None] * WORDS_PER_BLOCK + (CHUNK * 4 + tl.arange(0, 4))[None, :]
    return tl.load(words_ptr + offsets, mask=mask[:, None], other=0, eviction_policy="evict_first" if STREAM else "evict_last" if KEEP else "")


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
def _max_keeping_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _maximum(a, b, KEEP_NAN: tl.constexpr):
    """tl.maximum, which drops NaN, or with KEEP_NAN one that keeps it."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL if KEEP_NAN else tl.PropagateNan.NONE)


@triton.jit
def _row_abs_max(x, KEEP_NAN: tl.constexpr = False):
    if KEEP_NAN:
        return tl.reduce(tl.abs(x), 1, _max_keeping_nan)
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
    """float32 bits of e4m3(clamp(scale, 2^-6, 448)), RNE, rounded by integer bit operations (docs/format.md §11)."""
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
def _add_round_up(a, b, PTX: tl.constexpr):
    """a + b rounded toward +inf, for b = max(a, 1) and a in [0, 6]: one `add.rp` on the GPU; the
    interpreter, which runs no PTX, rounds to nearest and steps one ulp up if that fell below
    a + b (s - b is exact: for b = a, s = 2a; for b = 1 > a, Sterbenz)."""
    if PTX:
        return tl.inline_asm_elementwise("add.rp.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32, is_pure=True, pack=1)
    else:
        s = a + b
        return (s.to(tl.int32, bitcast=True) + (s - b < a).to(tl.int32)).to(tl.float32, bitcast=True)


@triton.jit
def _e2m1_rs_high(a, threshold, PTX: tl.constexpr):
    """E2M1 code of a in [0, 6], rounded up iff its fraction of the grid step exceeds
    u = (byte + 0.5) / 256 (docs/format.md §3), exactly, in bits 28..30 of a uint32 (bit 31 clear, bits
    below it garbage); threshold is the byte's term from _rs_thresholds.

    t = a + max(a, 1) rounded up is 2a for a >= 1 (exact) and a + 1 below. Either way the code is
    the bit kept above the 22 mantissa bits L of t, on the exponent, plus the carry of
    L + 2^22 - 1 - u * 2^22: (bits(t) - bits(1.0) + ((255 - byte) << 14) + 0x1FFF) >> 22, here
    computed shifted left by 6. For a >= 1, t = 2a holds a's exact mantissa; for a < 1 rounding
    up keeps the test exact, since u * 2^22 is an integer and L > n iff ceil(L) > n."""
    t = _add_round_up(a, tl.maximum(a, 1.0), PTX)
    return (t.to(tl.uint32, bitcast=True) << 6) + threshold


# Philox4x32-10's key increments (Triton's tl.randint4x, docs/format.md §3); its round
# multipliers 0xD2511F53 (A) and 0xCD9E8D57 (B) are in _philox4x's PTX.
PHILOX_KEY_A = tl.constexpr(0x9E3779B9)
PHILOX_KEY_B = tl.constexpr(0xBB67AE85)


@triton.jit
def _philox4x(seed, counter, PTX: tl.constexpr):
    """tl.randint4x(seed, counter), bit for bit. On the GPU each round's two 32x32 products are
    one `mul.wide.u32` each (high and low halves from one IMAD.WIDE, where Triton's umulhi and
    mul give two instructions a product): RS is instruction-bound on Hopper (docs/benchmarks.md)."""
    if PTX:
        seed = seed.to(tl.uint64)
        k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
        k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
        c0 = counter.to(tl.uint32)
        c1 = (counter >> 32).to(tl.uint32)
        zero = c0 * 0
        c2, c3 = zero, zero
        for _ in tl.static_range(10):  # c0, c2 = hi(B c2) ^ c1 ^ k0, hi(A c0) ^ c3 ^ k1; c1, c3 = lo(B c2), lo(A c0)
            c0, c1, c2, c3 = tl.inline_asm_elementwise(
                """{
                .reg .b64 pa, pb;
                .reg .b32 alo, ahi, blo, bhi;
                mul.wide.u32 pa, $4, 0xD2511F53;
                mul.wide.u32 pb, $6, 0xCD9E8D57;
                mov.b64 {alo, ahi}, pa;
                mov.b64 {blo, bhi}, pb;
                xor.b32 $0, bhi, $5;
                xor.b32 $0, $0, $8;
                mov.b32 $1, blo;
                xor.b32 $2, ahi, $7;
                xor.b32 $2, $2, $9;
                mov.b32 $3, alo;
                }""",
                "=r,=r,=r,=r,r,r,r,r,r,r",
                [c0, c1, c2, c3, k0 + zero, k1 + zero],
                dtype=(tl.uint32, tl.uint32, tl.uint32, tl.uint32),
                is_pure=True,
                pack=1,
            )
            k0 = k0 + PHILOX_KEY_A
            k1 = k1 + PHILOX_KEY_B
        return c0, c1, c2, c3
    else:
        return tl.randint4x(seed, counter)


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
def _tile_place(tile, scale_cols, T: tl.constexpr, DOWN: tl.constexpr):
    """(16-row group, tile column) of a 2-D tile of 16 rows x T block columns: tiles numbered
    row-major, or with DOWN down the tile column program_id(1) (quantize_rowcol: a program's
    tiles are stacked, so its column stores, consecutive 16-row groups, are consecutive 8-byte
    blocks of x.T, and no tile costs an integer division)."""
    if DOWN:
        group = tile
        tile_col = tl.program_id(1)
    else:
        groups = tl.cdiv(scale_cols, T)
        group = tile // groups
        tile_col = tile % groups
    return group, tile_col


@triton.jit
def _tile_blocks(tile, end, tile_end, scale_cols, BLOCKS: tl.constexpr, BLOCK_2D: tl.constexpr, DOWN: tl.constexpr):
    """The flat indices of a tile's blocks and their mask: BLOCKS consecutive blocks (1-D), or with
    BLOCK_2D 16 rows x BLOCKS/16 block columns, block columns fastest (so a warp reads along a row;
    orders that keep a tile in one warp, so that its max needs no shared memory, read shorter runs
    of each row and measured slower: docs/benchmarks.md, fourth round), tiles numbered as
    _tile_place's DOWN says; a 2-D tile past tile_end (the next tile prefetched by the last one)
    or outside x is empty."""
    if BLOCK_2D:
        T: tl.constexpr = BLOCKS // 16
        group, tile_col = _tile_place(tile, scale_cols, T, DOWN)
        lane = tl.arange(0, BLOCKS)
        col = tile_col * T + lane % T
        blocks = (group.to(tl.int64) * 16 + lane // T) * scale_cols + col
        mask = (col < scale_cols) & (blocks < tl.where(tile < tile_end, end, 0))
    else:
        blocks = tl.cast(tile, tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
        mask = blocks < end
    return blocks, mask


@triton.jit
def _load_tile(words_ptr, blocks, mask, PAIRED: tl.constexpr, STREAM: tl.constexpr = False, KEEP: tl.constexpr = False):
    """The blocks' raw words, 16 bytes a load: two loads a block for 16-bit input, four for fp32
    (w2, w3 repeat w0, w1 for 16-bit input, unused). Masked blocks read nothing."""
    WORDS_PER_BLOCK: tl.constexpr = 8 if PAIRED else 16
    w0 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 0, STREAM, KEEP)
    w1 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 1, STREAM, KEEP)
    if PAIRED:
        w2, w3 = w0, w1
    else:
        w2 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 2, STREAM, KEEP)
        w3 = _load_words(words_ptr, blocks, mask, WORDS_PER_BLOCK, 3, STREAM, KEEP)
    return w0, w1, w2, w3


@triton.jit
def _from_columns(c0, c1, c2, c3):
    """Four [BLOCKS] -> [BLOCKS, 4], the inverse of _columns (the joins stay in one thread)."""
    return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [c0.shape[0], 4])


@triton.jit
def _pairs_adjacent(v):
    """Butterfly of columns (0, 1) and (2, 3) of v [BLOCKS, 4]: each pair (a, b) -> (a + b, a - b)."""
    c0, c1, c2, c3 = _columns(v)
    return _from_columns(c0 + c1, c0 - c1, c2 + c3, c2 - c3)


@triton.jit
def _pairs_apart(v):
    """Butterfly of columns (0, 2) and (1, 3) of v [BLOCKS, 4]."""
    c0, c1, c2, c3 = _columns(v)
    return _from_columns(c0 + c2, c1 + c3, c0 - c2, c1 - c3)


@triton.jit
def _signed(v, SIGN_MASK: tl.constexpr, FIRST: tl.constexpr, STEP: tl.constexpr):
    """v [BLOCKS, 4] holds elements FIRST + STEP * c of each block: negate those whose sign is -1."""
    element = FIRST + STEP * tl.arange(0, 4)[None, :]
    return tl.where(((SIGN_MASK >> element) & 1) != 0, -v, v)


@triton.jit
def _rht_chunks(c0, c1, c2, c3, PAIRED: tl.constexpr, SIGN_MASK: tl.constexpr):
    """docs/format.md §9's RHT of each block, held in one thread as four [BLOCKS, 4] chunks: for 16-bit
    input (PAIRED) the even and odd elements of 0..7, then of 8..15; for fp32 elements 4k..4k+3.
    Stage h pairs elements i and i + h: within a column pair of a chunk, or across two chunks."""
    if PAIRED:
        c0 = _signed(c0, SIGN_MASK, 0, 2)
        c1 = _signed(c1, SIGN_MASK, 1, 2)
        c2 = _signed(c2, SIGN_MASK, 8, 2)
        c3 = _signed(c3, SIGN_MASK, 9, 2)
        c0, c1 = c0 + c1, c0 - c1  # h = 1: even with odd
        c2, c3 = c2 + c3, c2 - c3
        c0, c1, c2, c3 = _pairs_adjacent(c0), _pairs_adjacent(c1), _pairs_adjacent(c2), _pairs_adjacent(c3)  # h = 2
        c0, c1, c2, c3 = _pairs_apart(c0), _pairs_apart(c1), _pairs_apart(c2), _pairs_apart(c3)  # h = 4
        c0, c2 = c0 + c2, c0 - c2  # h = 8: 0..7 with 8..15
        c1, c3 = c1 + c3, c1 - c3
    else:
        c0 = _signed(c0, SIGN_MASK, 0, 1)
        c1 = _signed(c1, SIGN_MASK, 4, 1)
        c2 = _signed(c2, SIGN_MASK, 8, 1)
        c3 = _signed(c3, SIGN_MASK, 12, 1)
        c0, c1, c2, c3 = _pairs_adjacent(c0), _pairs_adjacent(c1), _pairs_adjacent(c2), _pairs_adjacent(c3)  # h = 1
        c0, c1, c2, c3 = _pairs_apart(c0), _pairs_apart(c1), _pairs_apart(c2), _pairs_apart(c3)  # h = 2
        c0, c1 = c0 + c1, c0 - c1  # h = 4
        c2, c3 = c2 + c3, c2 - c3
        c0, c2 = c0 + c2, c0 - c2  # h = 8
        c1, c3 = c1 + c3, c1 - c3
    return c0 * 0.25, c1 * 0.25, c2 * 0.25, c3 * 0.25


@triton.jit
def _elements(w0, w1, w2, w3, INPUT_KIND: tl.constexpr, HADAMARD: tl.constexpr, SIGN_MASK: tl.constexpr):
    """A tile's words -> its elements as four float32 [BLOCKS, 4] chunks (see _rht_chunks),
    RHT'd with HADAMARD."""
    if INPUT_KIND != 2:
        c0, c1 = _split_pairs(w0, INPUT_KIND)
        c2, c3 = _split_pairs(w1, INPUT_KIND)
    else:
        c0 = w0.to(tl.float32, bitcast=True)
        c1 = w1.to(tl.float32, bitcast=True)
        c2 = w2.to(tl.float32, bitcast=True)
        c3 = w3.to(tl.float32, bitcast=True)
    if HADAMARD:
        c0, c1, c2, c3 = _rht_chunks(c0, c1, c2, c3, INPUT_KIND != 2, SIGN_MASK)
    return c0, c1, c2, c3


@triton.jit
def _chunks_abs_max(c0, c1, c2, c3, KEEP_NAN: tl.constexpr = False):
    """max |.| of each block over its four chunks, [BLOCKS]; NaN where a block holds NaN with
    KEEP_NAN (max.NaN on the GPU, no dearer), else NaN is dropped as float maxima drop it."""
    low = _maximum(_row_abs_max(c0, KEEP_NAN), _row_abs_max(c1, KEEP_NAN), KEEP_NAN)
    return _maximum(low, _maximum(_row_abs_max(c2, KEEP_NAN), _row_abs_max(c3, KEEP_NAN), KEEP_NAN), KEEP_NAN)


@triton.jit
def _chunks_abs_max_bits(c0, c1, c2, c3):
    """max |.| of each block over its four chunks as float32 bits, [BLOCKS]: an int32 max (exact;
    NaN sorts above Inf)."""
    bits = tl.maximum(
        tl.maximum(tl.abs(c0).to(tl.int32, bitcast=True), tl.abs(c1).to(tl.int32, bitcast=True)),
        tl.maximum(tl.abs(c2).to(tl.int32, bitcast=True), tl.abs(c3).to(tl.int32, bitcast=True)),
    )
    return tl.max(bits, axis=1)


@triton.jit
def _words_abs_max_bits(w0, w1, w2, w3, INPUT_KIND: tl.constexpr, HADAMARD: tl.constexpr, SIGN_MASK: tl.constexpr):
    """_chunks_abs_max_bits of the blocks whose raw words (_load_tile) are w0 .. w3, RHT'd with HADAMARD."""
    c0, c1, c2, c3 = _elements(w0, w1, w2, w3, INPUT_KIND, HADAMARD, SIGN_MASK)
    return _chunks_abs_max_bits(c0, c1, c2, c3)


@triton.jit
def _tile_max(block_max, BLOCKS: tl.constexpr, TILE_MAX: tl.constexpr, PATCH: tl.constexpr):
    """2-D scaling: each block's max replaced by its 16x16 tile's. TILE_MAX 1: the blocks are 16
    rows x BLOCKS/16 block columns (rowwise); 2: column blocks as _column_patches lays them out,
    [PATCH, BLOCKS/16 tiles, 16/PATCH patches a tile]."""
    if TILE_MAX == 1:
        tiles = tl.max(tl.reshape(block_max, [16, BLOCKS // 16]), axis=0)
        block_max = tl.reshape(tl.broadcast_to(tiles[None, :], [16, BLOCKS // 16]), [BLOCKS])
    elif TILE_MAX == 2:
        SHAPE: tl.constexpr = [PATCH, BLOCKS // 16, 16 // PATCH]
        tiles = tl.max(tl.max(tl.reshape(block_max, SHAPE), axis=2), axis=0)
        block_max = tl.reshape(tl.broadcast_to(tiles[None, :, None], SHAPE), [BLOCKS])
    return block_max


@triton.jit
def _quantize_blocks(
    c0, c1, c2, c3, blocks, mask, packed_ptr, scales_ptr, scale_cols, unit_stride, pts, inv_pts, seed, offset,
    PAIRED: tl.constexpr, STOCHASTIC: tl.constexpr, SWIZZLE: tl.constexpr, SCALE_RULE: tl.constexpr,
    TILE_MAX: tl.constexpr, PATCH: tl.constexpr, BLOCKS: tl.constexpr, PTX: tl.constexpr, CHECK_FINITE: tl.constexpr = False,
):
    """Quantize BLOCKS blocks from their float32 chunks (see _rht_chunks). Each thread owns whole
    blocks, so every per-block value (max, scale, Philox words, packed codes) stays in that
    thread's registers; only 2-D scaling's tile max crosses threads (one value a block).
    Returns each block's max |.| times 0: with CHECK_FINITE (the maxima keep NaN) NaN where the
    block holds NaN or Inf, else 0."""
    elements = (c0, c1, c2, c3)
    block_max = _chunks_abs_max(c0, c1, c2, c3, CHECK_FINITE)
    finite_check = block_max * 0.0
    block_max = _tile_max(block_max, BLOCKS, TILE_MAX, PATCH)

    # Block scale s8 = e4m3(clamp((block_max / 6) / pts, 2^-6, 448)), rounded by bits (docs/format.md §11).
    scale_bits = _e4m3_bits(tl.div_rn(tl.div_rn(block_max, 6.0), pts))
    if SCALE_RULE != 0:
        scale_bits = _rule_scale_bits(elements, block_max, scale_bits, pts, inv_pts, PAIRED, SCALE_RULE)
    scale_byte = (scale_bits >> 20) - (120 << 3)  # exponent rebiased 127 -> 7, and 3 mantissa bits
    ratio = tl.div_rn(inv_pts, scale_bits.to(tl.float32, bitcast=True))

    bias = (unit_stride * 0x2FF7FFC0).to(tl.uint32)  # see _rs_thresholds
    if STOCHASTIC:  # one Philox call a block (docs/format.md §3)
        r0, r1, r2, r3 = _philox4x(seed, offset + blocks, PTX)
    else:  # unused
        r0 = blocks.to(tl.uint32)
        r1, r2, r3 = r0, r0, r0
    if PAIRED:
        low = _pair_chunk_nibbles(c0, c1, ratio, r0, r1, bias, STOCHASTIC, PTX)
        high = _pair_chunk_nibbles(c2, c3, ratio, r2, r3, bias, STOCHASTIC, PTX)
    else:
        n0, n1, n2, n3 = _chunk_nibbles(c0, ratio, r0, bias, STOCHASTIC, PTX)
        n4, n5, n6, n7 = _chunk_nibbles(c1, ratio, r1, bias, STOCHASTIC, PTX)
        low = _pack8(n0, n1, n2, n3, n4, n5, n6, n7)
        n0, n1, n2, n3 = _chunk_nibbles(c2, ratio, r2, bias, STOCHASTIC, PTX)
        n4, n5, n6, n7 = _chunk_nibbles(c3, ratio, r3, bias, STOCHASTIC, PTX)
        high = _pack8(n0, n1, n2, n3, n4, n5, n6, n7)
    packed = low.to(tl.uint64) | (high.to(tl.uint64) << 32)
    # unit_stride (1, unknown to the compiler) keeps Triton from re-laying these per-block values
    # out through shared memory to vectorize the stores; one 8-byte store per thread coalesces.
    tl.store(packed_ptr + blocks * unit_stride, packed.to(tl.int64, bitcast=True), mask=mask)

    if SWIZZLE:
        # docs/format.md §6: 128x4 tiles of 512 bytes, row-major over tiles; (32*i + j, c) -> 16*j + 4*i + c.
        row = blocks // scale_cols
        col = blocks % scale_cols
        swizzled_tile = (row // 128) * ((scale_cols + 3) // 4) + col // 4
        target = swizzled_tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + col % 4
    else:
        target = blocks * unit_stride
    tl.store(scales_ptr + target, scale_byte.to(tl.uint8), mask=mask)
    return finite_check


@triton.jit
def _program_end(n_blocks, first, BLOCKS: tl.constexpr, TILES: tl.constexpr, TILED: tl.constexpr):
    """The end of a program's blocks (1-D tiles; 2-D tiles are masked by _tile_blocks)."""
    if TILED:
        end = n_blocks
    else:
        end = tl.minimum(n_blocks, tl.cast(first + TILES, tl.int64) * BLOCKS)
    return end


@triton.jit
def _first_tile(
    words_ptr, n_blocks, scale_cols, first, INPUT_KIND: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr,
    TILED: tl.constexpr, DOWN: tl.constexpr, STREAM: tl.constexpr = False,
):
    """The end of the program's blocks (_program_end), and the blocks, mask and words of its first
    tile (tile `first`), for _quantize_tiles."""
    end = _program_end(n_blocks, first, BLOCKS, TILES, TILED)
    blocks, mask = _tile_blocks(first, end, first + TILES, scale_cols, BLOCKS, TILED, DOWN)
    w0, w1, w2, w3 = _load_tile(words_ptr, blocks, mask, INPUT_KIND != 2, STREAM)
    return end, blocks, mask, w0, w1, w2, w3


@triton.jit
def _patch_row(words_ptr, base, mask, row, row_words, INPUT_KIND: tl.constexpr, PATCH: tl.constexpr):
    """Row `row` of each patch (see _column_patches), one load of 2 * PATCH bytes (4 * PATCH for
    fp32), as [PATCH * PATCHES] float32, column j of patch p at j * PATCHES + p."""
    PATCHES: tl.constexpr = base.shape[0]
    WORDS: tl.constexpr = PATCH // 2 if INPUT_KIND != 2 else PATCH
    offsets = base[:, None] + row * row_words + tl.arange(0, WORDS)[None, :]
    words = tl.load(words_ptr + offsets, mask=mask[:, None], other=0)
    if INPUT_KIND != 2:
        even, odd = _split_pairs(words, INPUT_KIND)
        values = tl.permute(tl.join(even, odd), (1, 2, 0))  # [word, half, patch]
    else:
        values = tl.permute(words.to(tl.float32, bitcast=True), (1, 0))
    return tl.reshape(values, [PATCH * PATCHES])


@triton.jit
def _patch_chunk(words_ptr, base, mask, row_words, FIRST: tl.constexpr, STEP: tl.constexpr, INPUT_KIND: tl.constexpr, PATCH: tl.constexpr):
    """Rows FIRST + STEP * c (c < 4) of the patches' columns: [PATCH * PATCHES, 4], like _elements' chunks."""
    return _from_columns(
        _patch_row(words_ptr, base, mask, FIRST, row_words, INPUT_KIND, PATCH),
        _patch_row(words_ptr, base, mask, FIRST + STEP, row_words, INPUT_KIND, PATCH),
        _patch_row(words_ptr, base, mask, FIRST + 2 * STEP, row_words, INPUT_KIND, PATCH),
        _patch_row(words_ptr, base, mask, FIRST + 3 * STEP, row_words, INPUT_KIND, PATCH),
    )


@triton.jit
def _column_patches(
    words_ptr, first, n_blocks, scale_cols, INPUT_KIND: tl.constexpr, HADAMARD: tl.constexpr, SIGN_MASK: tl.constexpr,
    BLOCKS: tl.constexpr, TILES: tl.constexpr, PATCH: tl.constexpr,
):
    """The columnwise blocks (blocks of x.T) of 2-D tiles first .. first + TILES - 1 (numbered
    down, see _tile_place), as float32 chunks like _elements' (RHT'd with HADAMARD), with their
    flat indices in x.T and mask. A thread takes a patch of 16 rows x PATCH columns: 16 loads of
    2 * PATCH bytes (4 * PATCH for fp32) and PATCH column blocks from registers (a load an
    element cost one to two instructions an element more). Patches go across a 16 x 16 tile
    fastest (2-D scaling's tile max stays among neighbours), then down the stacked tiles, so a
    warp's stores of a column block are runs of consecutive 16-row groups, consecutive in x.T.
    Column j of patch p is element j * PATCHES + p, the order of a store's own layout (one
    element a thread, threads fastest), so no values move through shared memory."""
    PATCHES: tl.constexpr = TILES * BLOCKS // PATCH
    STRIPS: tl.constexpr = 16 // PATCH  # patches across a 16 x 16 tile
    row_groups = n_blocks // scale_cols // 16
    patch = tl.arange(0, PATCHES)
    group, tile_col = _tile_place(first + patch // STRIPS % TILES, scale_cols, BLOCKS // 16, True)
    col = tile_col * BLOCKS + patch // (STRIPS * TILES) * 16 + patch % STRIPS * PATCH  # the patch's first column
    mask = (col < scale_cols * 16) & (group < row_groups)
    row_words = scale_cols * (8 if INPUT_KIND != 2 else 16)
    base = group.to(tl.int64) * 16 * row_words + (col // 2 if INPUT_KIND != 2 else col)
    if INPUT_KIND != 2:
        c0 = _patch_chunk(words_ptr, base, mask, row_words, 0, 2, INPUT_KIND, PATCH)
        c1 = _patch_chunk(words_ptr, base, mask, row_words, 1, 2, INPUT_KIND, PATCH)
        c2 = _patch_chunk(words_ptr, base, mask, row_words, 8, 2, INPUT_KIND, PATCH)
        c3 = _patch_chunk(words_ptr, base, mask, row_words, 9, 2, INPUT_KIND, PATCH)
    else:
        c0 = _patch_chunk(words_ptr, base, mask, row_words, 0, 1, INPUT_KIND, PATCH)
        c1 = _patch_chunk(words_ptr, base, mask, row_words, 4, 1, INPUT_KIND, PATCH)
        c2 = _patch_chunk(words_ptr, base, mask, row_words, 8, 1, INPUT_KIND, PATCH)
        c3 = _patch_chunk(words_ptr, base, mask, row_words, 12, 1, INPUT_KIND, PATCH)
    if HADAMARD:
        c0, c1, c2, c3 = _rht_chunks(c0, c1, c2, c3, INPUT_KIND != 2, SIGN_MASK)
    columns = tl.arange(0, PATCH)[:, None] + col[None, :]
    blocks = tl.reshape(columns.to(tl.int64) * row_groups + group[None, :], [PATCH * PATCHES])
    mask = tl.reshape(tl.broadcast_to(mask[None, :], [PATCH, PATCHES]), [PATCH * PATCHES])
    return c0, c1, c2, c3, blocks, mask


@triton.jit
def _flag_nonfinite(nonfinite_ptr, seen, scale):
    """NaN to nonfinite_ptr from each thread whose blocks' `seen` holds NaN, and from all where
    the scale is NaN, +-Inf, zero or negative: masked stores, taken only then, where a max over
    the program cost a barrier (H200, flagged rowcol RN 107.6 -> 98.6 us)."""
    seen = tl.where((scale > 0.0) & (scale * 0.0 == 0.0), seen, float("nan"))
    tl.store(nonfinite_ptr + tl.zeros(seen.shape, tl.int32), seen, mask=seen != seen)


@triton.jit
def _quantize_tiles(
    words_ptr, pts, col_pts_ptr, seed, offset, packed_ptr, scales_ptr, col_packed_ptr, col_scales_ptr,
    n_blocks, scale_cols, unit_stride, first, end, blocks, mask, w0, w1, w2, w3,
    INPUT_KIND: tl.constexpr, STOCHASTIC: tl.constexpr, SWIZZLE: tl.constexpr, SCALE_RULE: tl.constexpr,
    HADAMARD: tl.constexpr, TILED: tl.constexpr, BLOCK_2D: tl.constexpr, COLUMNS: tl.constexpr, COL_HADAMARD: tl.constexpr,
    SIGN_MASK: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr, PATCH: tl.constexpr, PTX: tl.constexpr,
    STREAM: tl.constexpr = False, nonfinite_ptr=None, CHECK_FINITE: tl.constexpr = False, REVERSE: tl.constexpr = False,
):
    """Rowwise NVFP4 of tiles first .. first + TILES - 1 of x, the first one's words loaded
    (_first_tile); of rht(x) with HADAMARD; 16x16-tile scales with BLOCK_2D, which needs TILED,
    the 2-D tiles of _tile_blocks) and, with COLUMNS (TILED too, the tiles numbered down), the
    columnwise NVFP4 of the tiles just read (_column_patches, from the cache): the blocks of x.T,
    RHT'd with COL_HADAMARD, their Philox counters from offset + n_blocks (docs/format.md §9).
    The next tile's words are loaded before the current one is quantized, so memory stays busy
    while the program computes; with STREAM, as data L2 may evict first. With CHECK_FINITE a
    program that quantized NaN or Inf (rows, or columns RHT'd), or whose scale (pts, col_pts) is
    not positive and finite, writes NaN to nonfinite_ptr."""
    inv_pts = tl.div_rn(1.0, pts)
    PAIRED: tl.constexpr = INPUT_KIND != 2  # two 16-bit elements a word
    TILE_MAX: tl.constexpr = 1 if BLOCK_2D else 0
    seen = tl.zeros([BLOCKS], tl.float32)  # NaN in a block once it held NaN or Inf (CHECK_FINITE)
    for step in tl.range(TILES, loop_unroll_factor=2):  # unrolled: the prefetched words need no copies
        if REVERSE:  # from the last tile back to the first (the tile after the last is empty)
            tile = first + TILES - 1 - step
            next_tile = tl.where(step + 1 < TILES, tile - 1, first + TILES)
        else:
            next_tile = first + step + 1
        next_blocks, next_mask = _tile_blocks(next_tile, end, first + TILES, scale_cols, BLOCKS, TILED, COLUMNS)
        n0, n1, n2, n3 = _load_tile(words_ptr, next_blocks, next_mask, PAIRED, STREAM)
        c0, c1, c2, c3 = _elements(w0, w1, w2, w3, INPUT_KIND, HADAMARD, SIGN_MASK)
        seen += _quantize_blocks(
            c0, c1, c2, c3, blocks, mask, packed_ptr, scales_ptr, scale_cols, unit_stride, pts, inv_pts, seed, offset,
            PAIRED, STOCHASTIC, SWIZZLE, SCALE_RULE, TILE_MAX, 1, BLOCKS, PTX, CHECK_FINITE,
        )
        w0, w1, w2, w3 = n0, n1, n2, n3
        blocks, mask = next_blocks, next_mask
    if CHECK_FINITE:
        _flag_nonfinite(nonfinite_ptr, seen, pts)
    if COLUMNS:
        col_pts = tl.load(col_pts_ptr)
        c0, c1, c2, c3, col_blocks, col_mask = _column_patches(
            words_ptr, first, n_blocks, scale_cols, INPUT_KIND, COL_HADAMARD, SIGN_MASK, BLOCKS, TILES, PATCH
        )
        col_seen = _quantize_blocks(
            c0, c1, c2, c3, col_blocks, col_mask, col_packed_ptr, col_scales_ptr, scale_cols, unit_stride, col_pts,
            tl.div_rn(1.0, col_pts), seed, offset + n_blocks, PAIRED, STOCHASTIC, False, 0, 2 if BLOCK_2D else 0,
            PATCH, TILES * BLOCKS, PTX, CHECK_FINITE,
        )
        if CHECK_FINITE:
            _flag_nonfinite(nonfinite_ptr, col_seen, col_pts)


@triton.jit
def _counters(seed, offset, STOCHASTIC: tl.constexpr, SEED_IN_MEMORY: tl.constexpr, OFFSET_IN_MEMORY: tl.constexpr):
    """seed and offset as values (read from device memory where they live there)."""
    if STOCHASTIC:
        seed = _scalar(seed, SEED_IN_MEMORY)
        offset = _scalar(offset, OFFSET_IN_MEMORY).to(tl.int64)
    return seed, offset


@triton.jit(do_not_specialize=["seed", "offset", "unit_stride"])
def _quantize_kernel(
    words_ptr, pts_ptr, col_pts_ptr, seed, offset, packed_ptr, scales_ptr, col_packed_ptr, col_scales_ptr, nonfinite_ptr,
    n_blocks, scale_cols, unit_stride,
    INPUT_KIND: tl.constexpr, STOCHASTIC: tl.constexpr, SEED_IN_MEMORY: tl.constexpr, OFFSET_IN_MEMORY: tl.constexpr,
    SWIZZLE: tl.constexpr, SCALE_RULE: tl.constexpr, HADAMARD: tl.constexpr, TILED: tl.constexpr, BLOCK_2D: tl.constexpr,
    COLUMNS: tl.constexpr, COL_HADAMARD: tl.constexpr, SIGN_MASK: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr,
    PATCH: tl.constexpr, PTX: tl.constexpr, CHECK_FINITE: tl.constexpr,
):
    """_quantize_tiles of this program's TILES tiles, the per-tensor scale read from pts_ptr;
    with CHECK_FINITE, NaN to nonfinite_ptr where they hold NaN or Inf or a scale is not positive and finite."""
    seed, offset = _counters(seed, offset, STOCHASTIC, SEED_IN_MEMORY, OFFSET_IN_MEMORY)
    first = tl.program_id(0) * TILES
    end, blocks, mask, w0, w1, w2, w3 = _first_tile(words_ptr, n_blocks, scale_cols, first, INPUT_KIND, BLOCKS, TILES, TILED, COLUMNS)
    _quantize_tiles(
        words_ptr, tl.load(pts_ptr), col_pts_ptr, seed, offset, packed_ptr, scales_ptr, col_packed_ptr,
        col_scales_ptr, n_blocks, scale_cols, unit_stride, first, end, blocks, mask, w0, w1, w2, w3,
        INPUT_KIND, STOCHASTIC, SWIZZLE, SCALE_RULE, HADAMARD, TILED, BLOCK_2D, COLUMNS, COL_HADAMARD, SIGN_MASK, BLOCKS,
        TILES, PATCH, PTX, False, nonfinite_ptr, CHECK_FINITE,
    )


@triton.jit
def _chunk_amax_bits(
    words_ptr, chunk, n_chunks, n_blocks, n_words, INPUT_KIND: tl.constexpr, HADAMARD: tl.constexpr,
    SIGN_MASK: tl.constexpr, BLOCKS: tl.constexpr, CHUNK_TILES: tl.constexpr, KEPT_STEPS: tl.constexpr,
):
    """max |.| bits of chunk `chunk` of x, CHUNK_TILES tiles of BLOCKS blocks: the magnitude bits
    of x's elements (int32; see _word_magnitudes), or with HADAMARD the float32 bits of rht(x)'s.
    Step s reads tile s * n_chunks + chunk: the chunks sweep x together, front to back (see
    _amax_partial_kernel). Without HADAMARD two tiles are in flight, a tile of words loaded in two
    halves so that the two tiles and the running maxima stay within the quantize branch's
    registers, and the last KEPT_STEPS (< 2 CHUNK_TILES) half-tile steps, x's end, which the
    quantize programs read first, load with evict_last; with HADAMARD a step loads and transforms
    a whole tile, with the default cache policy."""
    PAIRED: tl.constexpr = INPUT_KIND != 2
    if HADAMARD:
        best = tl.zeros((), tl.int32)
        for step in tl.range(CHUNK_TILES, num_stages=1):
            blocks, mask = _tile_blocks(step * n_chunks + chunk, n_blocks, 0, 1, BLOCKS, False, False)
            w0, w1, w2, w3 = _load_tile(words_ptr, blocks, mask, PAIRED)
            best = tl.maximum(best, tl.max(_words_abs_max_bits(w0, w1, w2, w3, INPUT_KIND, True, SIGN_MASK), axis=0))
    else:
        WORDS: tl.constexpr = BLOCKS * (4 if PAIRED else 8)  # half a tile
        # step s reads half-tiles s // 2 * 2 n_chunks + 2 chunk and the next one
        best = _sweep_max(words_ptr, 2 * chunk, 2 * n_chunks, n_words, 2 * CHUNK_TILES, KEPT_STEPS, PAIRED, WORDS, 2)
    return best


# The one-launch amax+quantize's int32 state, each word on its own 128-byte line: thousands of
# programs add to TICKETS while the waiting ones poll CHUNKS_DONE. Neither is ever reset: each
# launch gets the counts of the launches before it on its stream (_LaunchCounters), so no program
# waits for an atomic's answer as it ends. Launches alternate between two amax words.
TICKETS, CHUNKS_DONE, AMAX_BITS = (tl.constexpr(32 * i) for i in range(3))
STATE_WORDS = 4 * 32


@triton.jit
def _pause(PTX: tl.constexpr):
    """Sleep about a tenth of a microsecond on the GPU (a waiting program's poll, spaced out so
    that it leaves the memory system to the amax programs); nothing in the interpreter."""
    if PTX:
        tl.inline_asm_elementwise("nanosleep.u32 128; mov.u32 $0, 0;", "=r,r", [tl.full([], 0, tl.int32)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _fence_system(PTX: tl.constexpr):
    """Make this thread's earlier stores visible to the host (__threadfence_system)."""
    if PTX:
        tl.inline_asm_elementwise("fence.sc.sys; mov.u32 $0, 0;", "=r,r", [tl.full([], 0, tl.int32)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _chunk_done(state_ptr, amax_word, chunk_amax):
    """An amax chunk's max bits into amax word amax_word, then CHUNKS_DONE counts the chunk
    (released after the max, for the programs that read it)."""
    tl.atomic_max(state_ptr + amax_word, chunk_amax, sem="relaxed")
    tl.atomic_add(state_ptr + CHUNKS_DONE, 1, sem="release")


@triton.jit
def _quantize_once_amax_known(
    words_ptr, pts_ptr, amax_ptr, host_amax_ptr, state_ptr, chunks_before, amax_word, n_chunks, job, seed, offset,
    packed_ptr, scales_ptr, n_blocks, scale_cols, unit_stride, first, end, blocks, mask, w0, w1, w2, w3,
    AMAX_KIND: tl.constexpr, INPUT_KIND: tl.constexpr, STOCHASTIC: tl.constexpr, SCALE_RULE: tl.constexpr,
    HADAMARD: tl.constexpr, BLOCK_2D: tl.constexpr, SIGN_MASK: tl.constexpr, BLOCKS: tl.constexpr, TILES: tl.constexpr,
    STREAM_QUANTIZE: tl.constexpr, NOTIFY_HOST: tl.constexpr, PTX: tl.constexpr, REVERSE: tl.constexpr = False,
):
    """A quantize program of _amax_quantize_kernel, its first tile's words loaded: wait for the
    n_chunks amax chunks (CHUNKS_DONE), take the amax (its bits in AMAX_KIND's encoding) and the
    per-tensor scale, and quantize tiles first .. first + TILES - 1. Job 0 also zeroes the other
    amax word for the next launch on this stream, writes pts and amax (float32 0-d) and, with
    NOTIFY_HOST, the amax bits to host_amax_ptr (page-locked host memory), so that the host can
    check them while the quantize programs still run."""
    while tl.load(state_ptr + CHUNKS_DONE, volatile=True) - chunks_before < n_chunks:
        _pause(PTX)
    amax = _magnitude_to_float(tl.atomic_max(state_ptr + amax_word, 0, sem="acquire"), AMAX_KIND)
    pts = tl.maximum(tl.div_rn(amax, PTS_DIVISOR_F32), PTS_FLOOR_F32, propagate_nan=tl.PropagateNan.ALL)
    if job == 0:
        tl.store(state_ptr + (2 * AMAX_BITS + 32 - amax_word), 0)  # the other amax word, for the next launch
        tl.store(pts_ptr, pts)
        tl.store(amax_ptr, amax)
        if NOTIFY_HOST:
            tl.store(host_amax_ptr, amax.to(tl.int32, bitcast=True))
            _fence_system(PTX)  # push the store to the host now, not at the kernel's end
    _quantize_tiles(
        words_ptr, pts, pts_ptr, seed, offset, packed_ptr, scales_ptr, packed_ptr, scales_ptr,
        n_blocks, scale_cols, unit_stride, first, end, blocks, mask, w0, w1, w2, w3,
        INPUT_KIND, STOCHASTIC, False, SCALE_RULE, HADAMARD, BLOCK_2D, BLOCK_2D, False, False, SIGN_MASK, BLOCKS,
        TILES, 1, PTX, STREAM_QUANTIZE, REVERSE=REVERSE,
    )


@triton.jit(do_not_specialize=["seed", "offset", "unit_stride", "tickets_before", "chunks_before", "amax_word"])
def _amax_quantize_kernel(
    words_ptr, pts_ptr, amax_ptr, host_amax_ptr, state_ptr, tickets_before, chunks_before, amax_word, seed, offset,
    packed_ptr, scales_ptr, n_blocks, scale_cols, unit_stride, n_words, n_chunks, n_programs,
    INPUT_KIND: tl.constexpr, STOCHASTIC: tl.constexpr, SEED_IN_MEMORY: tl.constexpr, OFFSET_IN_MEMORY: tl.constexpr,
    SCALE_RULE: tl.constexpr, HADAMARD: tl.constexpr, BLOCK_2D: tl.constexpr, SIGN_MASK: tl.constexpr,
    BLOCKS: tl.constexpr, TILES: tl.constexpr, CHUNK_TILES: tl.constexpr, KEPT_STEPS: tl.constexpr,
    STREAM_QUANTIZE: tl.constexpr, NOTIFY_HOST: tl.constexpr, RESIDENT: tl.constexpr, PTX: tl.constexpr,
):
    """amax, the per-tensor scale (docs/format.md §2) and quantize in one launch: n_chunks
    programs reduce x's chunks into one amax, the other n_programs - n_chunks quantize with the
    scale it gives. Each program takes the next ticket (TICKETS) as it starts, so every amax
    chunk belongs to a program that already runs and never waits: a quantize program waits
    (CHUNKS_DONE) only for running programs, whatever the GPU schedules or keeps
    resident, and in the interpreter's one-at-a-time order the chunks come first. The quantize
    programs take tiles from x's end, which the last amax chunks left in L2. The counters run on
    from launch to launch: tickets_before and chunks_before are their values as this launch
    starts (int32 arithmetic wraps, so differences stay exact); the amax bits gather in word
    amax_word (AMAX_BITS or the line after it).
    RESIDENT (a cooperative launch, every program resident at once; n_chunks == n_programs, no
    tickets): each program reduces its own TILES tiles, then quantizes them backwards, the last
    from registers (with one tile a program x is read once), the others read again."""
    seed, offset = _counters(seed, offset, STOCHASTIC, SEED_IN_MEMORY, OFFSET_IN_MEMORY)
    if RESIDENT:
        job = tl.program_id(0)
        first = job * TILES
        end, blocks, mask, w0, w1, w2, w3 = _first_tile(words_ptr, n_blocks, scale_cols, first, INPUT_KIND, BLOCKS, TILES, BLOCK_2D, False)
        # Pass 1 reads the tiles in order, each loaded before the one before it is reduced (two in
        # flight) and kept in L2 for pass 2, which quantizes backwards from the last, in registers.
        best = tl.zeros((), tl.int32)
        for step in tl.range(1, TILES, loop_unroll_factor=2):
            next_blocks, next_mask = _tile_blocks(first + step, end, first + TILES, scale_cols, BLOCKS, BLOCK_2D, False)
            n0, n1, n2, n3 = _load_tile(words_ptr, next_blocks, next_mask, INPUT_KIND != 2, KEEP=True)
            best = tl.maximum(best, tl.max(_words_abs_max_bits(w0, w1, w2, w3, INPUT_KIND, HADAMARD, SIGN_MASK), axis=0))
            w0, w1, w2, w3 = n0, n1, n2, n3
        last_max = tl.max(_words_abs_max_bits(w0, w1, w2, w3, INPUT_KIND, HADAMARD, SIGN_MASK), axis=0)
        _chunk_done(state_ptr, amax_word, tl.maximum(best, last_max))
        blocks, mask = _tile_blocks(first + TILES - 1, end, first + TILES, scale_cols, BLOCKS, BLOCK_2D, False)
        _quantize_once_amax_known(
            words_ptr, pts_ptr, amax_ptr, host_amax_ptr, state_ptr, chunks_before, amax_word, n_chunks, job, seed, offset,
            packed_ptr, scales_ptr, n_blocks, scale_cols, unit_stride, first, end, blocks, mask, w0, w1, w2, w3,
            2, INPUT_KIND, STOCHASTIC, SCALE_RULE, HADAMARD, BLOCK_2D, SIGN_MASK, BLOCKS, TILES, STREAM_QUANTIZE, NOTIFY_HOST, PTX,
            REVERSE=True,
        )
    else:
        ticket = tl.atomic_add(state_ptr + TICKETS, 1, sem="relaxed") - tickets_before
        if ticket < n_chunks:
            chunk_amax = _chunk_amax_bits(
                words_ptr, ticket, n_chunks, n_blocks, n_words, INPUT_KIND, HADAMARD, SIGN_MASK, BLOCKS, CHUNK_TILES, KEPT_STEPS
            )
            _chunk_done(state_ptr, amax_word, chunk_amax)
        else:
            job = ticket - n_chunks
            first = (n_programs - n_chunks - 1 - job) * TILES
            # The first tile's words do not depend on the amax: they load while the program waits.
            end, blocks, mask, w0, w1, w2, w3 = _first_tile(
                words_ptr, n_blocks, scale_cols, first, INPUT_KIND, BLOCKS, TILES, BLOCK_2D, False, STREAM_QUANTIZE
            )
            _quantize_once_amax_known(
                words_ptr, pts_ptr, amax_ptr, host_amax_ptr, state_ptr, chunks_before, amax_word, n_chunks, job, seed, offset,
                packed_ptr, scales_ptr, n_blocks, scale_cols, unit_stride, first, end, blocks, mask, w0, w1, w2, w3,
                2 if HADAMARD else INPUT_KIND, INPUT_KIND, STOCHASTIC, SCALE_RULE, HADAMARD, BLOCK_2D, SIGN_MASK, BLOCKS, TILES,
                STREAM_QUANTIZE, NOTIFY_HOST, PTX,
            )


@triton.jit
def _amax_blocks_kernel(
    words_ptr, partial_ptr, col_partial_ptr, n_blocks, scale_cols,
    INPUT_KIND: tl.constexpr, HADAMARD: tl.constexpr, COL_HADAMARD: tl.constexpr, SIGN_MASK: tl.constexpr,
    BLOCKS: tl.constexpr, TILES: tl.constexpr, PATCH: tl.constexpr,
):
    """Per program, max |.| bits of its TILES tiles' blocks, RHT'd with HADAMARD (1-D tiles) and,
    with COL_HADAMARD (2-D tiles down a tile column, as quantize_rowcol's), of their RHT'd column
    blocks (_column_patches) too: quantize_rowcol's two per-tensor scales from one read."""
    first = tl.program_id(0) * TILES
    program = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
    best = tl.zeros([BLOCKS], tl.int32)  # each thread's running max, reduced across threads once
    for step in tl.range(TILES):
        blocks, mask = _tile_blocks(first + step, n_blocks, first + TILES, scale_cols, BLOCKS, COL_HADAMARD, COL_HADAMARD)
        w0, w1, w2, w3 = _load_tile(words_ptr, blocks, mask, INPUT_KIND != 2)
        best = tl.maximum(best, _words_abs_max_bits(w0, w1, w2, w3, INPUT_KIND, HADAMARD, SIGN_MASK))
    tl.store(partial_ptr + program, tl.max(best, axis=0))
    if COL_HADAMARD:  # patches outside x read zeros, whose transform is zero
        c0, c1, c2, c3, _, _ = _column_patches(words_ptr, first, n_blocks, scale_cols, INPUT_KIND, True, SIGN_MASK, BLOCKS, TILES, PATCH)
        tl.store(col_partial_ptr + program, tl.max(_chunks_abs_max_bits(c0, c1, c2, c3), axis=0))


@triton.jit
def _rht_kernel(words_ptr, out_ptr, n_blocks, INPUT_KIND: tl.constexpr, SIGN_MASK: tl.constexpr, INVERSE: tl.constexpr, BLOCKS: tl.constexpr):
    """rht (or its inverse) of BLOCKS blocks a program, written as float32 chunks."""
    blocks, mask = _tile_blocks(tl.program_id(0), n_blocks, 0, 1, BLOCKS, False, False)
    w0, w1, w2, w3 = _load_tile(words_ptr, blocks, mask, INPUT_KIND != 2)
    c0, c1, c2, c3 = _elements(w0, w1, w2, w3, INPUT_KIND, False, 0)
    if INVERSE:  # butterfly and * 0.25 first (signs +1), then the signs
        c0, c1, c2, c3 = _rht_chunks(c0, c1, c2, c3, INPUT_KIND != 2, 0)
        if INPUT_KIND != 2:
            c0, c1 = _signed(c0, SIGN_MASK, 0, 2), _signed(c1, SIGN_MASK, 1, 2)
            c2, c3 = _signed(c2, SIGN_MASK, 8, 2), _signed(c3, SIGN_MASK, 9, 2)
        else:
            c0, c1 = _signed(c0, SIGN_MASK, 0, 1), _signed(c1, SIGN_MASK, 4, 1)
            c2, c3 = _signed(c2, SIGN_MASK, 8, 1), _signed(c3, SIGN_MASK, 12, 1)
    else:
        c0, c1, c2, c3 = _rht_chunks(c0, c1, c2, c3, INPUT_KIND != 2, SIGN_MASK)
    if INPUT_KIND != 2:  # (even, odd) of 0..7, then of 8..15: interleaved back in one thread
        low = tl.reshape(tl.join(c0, c1), [BLOCKS, 8])
        high = tl.reshape(tl.join(c2, c3), [BLOCKS, 8])
        offsets = blocks[:, None] * 16 + tl.arange(0, 8)[None, :]
        tl.store(out_ptr + offsets, low, mask=mask[:, None])
        tl.store(out_ptr + offsets + 8, high, mask=mask[:, None])
    else:
        offsets = blocks[:, None] * 16 + tl.arange(0, 4)[None, :]
        tl.store(out_ptr + offsets, c0, mask=mask[:, None])
        tl.store(out_ptr + offsets + 4, c1, mask=mask[:, None])
        tl.store(out_ptr + offsets + 8, c2, mask=mask[:, None])
        tl.store(out_ptr + offsets + 12, c3, mask=mask[:, None])


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


def _finish_amax(partials: torch.Tensor, count: int, input_kind: int) -> torch.Tensor:
    """The max of partials[:count] (magnitude bits) as float32 0-d; 0 when count is 0."""
    result = torch.empty((), dtype=torch.float32, device=partials.device)
    _amax_finish_kernel[(1,)](partials, result, count, INPUT_KIND=input_kind, ELEMENTS=AMAX_FINISH_ELEMENTS, num_warps=4)
    return result


def _sign_mask(signs) -> int:
    """Bit j set where signs[j] is -1 (the kernels' constexpr)."""
    return sum(1 << j for j, sign in enumerate(signs) if sign < 0)


_HADAMARD_MASK = _sign_mask(HADAMARD_SIGNS)


def _tiles_2d(rows: int, scale_cols: int, blocks_a_tile: int) -> int:
    """Number of 2-D tiles (16 rows x blocks_a_tile / 16 block columns) of a [rows, K] tensor."""
    return rows // BLOCK_SIZE * triton.cdiv(scale_cols, blocks_a_tile // BLOCK_SIZE)


def amax(x: torch.Tensor, *, hadamard: bool = False) -> torch.Tensor:
    """max |x| (of rht(x) with hadamard) of a contiguous x as a float32 0-d tensor (NaN if x
    holds NaN; 0 if empty)."""
    if hadamard:
        return _amax_blocks(x, hadamard=True, col_hadamard=False)[0]
    words = _words(x)
    n_partials = triton.cdiv(words.numel(), AMAX_WORDS * AMAX_TILES)
    # Every program writes its partial: no zeroing, a memset launch (H200, 8192x8192 bf16: 40.0-40.5 -> 37.7-39.2 us).
    partials = torch.empty(max(n_partials, 1), dtype=torch.int32, device=x.device)
    if n_partials:
        _amax_partial_kernel[(n_partials,)](
            words, partials, words.numel(), PAIRED=x.element_size() == 2, WORDS=AMAX_WORDS, TILES=AMAX_TILES,
            KEPT_STEPS=_kept_steps(AMAX_TILES), num_warps=AMAX_WARPS,
        )
    return _finish_amax(partials, n_partials, _INPUT_KIND[x.dtype])


def _amax_blocks(x: torch.Tensor, *, hadamard: bool, col_hadamard: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One read of x: amax of its row blocks (RHT'd with hadamard) and, with col_hadamard (2-D
    x), of its RHT'd column blocks."""
    n_blocks = x.numel() // BLOCK_SIZE
    scale_cols = x.shape[-1] // BLOCK_SIZE
    if col_hadamard:  # programs down each tile column, as quantize_rowcol's
        blocks_a_tile, warps, tiles, patch, grid = _rowcol_tiling(AMAX_ROWCOL_CONFIG, n_blocks, scale_cols)
    else:
        (blocks_a_tile, warps), tiles, patch = AMAX_BLOCKS_CONFIG, 1, 1
        grid = (triton.cdiv(n_blocks, blocks_a_tile), 1)
    n_partials = grid[0] * grid[1] if n_blocks else 0
    partials = torch.empty(2, max(n_partials, 1), dtype=torch.int32, device=x.device)  # every program writes its own
    if n_blocks:
        _amax_blocks_kernel[grid](
            _words(x), partials[0], partials[1], n_blocks, scale_cols, INPUT_KIND=_INPUT_KIND[x.dtype],
            HADAMARD=hadamard, COL_HADAMARD=col_hadamard, SIGN_MASK=_HADAMARD_MASK, BLOCKS=blocks_a_tile, TILES=tiles,
            PATCH=patch, num_warps=warps,
        )
    # The partials hold float32 bits (the chunks are float32 whatever the input): finish as float32.
    row_amax = _finish_amax(partials[0], n_partials, _INPUT_KIND[torch.float32])
    return row_amax, _finish_amax(partials[1], n_partials, _INPUT_KIND[torch.float32]) if col_hadamard else None


def amax_rowcol(x: torch.Tensor, *, col_hadamard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(amax(x), amax of the columnwise input x.T, or of rht(x.T) with col_hadamard): one pass."""
    if not col_hadamard:
        row_amax = amax(x)
        return row_amax, row_amax
    row_amax, col_amax = _amax_blocks(x, hadamard=False, col_hadamard=True)
    return row_amax, col_amax


def rht(x: torch.Tensor, *, signs: tuple[int, ...] = HADAMARD_SIGNS, inverse: bool = False) -> torch.Tensor:
    """The 16-point RHT along the last dim (docs/format.md §9) as float32, x's shape."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    n_blocks = x.numel() // BLOCK_SIZE
    if n_blocks:
        _rht_kernel[(triton.cdiv(n_blocks, RHT_BLOCKS),)](
            _words(x), out, n_blocks, INPUT_KIND=_INPUT_KIND[x.dtype], SIGN_MASK=_sign_mask(signs), INVERSE=inverse,
            BLOCKS=RHT_BLOCKS, num_warps=4,
        )
    return out


def _swizzled_size(rows: int, cols: int) -> int:
    padded_rows, padded_cols = swizzled_shape(rows, cols)
    return padded_rows * padded_cols


def _compile_options(scale_rule: str, tiles: tuple[Mode, bool, bool] | None = None) -> dict:
    """The quantize kernels' compile options: the rules' errors must round once an operation, as
    the reference's do (no FMA contraction); max keeps Triton's default. MAX_REGISTERS, where set,
    else QUANTIZE_REGISTERS[tiles] (the quantize kernel's (mode, 2-D tiles, nonfinite flag)) caps registers."""
    options = {} if scale_rule == "max" else {"enable_fp_fusion": False}
    registers = MAX_REGISTERS if MAX_REGISTERS is not None else QUANTIZE_REGISTERS.get(tiles)
    if registers is not None:
        options["maxnreg"] = registers
    return options


def _tiling(config: tuple[int, int, int], n_blocks: int, scale_cols: int, tiled: bool) -> tuple[int, int, int, int]:
    """(blocks a tile, warps, tiles a program, number of tiles) of a quantize launch from its
    configuration: 2-D tiles (16 rows) when tiled; one tile a program below MIN_PROGRAMS * tiles."""
    blocks_a_tile, warps, tiles = config
    n_tiles = _tiles_2d(n_blocks // scale_cols, scale_cols, blocks_a_tile) if tiled else triton.cdiv(n_blocks, blocks_a_tile)
    if n_tiles < MIN_PROGRAMS * tiles:
        tiles = 1
    return blocks_a_tile, warps, tiles, n_tiles


def _rowcol_tiling(config: tuple[int, int, int, int], n_blocks: int, scale_cols: int) -> tuple[int, int, int, int, tuple[int, int]]:
    """(blocks a tile, warps, tiles a program, patch, grid) of a launch whose programs run down
    each column of 2-D tiles (_tile_place's DOWN: quantize_rowcol's and amax_rowcol's), from its
    configuration (ROWCOL_CONFIGS' shape), tiles a program as _tiling gives them."""
    blocks_a_tile, warps, tiles, patch = config
    tiles = _tiling((blocks_a_tile, warps, tiles), n_blocks, scale_cols, True)[2]
    grid = (triton.cdiv(n_blocks // scale_cols // BLOCK_SIZE, tiles), triton.cdiv(scale_cols, blocks_a_tile // BLOCK_SIZE))
    return blocks_a_tile, warps, tiles, patch, grid


def _nvfp4_views(shape, packed: torch.Tensor, scales: torch.Tensor, swizzle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' int64 packed codes and scale bytes of a tensor of `shape` [..., K] as uint8
    [..., K/2] and e4m3 [..., K/16] (flat with swizzle)."""
    *rows, k = shape
    scales = scales.view(torch.float8_e4m3fn)
    return packed.view(torch.uint8).reshape(*rows, k // 2), scales if swizzle else scales.reshape(*rows, k // BLOCK_SIZE)


def _launch_quantize(
    x: torch.Tensor, pts: torch.Tensor, col_pts: torch.Tensor | None, mode: Mode, seed, offset, *, swizzle: bool = False,
    scale_rule: str = "max", hadamard: bool = False, block_2d: bool = False, columns: bool = False, col_hadamard: bool = False,
    nonfinite: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Launch the quantize kernel; (packed int64 a block, scale bytes) [, the same of x.T]; NaN
    into nonfinite (float32 [1], on x's device or page-locked on the host) where what it quantized
    holds NaN or Inf or a per-tensor scale is not positive and finite."""
    stochastic = Mode(mode) is Mode.RS
    n_blocks = x.numel() // BLOCK_SIZE
    scale_cols = x.shape[-1] // BLOCK_SIZE
    packed = torch.empty(n_blocks, dtype=torch.int64, device=x.device)
    if swizzle:
        size = _swizzled_size(n_blocks // scale_cols, scale_cols)
        scales = (torch.zeros if size != n_blocks else torch.empty)(size, dtype=torch.uint8, device=x.device)
    else:
        scales = torch.empty(n_blocks, dtype=torch.uint8, device=x.device)
    outputs = [packed, scales]
    if columns:
        outputs += [torch.empty_like(packed), torch.empty_like(scales)]
    pts = pts.to(device=x.device, dtype=torch.float32).reshape(())
    col_pts = pts if col_pts is None else col_pts.to(device=x.device, dtype=torch.float32).reshape(())
    tiled = block_2d or columns  # 16-row tiles
    if columns:
        blocks_a_tile, warps, tiles, patch, grid = _rowcol_tiling(ROWCOL_CONFIGS[Mode(mode)], n_blocks, scale_cols)
    else:
        blocks_a_tile, warps, tiles, n_tiles = _tiling(QUANTIZE_CONFIGS[(Mode(mode), block_2d)], n_blocks, scale_cols, block_2d)
        patch, grid = 1, (triton.cdiv(n_tiles, tiles),)
    options = _compile_options(scale_rule, None if columns else (Mode(mode), block_2d, nonfinite is not None))
    if n_blocks:
        _quantize_kernel[grid](
            _words(x), pts, col_pts, 0 if seed is None else seed, offset, *outputs[:2],
            *(outputs[2:] if columns else outputs[:2]), pts if nonfinite is None else nonfinite, n_blocks, scale_cols, 1,
            INPUT_KIND=_INPUT_KIND[x.dtype],
            STOCHASTIC=stochastic,
            SEED_IN_MEMORY=isinstance(seed, torch.Tensor),
            OFFSET_IN_MEMORY=isinstance(offset, torch.Tensor),
            SWIZZLE=swizzle,
            SCALE_RULE=_SCALE_RULE_KIND[scale_rule],
            HADAMARD=hadamard,
            TILED=tiled,
            BLOCK_2D=block_2d,
            COLUMNS=columns,
            COL_HADAMARD=col_hadamard,
            SIGN_MASK=_HADAMARD_MASK,
            BLOCKS=blocks_a_tile,
            TILES=tiles,
            PATCH=patch,
            PTX=_PTX,
            CHECK_FINITE=nonfinite is not None,
            num_warps=warps,
            **options,
        )
    return tuple(outputs)


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
    swizzle: bool = False,
    nonfinite: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes uint8 [..., K/2] and E4M3 scales of a contiguous x: row-major [..., K/16], or
    with swizzle the flat GEMM layout of docs/format.md §6 (rows = all leading dims).

    scale_rule (one of SCALE_RULES) chooses the block scales; element rounding is the same for all.
    hadamard quantizes rht(x), transformed in registers; block_2d (2-D x, rows a multiple of 16)
    scales each block by its 16x16 tile's amax. nonfinite: see Backend.quantize (in the same
    pass: block maxima that keep NaN, and a masked store)."""
    packed, scales = _launch_quantize(
        x, per_tensor_scale, None, mode, seed, offset, swizzle=swizzle, scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d,
        nonfinite=nonfinite,
    )
    return _nvfp4_views(x.shape, packed, scales, swizzle)


class _LaunchCounters:
    """A one-launch amax+quantize state (int32[STATE_WORDS] on the device, zeroed once) and what
    the launches before this one added to its counters: tickets (programs), chunks, launches."""

    def __init__(self, device: torch.device):
        self.state = torch.zeros(STATE_WORDS, dtype=torch.int32, device=device)
        self.tickets = self.chunks = self.launches = 0

    def next_launch(self) -> tuple[int, int, int]:
        """(tickets_before, chunks_before, amax_word) of the next launch."""
        return _as_int32(self.tickets), _as_int32(self.chunks), AMAX_BITS.value + 32 * (self.launches % 2)

    def launched(self, tickets: int, n_chunks: int) -> None:
        """Count a launch once it is queued (a launch that raised counts nothing on the device either)."""
        self.tickets, self.chunks, self.launches = self.tickets + tickets, self.chunks + n_chunks, self.launches + 1


def _as_int32(count: int) -> int:
    """count mod 2^32 as a signed int32 (the kernel's counters wrap)."""
    return (count + 2**31) % 2**32 - 2**31


class _AmaxQuantizeState(threading.local):
    """The _LaunchCounters of _amax_quantize_kernel launches, one per device and stream (launches on
    one stream run one after another, each taking up where the one before left off), kept per
    thread so that threads on one stream never share one."""

    def __init__(self):
        self.states: dict[tuple[torch.device, int], _LaunchCounters] = {}

    def get(self, device: torch.device) -> _LaunchCounters:
        if device.type != "cuda":  # the interpreter: a fresh one costs nothing there
            return _LaunchCounters(device)
        key = (device, torch.cuda.current_stream(device).cuda_stream)
        if key not in self.states:
            self.states[key] = _LaunchCounters(device)
        return self.states[key]


_amax_quantize_state = _AmaxQuantizeState()


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    """The device's SMs; the interpreter, which runs one program at a time, counts as one."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _programs_a_wave(device: torch.device) -> int:
    """Programs that keep every multiprocessor busy (one wave, two programs an SM); 4 in the interpreter."""
    return 2 * _multiprocessors(device) if device.type == "cuda" else 4


def _resident_tiling(x: torch.Tensor, block_2d: bool) -> tuple[int, int, int, int] | None:
    """The resident one-launch amax+quantize's (blocks a tile, warps, tiles a program, number of
    tiles) for x: one tile a program where RESIDENT_CONFIGS has one with no more tiles than the
    device has SMs, else for 16-bit elements up to RESIDENT_MAX_TILES of RESIDENT_TILES_CONFIG's
    a program, one program an SM; None for a larger x."""
    if not RESIDENT_LAUNCH:
        return None
    n_blocks, scale_cols = x.numel() // BLOCK_SIZE, x.shape[-1] // BLOCK_SIZE
    for blocks_a_tile, warps in RESIDENT_CONFIGS:
        tiling = _tiling((blocks_a_tile, warps, 1), n_blocks, scale_cols, block_2d)
        if tiling[3] <= _multiprocessors(x.device):
            return tiling
    blocks_a_tile, warps, _, n_tiles = _tiling((*RESIDENT_TILES_CONFIG, 1), n_blocks, scale_cols, block_2d)
    tiles = triton.cdiv(n_tiles, _multiprocessors(x.device))
    several = x.element_size() == 2 and tiles <= RESIDENT_MAX_TILES
    return (blocks_a_tile, warps, tiles, n_tiles) if several else None


def _chunk_tiles(n_tiles: int, device: torch.device) -> int:
    """Tiles an amax program reduces: up to AMAX_CHUNK_TILES, fewer where that leaves SMs idle,
    but 2 at least (one tile a program made small inputs slower: 9.33 against 8.62 us on 1024x1024, H200)."""
    tiles = AMAX_CHUNK_TILES
    while tiles > 2 and n_tiles < tiles * _programs_a_wave(device):
        tiles //= 2
    return tiles


def _kept_steps(steps: int) -> int:
    """Of an amax program's steps, the last ones loaded with evict_last (never the first)."""
    return min(int(AMAX_KEPT_FRACTION * steps), steps - 1)


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
    scales, per_tensor_scale, amax), amax, scale and quantize in one launch (_amax_quantize_kernel)
    but where a CUDA graph is being captured (the launch counts in a per-stream state).
    host_amax (int32 [1], page-locked) receives amax's float32 bits once the amax is known."""
    n_blocks = x.numel() // BLOCK_SIZE
    capturing = x.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if n_blocks == 0 or capturing:
        return quantize_amax_in_steps(
            amax, quantize, x, mode=mode, seed=seed, offset=offset, scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d, host_amax=host_amax
        )
    scale_cols = x.shape[-1] // BLOCK_SIZE
    resident = _resident_tiling(x, block_2d)
    if resident is not None:
        blocks_a_tile, warps, tiles, n_tiles = resident
        chunk_tiles, tickets = 1, 0
        n_chunks = n_programs = triton.cdiv(n_tiles, tiles)
    else:
        blocks_a_tile, warps, tiles, n_tiles = _tiling(AMAX_QUANTIZE_CONFIGS[(Mode(mode), block_2d)], n_blocks, scale_cols, block_2d)
        amax_tiles = triton.cdiv(n_blocks, blocks_a_tile)
        chunk_tiles = _chunk_tiles(amax_tiles, x.device)
        n_chunks = triton.cdiv(amax_tiles, chunk_tiles)  # the last step's window may run past x's end
        n_programs = tickets = n_chunks + triton.cdiv(n_tiles, tiles)
    packed = torch.empty(n_blocks, dtype=torch.int64, device=x.device)
    scales = torch.empty(n_blocks, dtype=torch.uint8, device=x.device)
    pts = torch.empty((), dtype=torch.float32, device=x.device)
    amax_value = torch.empty((), dtype=torch.float32, device=x.device)
    words = _words(x)
    counters = _amax_quantize_state.get(x.device)
    _amax_quantize_kernel[(n_programs,)](
        words, pts, amax_value, amax_value if host_amax is None else host_amax, counters.state,
        *counters.next_launch(), 0 if seed is None else seed, offset,
        packed, scales, n_blocks, scale_cols, 1, words.numel(), n_chunks, n_programs,
        INPUT_KIND=_INPUT_KIND[x.dtype], STOCHASTIC=Mode(mode) is Mode.RS, SEED_IN_MEMORY=isinstance(seed, torch.Tensor),
        OFFSET_IN_MEMORY=isinstance(offset, torch.Tensor), SCALE_RULE=_SCALE_RULE_KIND[scale_rule], HADAMARD=hadamard,
        BLOCK_2D=block_2d, SIGN_MASK=_HADAMARD_MASK, BLOCKS=blocks_a_tile, TILES=tiles, CHUNK_TILES=chunk_tiles,
        KEPT_STEPS=_kept_steps(2 * chunk_tiles), STREAM_QUANTIZE=AMAX_STREAM_QUANTIZE, NOTIFY_HOST=host_amax is not None,
        RESIDENT=resident is not None, PTX=_PTX, num_warps=warps, launch_cooperative_grid=resident is not None,
        **_compile_options(scale_rule),
    )
    counters.launched(tickets, n_chunks)
    return *_nvfp4_views(x.shape, packed, scales), pts, amax_value


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
    """quantize(x) and quantize(x.T, offset + numel / 16, hadamard=col_hadamard), both with
    block_2d, from one read of each 16-row tile of x [M, K] (M and K multiples of 16);
    nonfinite: see Backend.quantize_rowcol."""
    m, k = x.shape
    packed, scales, col_packed, col_scales = _launch_quantize(
        x, per_tensor_scale, col_per_tensor_scale, mode, seed, offset, block_2d=block_2d, columns=True, col_hadamard=col_hadamard,
        nonfinite=nonfinite,
    )
    return (*_nvfp4_views((m, k), packed, scales), *_nvfp4_views((k, m), col_packed, col_scales))


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
def amax_op(x: torch.Tensor, hadamard: bool = False) -> torch.Tensor:
    """max |x| (of rht(x) with hadamard) of a bf16/fp16/fp32 tensor as float32 0-d (NaN if x holds NaN)."""
    _check_op_input(x)
    return amax(x.contiguous(), hadamard=hadamard)


@amax_op.register_fake
def _(x: torch.Tensor, hadamard: bool = False) -> torch.Tensor:
    return x.new_empty((), dtype=torch.float32)


def _check_rowcol_input(x: torch.Tensor) -> None:
    _check_op_input(x)
    if x.dim() != 2 or x.shape[0] % BLOCK_SIZE:
        raise ValueError(f"nvfp4 rowcol ops take a 2-D tensor whose dims are multiples of {BLOCK_SIZE}, got shape {tuple(x.shape)}")


@torch.library.custom_op("nvfp4::amax_rowcol", mutates_args=())
def amax_rowcol_op(x: torch.Tensor, col_hadamard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(amax(x), amax(rht(x.T)) with col_hadamard else amax(x)) as float32 0-d tensors, one read of x."""
    _check_rowcol_input(x)
    row_amax, col_amax = amax_rowcol(x.contiguous(), col_hadamard=col_hadamard)
    return row_amax, col_amax if col_hadamard else col_amax.clone()  # an op's outputs may not alias


@amax_rowcol_op.register_fake
def _(x, col_hadamard=False):
    return x.new_empty((), dtype=torch.float32), x.new_empty((), dtype=torch.float32)


@torch.library.custom_op("nvfp4::rht", mutates_args=())
def rht_op(x: torch.Tensor, inverse: bool = False, signs: list[int] | None = None) -> torch.Tensor:
    """The 16-point RHT of docs/format.md §9 along the last dim, float32 (signs: 16 values +-1, default TransformerEngine's)."""
    _check_op_input(x)
    signs = HADAMARD_SIGNS if signs is None else tuple(signs)
    if len(signs) != BLOCK_SIZE or any(sign not in (1, -1) for sign in signs):
        raise ValueError(f"nvfp4::rht: signs must be {BLOCK_SIZE} values, each 1 or -1, got {list(signs)}")
    return rht(x.contiguous(), signs=signs, inverse=inverse)


@rht_op.register_fake
def _(x, inverse=False, signs=None):
    return x.new_empty(x.shape, dtype=torch.float32)


@torch.library.custom_op("nvfp4::quantize", mutates_args=())
def quantize_op(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    stochastic: bool,
    seed: torch.Tensor | None,
    offset: torch.Tensor | None,
    swizzle: bool = False,
    scale_rule: str = "max",
    hadamard: bool = False,
    block_2d: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4 (packed uint8 [..., K/2], e4m3 scales [..., K/16] or flat swizzled) of x (of rht(x)
    with hadamard; 16x16-tile scales with block_2d).

    seed and offset: 0-d int64 tensors on x's device (read in the kernel, so a CUDA graph replays
    with their current values); seed is needed when stochastic, offset None means 0.
    scale_rule: one of SCALE_RULES (docs/format.md §4)."""
    _check_op_input(x)
    if stochastic and seed is None:
        raise ValueError("nvfp4::quantize with stochastic=True needs a seed tensor")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"nvfp4::quantize: scale_rule must be one of {', '.join(SCALE_RULES)}, got {scale_rule!r}")
    if block_2d:
        _check_rowcol_input(x)
    mode = Mode.RS if stochastic else Mode.RN
    return quantize(
        x.contiguous(), per_tensor_scale=per_tensor_scale, mode=mode, seed=seed, offset=0 if offset is None else offset,
        swizzle=swizzle, scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d,
    )


@quantize_op.register_fake
def _(x, per_tensor_scale, stochastic, seed, offset, swizzle=False, scale_rule="max", hadamard=False, block_2d=False):
    k = x.shape[-1]
    packed = x.new_empty((*x.shape[:-1], k // 2), dtype=torch.uint8)
    if swizzle:
        scale_cols = k // BLOCK_SIZE
        scales = x.new_empty(_swizzled_size(x.numel() // k, scale_cols), dtype=torch.float8_e4m3fn)
    else:
        scales = x.new_empty((*x.shape[:-1], k // BLOCK_SIZE), dtype=torch.float8_e4m3fn)
    return packed, scales


@torch.library.custom_op("nvfp4::quantize_rowcol", mutates_args=())
def quantize_rowcol_op(
    x: torch.Tensor,
    per_tensor_scale: torch.Tensor,
    col_per_tensor_scale: torch.Tensor,
    stochastic: bool,
    seed: torch.Tensor | None,
    offset: torch.Tensor | None,
    block_2d: bool = False,
    col_hadamard: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed, scales) of x and of x.T (RHT'd with col_hadamard; Philox counters from offset +
    numel / 16), from one pass over x [M, K]. seed, offset: 0-d int64 device tensors, as quantize."""
    _check_rowcol_input(x)
    if stochastic and seed is None:
        raise ValueError("nvfp4::quantize_rowcol with stochastic=True needs a seed tensor")
    return quantize_rowcol(
        x.contiguous(), per_tensor_scale=per_tensor_scale, col_per_tensor_scale=col_per_tensor_scale,
        mode=Mode.RS if stochastic else Mode.RN, seed=seed, offset=0 if offset is None else offset,
        block_2d=block_2d, col_hadamard=col_hadamard,
    )


@quantize_rowcol_op.register_fake
def _(x, per_tensor_scale, col_per_tensor_scale, stochastic, seed, offset, block_2d=False, col_hadamard=False):
    m, k = x.shape
    return (
        x.new_empty((m, k // 2), dtype=torch.uint8),
        x.new_empty((m, k // BLOCK_SIZE), dtype=torch.float8_e4m3fn),
        x.new_empty((k, m // 2), dtype=torch.uint8),
        x.new_empty((k, m // BLOCK_SIZE), dtype=torch.float8_e4m3fn),
    )
