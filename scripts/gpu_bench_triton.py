"""Device benchmark of the Triton backend (issues 4, 19, 20), every number a ratio measured in this
run on this card: against a device-to-device copy of the same input (the bandwidth yardstick,
counting bytes read plus written) and against torch.compile of torchao's nvfp4_quantize (or, for
the training primitives, torch.compile of a plain PyTorch version of the same op).

    PYTHONPATH=. python scripts/gpu_bench_triton.py --out "$OUT" [--tune] [--sweep] [--rules] [--training] [--tile-tune] [--api] [--l2] [--one-launch-tune] [--reads]

--training times the FP4 training primitives (docs/format.md §9) at 8192x8192 bf16: quantize_rowcol (RN,
RS, col_hadamard, block_2d; bytes = input read once + both outputs written), 2-D and Hadamard
quantize against 1-D, the rht op, and the default API call against the kernels it runs.
--tile-tune times other 2-D tile shapes and 2-D register caps (outputs checked equal to the default's); --api the
default API call's host time and the alternatives for its finiteness read; --l2 how much of a
first pass (amax) a second pass finds in L2, by the part of x it reads; --one-launch-tune the
8192x8192 one-launch amax+quantize around its defaults (L2 share, amax chunk, quantize tiles); --reads
how fast the card reads x alone (a plain Triton max by program shape) beside the amax kernels.

--tune times other tile shapes of the quantize and amax kernels (each checked equal to the
default's output); --sweep times sizes from 1024^2 to 16384x8192, skinny M = 1..16, and fp16/fp32;
--rules times the block scale rules (max, 4over6, mse; RN and RS) on 8192x8192 bf16 and fp32, each
against max in the same run, with its output checked equal to the reference backend's on the CPU.
Prints markdown tables and writes bench.json and bench.md under --out.

Timing: CUDA events around each call, median of ITERS calls, each after a read of 1 GiB that
evicts L2 (leaving clean lines; "main" also times the copy, amax and RN after the 1 GiB memset
earlier runs used, whose dirty lines' write-back landed inside the timed call) and a ~1 ms spin that keeps the GPU busy while Python launches the call (so host
overhead stays hidden unless it exceeds that; --api measures the host time itself). Bytes: quantize reads the input once and writes packed codes
(N/2) and scales (N/16); amax+quantize reads the input twice (the two-pass floor).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
import triton.language as tl

import nvfp4cli
from nvfp4cli.format import BLOCK_SIZE, Mode, per_tensor_scale_from_amax
from nvfp4cli.kernels import reference, triton_backend

ITERS = 60
WARMUP = 5
MAIN_SHAPE = (8192, 8192)
SWEEP_SHAPES = [(1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192), (16384, 8192)]
SKINNY_SHAPES = [(m, 8192) for m in (1, 2, 4, 8, 16)]
TORCHAO_SHAPES = {(1024, 1024), (4096, 4096), (16384, 8192), (16, 8192)}  # and the main shape, timed there
# (blocks a tile, warps, tiles a program) of the quantize kernel; (words a tile, tiles, warps) of amax
QUANTIZE_CONFIGS = [(256, 4, 1), (512, 8, 1), (512, 4, 1), (256, 4, 2), (256, 4, 4), (128, 4, 2), (128, 4, 4), (128, 4, 8), (256, 8, 4)]
MAX_REGISTERS = [32, 40]  # register caps tried on each mode's default configuration (more programs an SM)
BLOCK_2D_REGISTERS = [None, 96, 80, 72, 64]  # the 2-D quantize's, None: the compiler's choice
AMAX_CONFIGS = [(4096, 8, 8), (2048, 8, 4)]
# ((blocks a tile, warps, tiles a program), amax tiles a chunk) of the one-launch amax+quantize
FUSED_CONFIGS = {
    Mode.RN: [((256, 4, 1), 8), ((256, 4, 1), 16), ((256, 4, 2), 8), ((256, 4, 4), 8), ((128, 4, 2), 8)],
    Mode.RS: [((256, 4, 2), 8), ((256, 4, 2), 16), ((256, 4, 4), 8), ((128, 4, 4), 8), ((128, 4, 2), 8)],
}
SEED, OFFSET = 1234, 0
SPIN_CYCLES = 2_000_000

_flush = None
FLUSH_BY_WRITING = False  # the eviction of earlier runs (a 1 GiB memset), timed beside the read one in "main"


def time_us(fn: Callable[[], object]) -> float:
    """Median microseconds of fn() on the GPU, L2 evicted before each call."""
    global _flush
    if _flush is None:
        _flush = torch.zeros(2**28, dtype=torch.int32, device="cuda")
    for _ in range(WARMUP):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(ITERS)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(ITERS)]
    for start, end in zip(starts, ends):
        # Read (not write) 1 GiB: L2 then holds clean lines, so no write-back of the flush's
        # dirty lines lands inside the timed call (it cost read-heavy kernels most).
        _flush.zero_() if FLUSH_BY_WRITING else _flush.max()
        # The GPU spins about 1 ms more while Python launches the call: host overhead up to that
        # stays out of the interval (this host takes ~0.1 ms to launch one Triton kernel).
        torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def make_input(shape, dtype=torch.bfloat16) -> torch.Tensor:
    gen = torch.Generator(device="cuda").manual_seed(0)
    return torch.randn(shape, generator=gen, device="cuda").to(dtype)


def quantize_bytes(x: torch.Tensor, reads: int = 1) -> int:
    return reads * x.numel() * x.element_size() + x.numel() // 2 + x.numel() // BLOCK_SIZE


def amax_then_quantize(x: torch.Tensor, mode: Mode):
    """The backend's amax, pts (format's: a fill, a division, a clamp), quantize."""
    return triton_backend.quantize(x, per_tensor_scale=per_tensor_scale_from_amax(triton_backend.amax(x)), mode=mode, seed=SEED, offset=OFFSET)


def amax_quantize(x: torch.Tensor, mode: Mode):
    """amax, pts and quantize in one launch (triton_backend.quantize_amax: what the API runs)."""
    return triton_backend.quantize_amax(x, mode=mode, seed=SEED, offset=OFFSET)


def same_bytes(got, want) -> bool:
    """Whether two sequences of tensors (packed codes, e4m3 scales, 0-d scales too) hold the same bytes."""
    return all(torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)) for a, b in zip(got, want, strict=True))


def one_launch_variant(x: torch.Tensor, mode: Mode, want, **knobs) -> tuple[float, bool]:
    """Microseconds of the one-launch amax+quantize with triton_backend's knobs set, and whether
    its codes, scales and per-tensor scale equal want's (the default's)."""
    with settings(triton_backend, **knobs):
        got = amax_quantize(x, mode)
        us = time_us(lambda: amax_quantize(x, mode))
    return us, same_bytes(got[:2], want[:2]) and torch.equal(got[2], want[2])


def torchao_quantize():
    """torchao's nvfp4_quantize(x, 16, pts), or None when torchao is missing."""
    try:
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize
    except ImportError:
        return None
    return nvfp4_quantize


def compiled(fn):
    """A fresh static-shape torch.compile of fn, as a user compiling for one weight shape gets."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


@contextlib.contextmanager
def settings(module, **values):
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


class Report:
    def __init__(self):
        self.rows: list[dict] = []
        self.lines: list[str] = []

    def add(self, section: str, name: str, us: float, nbytes: int | None, copy_gbps: float | None, **extra) -> dict:
        gbps = nbytes / us / 1e3 if nbytes else None
        row = {"section": section, "name": name, "us": round(us, 2), "bytes": nbytes}
        if gbps is not None:
            row["GB/s"] = round(gbps, 1)
            if copy_gbps:
                row["% of copy"] = round(100 * gbps / copy_gbps, 1)
        row.update(extra)
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def table(self, section: str, columns: list[str]) -> str:
        rows = [r for r in self.rows if r["section"] == section]
        head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        return head + "".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n" for r in rows)


def main_input_and_copy(report: Report, section: str) -> tuple[torch.Tensor, float, float]:
    """The 8192x8192 bf16 input, and a timed device copy of it (the yardstick): (x, copy us, GB/s)."""
    x = make_input(MAIN_SHAPE)
    nbytes = x.numel() * x.element_size()
    out = torch.empty_like(x)
    copy_us = time_us(lambda: out.copy_(x))
    copy_gbps = 2 * nbytes / copy_us / 1e3
    report.add(section, "copy (yardstick)", copy_us, 2 * nbytes, copy_gbps)
    return x, copy_us, copy_gbps


def main_shape(report: Report, torchao) -> dict:
    x, copy_us, copy_gbps = main_input_and_copy(report, "main")
    nbytes = x.numel() * x.element_size()
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    seed_t, offset_t = torch.tensor(SEED, device="cuda"), torch.tensor(OFFSET, device="cuda")
    r = {}
    r["amax"] = report.add("main", "triton amax", time_us(lambda: triton_backend.amax(x)), nbytes, copy_gbps)
    report.add("main", "torch x.abs().amax() (eager)", time_us(lambda: x.abs().amax()), nbytes, copy_gbps)
    r["rn"] = report.add("main", "triton quantize RN (pts given)", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)), quantize_bytes(x), copy_gbps)
    r["rs"] = report.add("main", "triton quantize RS (pts given)", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET)), quantize_bytes(x), copy_gbps)
    report.add("main", "triton quantize RS, seed/offset tensors", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=seed_t, offset=offset_t)), quantize_bytes(x), copy_gbps)
    report.add("main", "triton quantize RN, swizzled scales", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, swizzle=True)), quantize_bytes(x), copy_gbps)
    global FLUSH_BY_WRITING
    FLUSH_BY_WRITING = True
    out = torch.empty_like(x)
    report.add("main", "L2 evicted by writing (earlier runs): copy", time_us(lambda: out.copy_(x)), 2 * nbytes, copy_gbps)
    report.add("main", "L2 evicted by writing (earlier runs): triton amax", time_us(lambda: triton_backend.amax(x)), nbytes, copy_gbps)
    report.add("main", "L2 evicted by writing (earlier runs): triton quantize RN", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)), quantize_bytes(x), copy_gbps)
    FLUSH_BY_WRITING = False
    del out
    floor_us = quantize_bytes(x, reads=2) / copy_gbps / 1e3
    for mode in (Mode.RN, Mode.RS):
        us = time_us(lambda: amax_quantize(x, mode))
        r[f"e2e_{mode.value}"] = report.add("main", f"triton amax+quantize {mode.value.upper()}, one launch", us, quantize_bytes(x, 2), copy_gbps, **{"x two-pass floor": round(us / floor_us, 3)})
        us = time_us(lambda: amax_then_quantize(x, mode))
        report.add("main", f"triton amax, pts, quantize {mode.value.upper()} (3 launches + 3 ops)", us, quantize_bytes(x, 2), copy_gbps, **{"x two-pass floor": round(us / floor_us, 3)})
    report.add("main", "nvfp4cli.quantize RN (API default, finiteness checked)", time_us(lambda: nvfp4cli.quantize(x)), quantize_bytes(x, 2), copy_gbps)
    if torchao is not None:
        torchao_compiled = compiled(torchao)
        ao_us = time_us(lambda: torchao_compiled(x, 16, pts))
        r["torchao"] = report.add("main", "torch.compile(torchao nvfp4_quantize) (pts given)", ao_us, quantize_bytes(x), copy_gbps)
        report.add("main", "torchao nvfp4_quantize eager (pts given)", time_us(lambda: torchao(x, 16, pts)), quantize_bytes(x), copy_gbps)
        from torchao.prototype.mx_formats.nvfp4_tensor import per_tensor_amax_to_scale

        torchao_e2e = compiled(lambda x: torchao(x, 16, per_tensor_amax_to_scale(torch.max(torch.abs(x)))))
        r["torchao_e2e"] = report.add("main", "torch.compile(torchao amax + nvfp4_quantize)", time_us(lambda: torchao_e2e(x)), quantize_bytes(x, 2), copy_gbps)
    # The same two measurements again: their spread is the noise floor of this run.
    report.add("main", "triton quantize RN (again)", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)), quantize_bytes(x), copy_gbps)
    report.add("main", "triton quantize RS (again)", time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET)), quantize_bytes(x), copy_gbps)
    small = make_input((1024, 1024))
    r["small"] = report.add("main", "triton amax+quantize RN 1024x1024, one launch", time_us(lambda: amax_quantize(small, Mode.RN)), quantize_bytes(small, 2), copy_gbps)
    report.add("main", "triton amax, pts, quantize RN 1024x1024 (3 launches + 3 ops)", time_us(lambda: amax_then_quantize(small, Mode.RN)), quantize_bytes(small, 2), copy_gbps)
    report.add("main", "nvfp4cli.quantize 1024x1024 (API default)", time_us(lambda: nvfp4cli.quantize(small)), quantize_bytes(small, 2), copy_gbps)
    r["copy_us"], r["copy_gbps"], r["floor_us"] = copy_us, copy_gbps, floor_us
    return r


def tune(report: Report, copy_gbps: float) -> None:
    x = make_input(MAIN_SHAPE)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    want = {mode: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET) for mode in Mode}
    for config in QUANTIZE_CONFIGS:
        for mode in Mode:
            with settings(triton_backend, QUANTIZE_CONFIGS={**triton_backend.QUANTIZE_CONFIGS, (mode, False): config}):
                same = same_bytes(triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET), want[mode])
                us = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET))
            name = f"quantize {mode.value.upper()} blocks={config[0]} warps={config[1]} tiles={config[2]}"
            report.add("tune", name, us, quantize_bytes(x), copy_gbps, same=same)
    for cap in MAX_REGISTERS:
        for mode in Mode:
            with settings(triton_backend, MAX_REGISTERS=cap):
                same = same_bytes(triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET), want[mode])
                us = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET))
            report.add("tune", f"quantize {mode.value.upper()} default tiles, maxnreg={cap}", us, quantize_bytes(x), copy_gbps, same=same)
    report.add("tune", "torch x.amax() (a read-only reference)", time_us(lambda: x.amax()), x.numel() * x.element_size(), copy_gbps)
    want_amax = triton_backend.amax(x)
    for words, tiles, warps in AMAX_CONFIGS:
        with settings(triton_backend, AMAX_WORDS=words, AMAX_TILES=tiles, AMAX_WARPS=warps):
            same = torch.equal(triton_backend.amax(x), want_amax)
            us = time_us(lambda: triton_backend.amax(x))
        report.add("tune", f"amax words={words} tiles={tiles} warps={warps}", us, x.numel() * x.element_size(), copy_gbps, same=same)
    floor_us = quantize_bytes(x, reads=2) / copy_gbps / 1e3
    for mode in Mode:
        want = amax_quantize(x, mode)
        for config, chunk_tiles in FUSED_CONFIGS[mode]:
            configs = {**triton_backend.AMAX_QUANTIZE_CONFIGS, (mode, False): config}
            us, same = one_launch_variant(x, mode, want, AMAX_QUANTIZE_CONFIGS=configs, AMAX_CHUNK_TILES=chunk_tiles)
            name = f"amax+quantize one launch {mode.value.upper()} blocks={config[0]} warps={config[1]} tiles={config[2]} chunk={chunk_tiles}"
            report.add("tune", name, us, quantize_bytes(x, 2), copy_gbps, same=same, **{"x two-pass floor": round(us / floor_us, 3)})


# The resident one-launch amax+quantize (triton_backend.RESIDENT_CONFIGS, then several tiles a
# program) by size, against tickets, single configurations of its table and other multi-tile shapes
# (4096x5120 and 5120x5120: 10 and 13 tiles of 1024 blocks a program on an H200, past
# RESIDENT_MAX_TILES but inside L2; "up to 32 tiles" times them resident.)
SMALL_SHAPES = [(16, 8192), (128, 8192), (1024, 1024), (256, 8192), (1536, 1536), (2048, 2048), (4096, 2048), (4096, 4096), (4096, 5120), (5120, 5120), (8192, 8192)]
SMALL_VARIANTS = {
    "tickets": dict(RESIDENT_LAUNCH=False),
    "resident (the rule)": {},
    "resident, one tile a program only": dict(RESIDENT_MAX_TILES=0),
    **{f"resident {b} blocks, {w} warps": dict(RESIDENT_CONFIGS=((b, w),), RESIDENT_MAX_TILES=0) for b, w in [(256, 4), (512, 8), (1024, 8), (2048, 8)]},
    "resident, tiles of 512 blocks": dict(RESIDENT_TILES_CONFIG=(512, 8), RESIDENT_MAX_TILES=16),
    "resident, tiles of 8 warps": dict(RESIDENT_TILES_CONFIG=(1024, 8)),
    "resident, up to 32 tiles a program": dict(RESIDENT_MAX_TILES=32),
}


def small_tune(report: Report, copy_gbps: float) -> None:
    """The launch-bound one-launch amax+quantize of small x (goal: 1024x1024 <= 8 us), resident or
    ticketed; configurations that leave x too large to run resident fall back to tickets (labelled)."""
    for shape in SMALL_SHAPES:
        x = make_input(shape)
        for mode in Mode:
            with settings(triton_backend, RESIDENT_LAUNCH=False):
                want = amax_quantize(x, mode)
            for name, knobs in SMALL_VARIANTS.items():
                with settings(triton_backend, **knobs):
                    resident = triton_backend._resident_tiling(x, False)
                us, same = one_launch_variant(x, mode, want, **knobs)
                how = " (tickets)" if resident is None else f" ({resident[2]} tiles a program)" if resident[2] > 1 else ""
                label = f"{shape[0]}x{shape[1]} one launch {mode.value.upper()} {name}" + ("" if name == "tickets" else how)
                report.add("tune", label, us, quantize_bytes(x, 2), copy_gbps, same=same)


# (share of the amax steps kept in L2, amax tiles a chunk, quantize (blocks, warps, tiles)) of the
# 8192x8192 one-launch amax+quantize RN, around the default
ONE_LAUNCH_VARIANTS = [
    (0.75, 8, (256, 4, 2)), (0.625, 8, (256, 4, 2)), (0.8125, 8, (256, 4, 2)), (0.75, 16, (256, 4, 2)), (0.625, 10, (256, 4, 2)),
    (0.75, 10, (256, 4, 2)), (0.625, 12, (256, 4, 2)), (0.75, 8, (256, 4, 4)), (0.75, 8, (128, 4, 4)), (0.75, 8, (512, 8, 2)),
]


def one_launch_tune(report: Report, copy_gbps: float) -> None:
    """The one-launch amax+quantize RN at 8192x8192 around its defaults (L2 share, chunk, tiles)."""
    x = make_input(MAIN_SHAPE)
    floor_us = quantize_bytes(x, reads=2) / copy_gbps / 1e3
    want = amax_quantize(x, Mode.RN)
    for kept, chunk_tiles, config in ONE_LAUNCH_VARIANTS:
        configs = {**triton_backend.AMAX_QUANTIZE_CONFIGS, (Mode.RN, False): config}
        us, same = one_launch_variant(x, Mode.RN, want, AMAX_KEPT_FRACTION=kept, AMAX_CHUNK_TILES=chunk_tiles, AMAX_QUANTIZE_CONFIGS=configs)
        name = f"one launch RN kept={kept} chunk={chunk_tiles} blocks={config[0]} warps={config[1]} tiles={config[2]}"
        report.add("tune", name, us, quantize_bytes(x, 2), copy_gbps, **{"x two-pass floor": round(us / floor_us, 3), "same": same})


@triton.jit
def _read_max_kernel(words_ptr, partial_ptr, n_words, WORDS: tl.constexpr, TILES: tl.constexpr):
    """The max of TILES tiles of WORDS int32 words a program, tile t * programs + program: the
    plainest read of x, no double buffering, no cache policy (the read rate's yardstick)."""
    best = tl.zeros([WORDS], tl.int32)
    for t in tl.range(TILES):
        offsets = (t * tl.num_programs(0) + tl.program_id(0)).to(tl.int64) * WORDS + tl.arange(0, WORDS)
        best = tl.maximum(best, tl.load(words_ptr + offsets, mask=offsets < n_words, other=0))
    tl.store(partial_ptr + tl.program_id(0), tl.max(best, axis=0))


# (words a tile, warps, tiles a program) of the plain read
READ_CONFIGS = [(2048, 8, 1), (4096, 8, 1), (8192, 8, 2), (4096, 8, 8), (2048, 4, 16)]


def read_rate(report: Report, copy_gbps: float) -> None:
    """How fast this card reads x alone (the amax pass's ceiling, which the copy's read + write
    does not show): a plain Triton max over x's words by program shape, torch's amax, and the
    backend's amax whole (partial and finish kernels) and its partial kernel alone."""
    x = make_input(MAIN_SHAPE)
    nbytes = x.numel() * x.element_size()
    words = triton_backend._words(x)
    for block, warps, tiles in READ_CONFIGS:
        programs = triton.cdiv(words.numel(), block * tiles)
        partials = torch.empty(programs, dtype=torch.int32, device="cuda")
        us = time_us(lambda: _read_max_kernel[(programs,)](words, partials, words.numel(), WORDS=block, TILES=tiles, num_warps=warps))
        report.add("reads", f"plain Triton max, words={block} warps={warps} tiles={tiles} ({programs} programs)", us, nbytes, copy_gbps)
    report.add("reads", "torch x.amax()", time_us(lambda: x.amax()), nbytes, copy_gbps)
    report.add("reads", "triton amax (partial + finish kernels)", time_us(lambda: triton_backend.amax(x)), nbytes, copy_gbps)
    programs = triton.cdiv(words.numel(), triton_backend.AMAX_WORDS * triton_backend.AMAX_TILES)
    partials = torch.empty(programs, dtype=torch.int32, device="cuda")
    partial = lambda: triton_backend._amax_partial_kernel[(programs,)](  # noqa: E731
        words, partials, words.numel(), PAIRED=True, WORDS=triton_backend.AMAX_WORDS, TILES=triton_backend.AMAX_TILES,
        KEPT_STEPS=triton_backend._kept_steps(triton_backend.AMAX_TILES), num_warps=triton_backend.AMAX_WARPS,
    )
    report.add("reads", "triton amax's partial kernel alone", time_us(partial), nbytes, copy_gbps)


def sweep(report: Report, torchao, main_torchao_us: float | None, peers: bool) -> None:
    for shape in SWEEP_SHAPES + SKINNY_SHAPES:
        x = make_input(shape)
        out = torch.empty_like(x)
        copy_us = time_us(lambda: out.copy_(x))
        copy_gbps = 2 * x.numel() * x.element_size() / copy_us / 1e3
        pts = per_tensor_scale_from_amax(triton_backend.amax(x))
        rn = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0))
        rs = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET))
        e2e = time_us(lambda: amax_quantize(x, Mode.RN))
        extra = {"shape": "x".join(map(str, shape)), "copy us": round(copy_us, 2), "RS us": round(rs, 2), "amax+RN us": round(e2e, 2)}
        ao = main_torchao_us if shape == MAIN_SHAPE else None
        if peers and torchao is not None and shape in TORCHAO_SHAPES:
            torchao_compiled = compiled(torchao)
            ao = time_us(lambda: torchao_compiled(x, 16, pts))
        if ao is not None:
            extra.update({"torchao-compile us": round(ao, 2), "speed-up vs torchao": round(ao / rn, 2)})
        report.add("sweep", f"RN {extra['shape']}", rn, quantize_bytes(x), copy_gbps, **extra)
    x = make_input(MAIN_SHAPE)
    for dtype in (torch.float16, torch.float32):
        xd = x.to(dtype)
        out = torch.empty_like(xd)
        copy_us = time_us(lambda: out.copy_(xd))
        copy_gbps = 2 * xd.numel() * xd.element_size() / copy_us / 1e3
        pts = per_tensor_scale_from_amax(triton_backend.amax(xd))
        for mode in Mode:
            us = time_us(lambda: triton_backend.quantize(xd, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET))
            report.add("dtypes", f"quantize {mode.value.upper()} {str(dtype)[6:]} {MAIN_SHAPE[0]}x{MAIN_SHAPE[1]}", us, quantize_bytes(xd), copy_gbps, **{"copy us": round(copy_us, 2)})


def rules(report: Report) -> None:
    for dtype in (torch.bfloat16, torch.float32):
        x = make_input(MAIN_SHAPE).to(dtype)
        out = torch.empty_like(x)
        copy_us = time_us(lambda: out.copy_(x))
        copy_gbps = 2 * x.numel() * x.element_size() / copy_us / 1e3
        pts = per_tensor_scale_from_amax(triton_backend.amax(x))
        x_cpu, pts_cpu = x.cpu(), pts.cpu()
        max_us = {}
        for rule in triton_backend.SCALE_RULES:
            for mode in Mode:
                packed, scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, scale_rule=rule)
                want_packed, want_scales = reference.quantize(x_cpu, per_tensor_scale=pts_cpu, mode=mode, seed=SEED, offset=OFFSET, scale_rule=rule)
                same = torch.equal(packed.cpu(), want_packed) and torch.equal(scales.cpu().view(torch.uint8), want_scales.view(torch.uint8))
                us = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, scale_rule=rule))
                max_us.setdefault(mode, us)
                extra = {"rule": rule, "mode": mode.value, "dtype": str(dtype)[6:], "x max": round(us / max_us[mode], 2), "same as reference (CPU)": same}
                report.add("rules", f"quantize {rule} {mode.value.upper()} {str(dtype)[6:]}", us, quantize_bytes(x), copy_gbps, **extra)


def rowcol_bytes(x: torch.Tensor, reads: int = 1) -> int:
    """quantize_rowcol: the input read `reads` times, two NVFP4 outputs written."""
    return reads * x.numel() * x.element_size() + 2 * (x.numel() // 2 + x.numel() // BLOCK_SIZE)


def rowcol(x, pts, col_pts, mode, block_2d=False, col_hadamard=False):
    return triton_backend.quantize_rowcol(
        x, per_tensor_scale=pts, col_per_tensor_scale=col_pts, mode=mode, seed=SEED, offset=OFFSET,
        block_2d=block_2d, col_hadamard=col_hadamard,
    )


def training(report: Report, peers: bool) -> dict:
    x, _, copy_gbps = main_input_and_copy(report, "training")
    nbytes = x.numel() * x.element_size()
    row_amax, col_amax = triton_backend.amax_rowcol(x, col_hadamard=True)
    pts, col_pts = per_tensor_scale_from_amax(row_amax), per_tensor_scale_from_amax(col_amax)
    r = {}
    for mode in Mode:
        for block_2d, col_hadamard in ((False, False), (False, True), (True, True)):
            name = f"quantize_rowcol {mode.value.upper()}" + (" col_hadamard" if col_hadamard else "") + (" block_2d" if block_2d else "")
            us = time_us(lambda: rowcol(x, pts, col_pts, mode, block_2d, col_hadamard))
            r[name] = report.add("training", name, us, rowcol_bytes(x), copy_gbps)
    us = time_us(lambda: triton_backend.amax_rowcol(x, col_hadamard=True))
    report.add("training", "amax_rowcol col_hadamard (both per-tensor scales, one read)", us, nbytes, copy_gbps)

    def amax_rowcol_rs():
        a, b = triton_backend.amax_rowcol(x, col_hadamard=True)
        return rowcol(x, per_tensor_scale_from_amax(a), per_tensor_scale_from_amax(b), Mode.RS, False, True)

    r["rowcol e2e"] = report.add("training", "amax_rowcol + quantize_rowcol RS col_hadamard", time_us(amax_rowcol_rs), rowcol_bytes(x, 2), copy_gbps)
    hpts = per_tensor_scale_from_amax(triton_backend.amax(x, hadamard=True))
    for mode in Mode:
        seed = SEED if mode is Mode.RS else None
        one_d = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=seed, offset=0))
        r[f"1d {mode.value}"] = report.add("training", f"quantize {mode.value.upper()} 1-D", one_d, quantize_bytes(x), copy_gbps)
        two_d = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=seed, offset=0, block_2d=True))
        r[f"2d {mode.value}"] = report.add("training", f"quantize {mode.value.upper()} block_2d", two_d, quantize_bytes(x), copy_gbps, **{"x 1-D": round(two_d / one_d, 3)})
        had = time_us(lambda: triton_backend.quantize(x, per_tensor_scale=hpts, mode=mode, seed=seed, offset=0, hadamard=True))
        report.add("training", f"quantize {mode.value.upper()} hadamard", had, quantize_bytes(x), copy_gbps, **{"x 1-D": round(had / one_d, 3)})
    report.add("training", "amax hadamard", time_us(lambda: triton_backend.amax(x, hadamard=True)), nbytes, copy_gbps)
    report.add("training", "rht (bf16 in, fp32 out)", time_us(lambda: triton_backend.rht(x)), nbytes * 3, copy_gbps)
    # Issue 20 goal 5: the default API call against the kernel it runs (amax, pts, quantize in one launch).
    kernels_us = time_us(lambda: amax_quantize(x, Mode.RN))
    api_us = time_us(lambda: nvfp4cli.quantize(x))
    r["api"] = report.add("training", "nvfp4cli.quantize(x) default (finiteness checked)", api_us, quantize_bytes(x, 2), copy_gbps, **{"x kernels": round(api_us / kernels_us, 3)})
    report.add("training", "triton amax+quantize RN one launch (the kernel the API runs)", kernels_us, quantize_bytes(x, 2), copy_gbps)
    if peers:
        from nvfp4cli.bench import plain_rowcol

        try:
            peer = compiled(plain_rowcol)
            peer_us = time_us(lambda: peer(x, pts, col_pts, Mode.RS, SEED, OFFSET, False, True))
            name = "quantize_rowcol RS col_hadamard"
            report.add("training", "torch.compile(plain PyTorch rowcol RS col_hadamard) [peer]", peer_us, rowcol_bytes(x), copy_gbps, **{"speed-up": round(peer_us / r[name]["us"], 2)})
        except Exception as exc:  # a peer must not sink the run
            print(json.dumps({"peer failed": repr(exc)[:500]}), flush=True)
    r["copy_gbps"] = copy_gbps
    return r


TILE_TUNE = [(128, 4, 2), (128, 4, 4), (256, 4, 1), (256, 4, 2), (256, 4, 4), (512, 4, 2), (512, 8, 1), (512, 8, 2)]  # (blocks a 2-D tile, warps, tiles a program)
# quantize_rowcol's (blocks, warps, tiles, column patch): tiles * blocks = patch * 32 * warps, blocks >= 32 * warps
ROWCOL_TUNE = [(128, 4, 4, 4), (128, 4, 2, 2), (128, 4, 4, 2), (256, 8, 2, 2), (64, 2, 4, 4), (256, 8, 4, 4), (64, 2, 4, 2)]


def config_name(config: tuple[int, ...]) -> str:
    """A tile configuration as blocks=.. warps=.. tiles=.. [patch=..]."""
    return " ".join(f"{key}={value}" for key, value in zip(("blocks", "warps", "tiles", "patch"), config))


def tile_tune(report: Report, copy_gbps: float) -> None:
    """Other 2-D tile shapes (16 rows x blocks/16 block columns) for rowcol, 2-D quantize and the RHT
    amax, and register caps of the 2-D quantize."""
    x = make_input(MAIN_SHAPE)
    row_amax, col_amax = triton_backend.amax_rowcol(x, col_hadamard=True)
    pts, col_pts = per_tensor_scale_from_amax(row_amax), per_tensor_scale_from_amax(col_amax)
    for columns, mode, col_hadamard in ((True, Mode.RS, True), (True, Mode.RN, True), (True, Mode.RS, False), (False, Mode.RS, False), (False, Mode.RN, False)):
        if columns:
            run = lambda: rowcol(x, pts, col_pts, mode, False, col_hadamard)  # noqa: E731
        else:
            run = lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=0, block_2d=True)  # noqa: E731
        want = run()
        for config in ROWCOL_TUNE if columns else TILE_TUNE:
            configs = {"ROWCOL_CONFIGS": {**triton_backend.ROWCOL_CONFIGS, mode: config}} if columns else {
                "QUANTIZE_CONFIGS": {**triton_backend.QUANTIZE_CONFIGS, (mode, True): config}
            }
            with settings(triton_backend, **configs):
                got = run()
                same = same_bytes(got, want)
                us = time_us(run)
            kind = ("rowcol col_hadamard" if col_hadamard else "rowcol") if columns else "quantize block_2d"
            name = f"{kind} {mode.value.upper()} {config_name(config)}"
            report.add("tile-tune", name, us, rowcol_bytes(x) if columns else quantize_bytes(x), copy_gbps, same=same)
    for mode in Mode:  # register caps of the 2-D quantize (more programs an SM, or spills)
        run = lambda: triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=0, block_2d=True)  # noqa: E731
        want = run()
        for cap in BLOCK_2D_REGISTERS:
            with settings(triton_backend, QUANTIZE_REGISTERS={} if cap is None else {(mode, True, False): cap}):
                same = same_bytes(run(), want)
                us = time_us(run)
            report.add("tile-tune", f"quantize block_2d {mode.value.upper()} maxnreg={cap or 'none'}", us, quantize_bytes(x), copy_gbps, same=same)
    want = triton_backend.amax_rowcol(x, col_hadamard=True)
    for config in ROWCOL_TUNE:
        with settings(triton_backend, AMAX_ROWCOL_CONFIG=config):
            same = all(torch.equal(a, b) for a, b in zip(triton_backend.amax_rowcol(x, col_hadamard=True), want))
            us = time_us(lambda: triton_backend.amax_rowcol(x, col_hadamard=True))
        report.add("tile-tune", f"amax_rowcol col_hadamard {config_name(config)}", us, x.numel() * x.element_size(), copy_gbps, same=same)
    for blocks, warps in sorted({(blocks, warps) for blocks, warps, _ in TILE_TUNE}):
        with settings(triton_backend, AMAX_BLOCKS_CONFIG=(blocks, warps)):
            had_us = time_us(lambda: triton_backend.amax(x, hadamard=True))
        report.add("tile-tune", f"amax hadamard blocks={blocks} warps={warps}", had_us, x.numel() * x.element_size(), copy_gbps)


def l2_reuse(report: Report) -> None:
    """Does a second pass find the first one's data in L2 (what a one-launch amax+quantize could
    save)? amax reads its windows from x's end back to its start, so x's start is read last:
    time amax of a part of x alone, and its extra time right after an amax of all of x, for the
    part read last (x's start) and the part read first (x's end)."""
    x, _, copy_gbps = main_input_and_copy(report, "l2")
    flat, n = x.view(-1), x.numel()
    whole = time_us(lambda: triton_backend.amax(x))
    report.add("l2", "amax of x", whole, n * x.element_size(), copy_gbps)
    for parts in (16, 8, 4, 2):
        part = n // parts
        head, tail = flat[:part], flat[n - part :]
        nbytes = part * x.element_size()
        report.add("l2", f"amax of x's first 1/{parts} alone", time_us(lambda: triton_backend.amax(head)), nbytes, copy_gbps)
        after_head = time_us(lambda: (triton_backend.amax(x), triton_backend.amax(head))) - whole
        report.add("l2", f"after amax of x: its first 1/{parts} (read last)", after_head, nbytes, copy_gbps)
        after_tail = time_us(lambda: (triton_backend.amax(x), triton_backend.amax(tail))) - whole
        report.add("l2", f"after amax of x: its last 1/{parts} (read first)", after_tail, nbytes, copy_gbps)
        pts = per_tensor_scale_from_amax(triton_backend.amax(head))
        quantize_head = lambda: triton_backend.quantize(head.view(-1, 8192), per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)  # noqa: E731
        alone = time_us(quantize_head)
        report.add("l2", f"quantize RN of x's first 1/{parts} alone", alone, quantize_bytes(head), copy_gbps)
        after = time_us(lambda: (triton_backend.amax(x), quantize_head())) - whole
        report.add("l2", f"after amax of x: quantize RN of its first 1/{parts}", after, quantize_bytes(head), copy_gbps)
    floor_us = quantize_bytes(x, reads=2) / copy_gbps / 1e3
    for mode in Mode:
        want = amax_quantize(x, mode)  # the cache policy changes no byte
        for kept, stream in [(kept, stream) for kept in (0, 0.5, 0.75, 0.875, 1) for stream in (False, True)]:
            us, same = one_launch_variant(x, mode, want, AMAX_KEPT_FRACTION=kept, AMAX_STREAM_QUANTIZE=stream)
            name = f"amax+quantize {mode.value.upper()} one launch, last {kept} of the amax steps kept in L2" + (", quantize loads evict_first" if stream else "")
            report.add("l2", name, us, quantize_bytes(x, reads=2), copy_gbps, **{"x two-pass floor": round(us / floor_us, 3), "same": same})
    for shape in ((4096, 4096), (16384, 8192)):
        y = make_input(shape)
        y_floor_us = quantize_bytes(y, reads=2) / copy_gbps / 1e3
        for kept, stream in ((0, False), (0.75, True)):
            with settings(triton_backend, AMAX_KEPT_FRACTION=kept, AMAX_STREAM_QUANTIZE=stream):
                us = time_us(lambda: amax_quantize(y, Mode.RN))
            name = f"{shape[0]}x{shape[1]} amax+quantize RN one launch, kept {kept}" + (", evict_first" if stream else "")
            report.add("l2", name, us, quantize_bytes(y, reads=2), copy_gbps, **{"x two-pass floor": round(us / y_floor_us, 3)})


def wall_us(fn, calls: int = 300) -> float:
    """Host wall-clock microseconds a call, the GPU drained before and after: launch overhead."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def api_overhead(report: Report, copy_gbps: float) -> None:
    """Issue 20 goal 5 in detail: the API call's host time, and the amax read after the launch on
    the same stream (the simple alternative to the side-stream read) for comparison."""
    small = make_input((1024, 1024))
    report.add("api", "host us a call: nvfp4cli.quantize 1024x1024", wall_us(lambda: nvfp4cli.quantize(small)), None, None)
    report.add("api", "host us a call: nvfp4cli.quantize check_finite=False", wall_us(lambda: nvfp4cli.quantize(small, check_finite=False)), None, None)
    report.add("api", "host us a call: triton amax+quantize, one launch", wall_us(lambda: amax_quantize(small, Mode.RN)), None, None)
    report.add("api", "host us a call: triton amax, pts, quantize (3 launches + 3 ops)", wall_us(lambda: amax_then_quantize(small, Mode.RN)), None, None)
    x = make_input(MAIN_SHAPE)
    report.add("api", "nvfp4cli.quantize(x) 8192^2", time_us(lambda: nvfp4cli.quantize(x)), quantize_bytes(x, 2), copy_gbps)
    report.add("api", "nvfp4cli.quantize(x, check_finite=False)", time_us(lambda: nvfp4cli.quantize(x, check_finite=False)), quantize_bytes(x, 2), copy_gbps)
    report.add("api", "amax+quantize, one launch", time_us(lambda: amax_quantize(x, Mode.RN)), quantize_bytes(x, 2), copy_gbps)
    # Given the per-tensor scale, the finiteness check comes from the quantize pass (a flag),
    # where it took an amax pass before: the call, the kernel with and without the flag, and the
    # two passes the call used to run; then quantize_rowcol given both scales.
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    flag = torch.zeros(1, device="cuda")
    quantize_rn = lambda **extra: triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, **extra)  # noqa: E731
    report.add("api", "nvfp4cli.quantize(x, per_tensor_scale=pts)", time_us(lambda: nvfp4cli.quantize(x, per_tensor_scale=pts)), quantize_bytes(x), copy_gbps)
    report.add("api", "nvfp4cli.quantize(x, per_tensor_scale=pts, check_finite=False)", time_us(lambda: nvfp4cli.quantize(x, per_tensor_scale=pts, check_finite=False)), quantize_bytes(x), copy_gbps)
    report.add("api", "triton quantize RN with the nonfinite flag", time_us(lambda: quantize_rn(nonfinite=flag)), quantize_bytes(x), copy_gbps)
    report.add("api", "triton quantize RN", time_us(quantize_rn), quantize_bytes(x), copy_gbps)
    report.add("api", "triton amax, then quantize RN (the check as an amax pass)", time_us(lambda: (triton_backend.amax(x), quantize_rn())), quantize_bytes(x, 2), copy_gbps)
    row_pts, col_pts = (per_tensor_scale_from_amax(a) for a in triton_backend.amax_rowcol(x, col_hadamard=True))
    given = dict(per_tensor_scale=row_pts, col_per_tensor_scale=col_pts, col_hadamard=True)
    report.add("api", "nvfp4cli.quantize_rowcol RS col_hadamard, scales given", time_us(lambda: nvfp4cli.quantize_rowcol(x, "rs", SEED, OFFSET, **given)), rowcol_bytes(x), copy_gbps)
    report.add("api", "the same, check_finite=False", time_us(lambda: nvfp4cli.quantize_rowcol(x, "rs", SEED, OFFSET, **given, check_finite=False)), rowcol_bytes(x), copy_gbps)
    report.add("api", "amax_rowcol, then quantize_rowcol (the check as an amax pass)", time_us(lambda: (triton_backend.amax_rowcol(x, col_hadamard=True), rowcol(x, row_pts, col_pts, Mode.RS, col_hadamard=True))), rowcol_bytes(x, 2), copy_gbps)


def describe_device() -> dict:
    props = torch.cuda.get_device_properties(0)
    info = {
        "card": props.name,
        "multiprocessors": props.multi_processor_count,
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit"
        info["nvidia-smi"] = subprocess.check_output(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], text=True).strip()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--small", action="store_true", help="the one-launch amax+quantize of small x, resident or ticketed, by size (also part of --tune)")
    parser.add_argument("--one-launch-tune", action="store_true", help="8192x8192 one-launch amax+quantize around its defaults")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--rules", action="store_true", help="time the block scale rules 4over6 and mse against max")
    parser.add_argument("--no-sweep-peers", action="store_true", help="skip torchao (a compile a shape) in the sweep")
    parser.add_argument("--training", action="store_true", help="time the training primitives (docs/format.md §9) and the API call")
    parser.add_argument("--tile-tune", action="store_true", help="time other 2-D tile shapes (rowcol, block_2d, RHT amax) and block_2d register caps")
    parser.add_argument("--api", action="store_true", help="the default API call's host time and its finiteness read")
    parser.add_argument("--l2", action="store_true", help="how much of a first pass a second one finds in L2")
    parser.add_argument("--reads", action="store_true", help="the card's read rate (a plain Triton max by program shape) beside amax")
    parser.add_argument("--no-training-peer", action="store_true", help="skip torch.compile of the plain PyTorch rowcol")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = describe_device()
    print(json.dumps(info), flush=True)
    torchao = torchao_quantize()
    report = Report()
    r = main_shape(report, torchao)
    summary = {
        "quantize RN % of copy (goal >= 90)": r["rn"]["% of copy"],
        "amax+quantize RN x two-pass floor (goal <= 1.10)": r["e2e_rn"]["x two-pass floor"],
        "RS / RN (goal <= 1.05)": round(r["rs"]["us"] / r["rn"]["us"], 3),
        "1024x1024 amax+quantize RN us (goal <= 8)": r["small"]["us"],
    }
    if "torchao" in r:
        summary["quantize speed-up vs torch.compile torchao"] = round(r["torchao"]["us"] / r["rn"]["us"], 2)
    if "torchao_e2e" in r:
        summary["amax+quantize speed-up vs torch.compile torchao (goal >= 5)"] = round(r["torchao_e2e"]["us"] / r["e2e_rn"]["us"], 2)
    print(json.dumps(summary), flush=True)
    if args.tune:
        tune(report, r["copy_gbps"])
    if args.tune or args.small:
        small_tune(report, r["copy_gbps"])
    if args.one_launch_tune:
        one_launch_tune(report, r["copy_gbps"])
    if args.sweep:
        sweep(report, torchao, r["torchao"]["us"] if "torchao" in r else None, not args.no_sweep_peers)
    if args.rules:
        rules(report)
    if args.training:
        t = training(report, not args.no_training_peer)
        summary["quantize_rowcol RS col_hadamard % of copy (goal >= 65)"] = t["quantize_rowcol RS col_hadamard"]["% of copy"]
        for mode in ("rn", "rs"):
            summary[f"{mode.upper()} block_2d / 1-D (goal <= 1.10)"] = t[f"2d {mode}"]["x 1-D"]
        summary["default API / amax+quantize kernels (goal <= 1.10)"] = t["api"]["x kernels"]
        print(json.dumps(summary), flush=True)
    if args.tile_tune:
        tile_tune(report, r["copy_gbps"])
    if args.api:
        api_overhead(report, r["copy_gbps"])
    if args.l2:
        l2_reuse(report)
    if args.reads:
        read_rate(report, r["copy_gbps"])
    columns = ["name", "us", "GB/s", "% of copy", "x two-pass floor", "same"]
    sweep_columns = ["shape", "us", "GB/s", "% of copy", "copy us", "RS us", "amax+RN us", "torchao-compile us", "speed-up vs torchao"]
    text = f"{json.dumps(info)}\n\n{json.dumps(summary)}\n\n" + report.table("main", columns)
    text += "\n" + report.table("tune", columns) + "\n" + report.table("sweep", sweep_columns) + "\n" + report.table("dtypes", ["name", "us", "GB/s", "% of copy", "copy us"])
    text += "\n" + report.table("rules", ["rule", "mode", "dtype", "us", "GB/s", "% of copy", "x max", "same as reference (CPU)"])
    text += "\n" + report.table("training", ["name", "us", "GB/s", "% of copy", "x 1-D", "x kernels", "speed-up"])
    text += "\n" + report.table("tile-tune", columns)
    text += "\n" + report.table("api", ["name", "us", "GB/s", "% of copy"])
    text += "\n" + report.table("l2", ["name", "us", "GB/s", "% of copy", "x two-pass floor", "same"])
    text += "\n" + report.table("reads", ["name", "us", "GB/s", "% of copy"])
    (args.out / "bench.md").write_text(text)
    (args.out / "bench.json").write_text(json.dumps({"device": info, "summary": summary, "rows": report.rows}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
