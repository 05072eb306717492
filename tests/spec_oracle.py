"""A second, deliberately naive implementation of docs/format.md §2-§3: scalar numpy float32 arithmetic,
Philox in Python integers, E4M3 rounding by bit operations and E2M1 rounding by nearest-grid search.
It shares no code with nvfp4cli, so agreement between the two is evidence, not a tautology."""

from __future__ import annotations

import numpy as np

GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
M32 = 0xFFFFFFFF


def philox_randint4x(seed: int, counter: int) -> tuple[int, int, int, int]:
    """Philox4x32-10 as Triton's tl.randint4x(seed, offset) for a 64-bit offset."""
    c0, c1, c2, c3 = counter & M32, (counter >> 32) & M32, 0, 0
    k0, k1 = seed & M32, (seed >> 32) & M32
    for _ in range(10):
        p_b = 0xCD9E8D57 * c2
        p_a = 0xD2511F53 * c0
        c0, c1, c2, c3 = ((p_b >> 32) ^ c1 ^ k0) & M32, p_b & M32, ((p_a >> 32) ^ c3 ^ k1) & M32, p_a & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def e4m3_round(value: np.float32) -> np.float32:
    """RNE of a float32 normal in [2^-6, 448] to E4M3, via its bits (docs/format.md §11)."""
    bits = int(np.array(value, dtype=np.float32).view(np.uint32))
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & 0xFFF00000
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


def e4m3_byte(value: np.float32) -> int:
    bits = int(np.array(value, dtype=np.float32).view(np.uint32))
    return (((bits >> 23) - 120) << 3) | ((bits >> 20) & 7)


def e2m1_nearest(a: float) -> int:
    """Code of the grid value nearest to a; on a tie the even code."""
    best = min(range(8), key=lambda c: (abs(GRID[c] - a), c % 2))
    return best


def e2m1_stochastic(a: np.float32, byte: int) -> int:
    a = np.float32(a)
    step = np.float32(0.5 if a < 2 else (1.0 if a < 4 else 2.0))
    q = np.float32(a / step)
    lo = np.float32(np.floor(q))
    frac = np.float32(q - lo)
    u = np.float32((byte + 0.5) / 256)
    m = float((lo + (1 if frac > u else 0)) * step)
    return GRID.index(m)


def quantize(x: np.ndarray, mode: str = "rn", seed: int = 0, offset: int = 0, pts: float | None = None):
    """Returns (codes uint8 [N, K], scale bytes uint8 [N, K/16], pts float32) for a 2-D float32 x."""
    x = np.asarray(x, dtype=np.float32)
    rows, k = x.shape
    if pts is None:
        amax = np.float32(np.max(np.abs(x)))
        pts = max(np.float32(amax / np.float32(2688.0)), np.float32(2.0**-120))
    block_amax = np.zeros((rows, k // 16), dtype=np.float32)
    for r in range(rows):
        for b in range(k // 16):
            block_amax[r, b] = np.max(np.abs(x[r, 16 * b : 16 * b + 16]))
    return _quantize_with_block_amax(x, block_amax, mode, seed, offset, np.float32(pts))


# ---------------------------------------------------------------- docs/format.md §9, one scalar at a time

TE_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)  # TransformerEngine's RHT signs


def rht_block(block, signs=TE_SIGNS, inverse: bool = False) -> list:
    """One 16-element block: signs, the butterfly h = 1, 2, 4, 8 (pairs (i, i + h) of each 2h-group),
    * 0.25, each step one float32 rounding; inverse: butterfly, * 0.25, then signs."""
    v = [np.float32(value) for value in block]
    if not inverse:
        v = [np.float32(value * np.float32(sign)) for value, sign in zip(v, signs)]
    for h in (1, 2, 4, 8):
        for start in range(0, 16, 2 * h):
            for i in range(start, start + h):
                a, b = v[i], v[i + h]
                v[i], v[i + h] = np.float32(a + b), np.float32(a - b)
    v = [np.float32(value * np.float32(0.25)) for value in v]
    if inverse:
        v = [np.float32(value * np.float32(sign)) for value, sign in zip(v, signs)]
    return v


def rht(x: np.ndarray, signs=TE_SIGNS, inverse: bool = False) -> np.ndarray:
    """rht_block over every 16-element block along the last dim of a float32 array."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    flat_in, flat_out = x.reshape(-1, 16), out.reshape(-1, 16)
    for i in range(flat_in.shape[0]):
        flat_out[i] = rht_block(flat_in[i], signs, inverse)
    return out


def tile_amax(x: np.ndarray) -> np.ndarray:
    """[M, K] -> [M, K/16]: each block's 16x16 tile amax (16 rows x 16 columns), by loops."""
    rows, k = x.shape
    out = np.zeros((rows, k // 16), dtype=np.float32)
    for tile_row in range(0, rows, 16):
        for b in range(k // 16):
            amax = np.float32(0.0)
            for r in range(tile_row, tile_row + 16):
                for j in range(16 * b, 16 * b + 16):
                    amax = max(amax, np.float32(abs(x[r, j])))
            out[tile_row : tile_row + 16, b] = amax
    return out


def quantize_2d(x: np.ndarray, mode: str = "rn", seed: int = 0, offset: int = 0, pts: float | None = None):
    """quantize() with each block's scale from its 16x16 tile's amax (docs/format.md §9)."""
    x = np.asarray(x, dtype=np.float32)
    if pts is None:
        pts = max(np.float32(np.float32(np.max(np.abs(x))) / np.float32(2688.0)), np.float32(2.0**-120))
    return _quantize_with_block_amax(x, tile_amax(x), mode, seed, offset, np.float32(pts))


def _quantize_with_block_amax(x, block_amax, mode, seed, offset, pts):
    """docs/format.md §2-§3 element by element, each block's scale from block_amax [rows, K/16]."""
    rows, k = x.shape
    codes = np.zeros((rows, k), dtype=np.uint8)
    scale_bytes = np.zeros((rows, k // 16), dtype=np.uint8)
    inv_pts = np.float32(np.float32(1.0) / pts)
    for r in range(rows):
        for b in range(k // 16):
            bs = np.float32(np.float32(block_amax[r, b] / np.float32(6.0)) / pts)
            s8 = e4m3_round(min(max(bs, np.float32(2.0**-6)), np.float32(448.0)))
            scale_bytes[r, b] = e4m3_byte(s8)
            ratio = np.float32(inv_pts / s8)
            words = philox_randint4x(seed, offset + r * (k // 16) + b) if mode == "rs" else None
            for j in range(16):
                v = np.float32(min(max(np.float32(x[r, 16 * b + j] * ratio), np.float32(-6.0)), np.float32(6.0)))
                a = abs(float(v))
                code = e2m1_stochastic(np.float32(a), (words[j // 4] >> (8 * (j % 4))) & 0xFF) if mode == "rs" else e2m1_nearest(a)
                codes[r, 16 * b + j] = code | (8 if np.signbit(v) else 0)
    return codes, scale_bytes, pts


def quantize_rowcol(x: np.ndarray, mode: str = "rn", seed: int = 0, offset: int = 0, block_2d: bool = False, col_hadamard: bool = False):
    """((codes, scale bytes, pts) of x, the same of x.T): x.T RHT'd with col_hadamard, its Philox
    counters from offset + numel / 16, each pts from its own input's amax (docs/format.md §9)."""
    x = np.asarray(x, dtype=np.float32)
    quantize_one = quantize_2d if block_2d else quantize
    columns = np.ascontiguousarray(x.T)
    if col_hadamard:
        columns = rht(columns)
    return quantize_one(x, mode, seed, offset), quantize_one(columns, mode, seed, offset + x.size // 16)
