"""Microbenchmarks of NVFP4 quantization: our backends and peers against a copy of the same bytes.

For each input (shape, dtype) the harness times a device-to-device copy of the input (the
memory-bandwidth yardstick, measured in the same run), then every contender and mode twice:
"quantize" (per-tensor scale given, includes_amax false) and "amax+quantize" (the amax pass
included, as a user calling the API pays it). Each row carries the median, p10 and p90 time,
GB/s over the fewest bytes the work must move, its share of the copy's GB/s, the SQNR of the
dequantized output against the input, and the fraction of 4-bit codes equal to our RN reference.

Timing: CUDA events around each call on GPU, perf_counter on CPU. An input smaller than a few
last-level caches (the GPU's L2, the CPU's L3) is rotated among copies, so that calls read
memory and not the cache.

Peers (torchao's eager `nvfp4_quantize`, `torch.compile` of it, compressed-tensors' NVFP4
quantizer) run when importable and are skipped with a note otherwise; they round to nearest only.

The FP4 training primitives (docs/format.md §9) are benchmarked as a Workload: op "quantize" with
hadamard and/or block_2d, "rowcol" (quantize_rowcol; hadamard = col_hadamard; bytes: the input read
once, both outputs written) or "rht" (bf16 in, float32 out). Their peer, "plain-compile", is
torch.compile of a plain PyTorch version of the same op (the reference's math on the whole tensor
at once: plain_quantize, plain_rowcol, reference.rht); the other peers time plain quantize only.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import api
from .errors import UsageError, message
from .format import BLOCK_SIZE, PTS_DIVISOR, PTS_FLOOR, Mode, dequantize_blocks, per_tensor_scale_from_amax
from .kernels import BACKENDS, get_backend, triton_usable
from .kernels import reference as reference_backend
from .metrics import code_agreement, sqnr_db
from .names import BENCH_CONTENDERS as CONTENDERS  # the backends, then the peers
from .names import BENCH_OPS as OPS
from .names import BENCH_PEERS as PEERS

PEER_LABELS = {"plain-compile": "torch.compile(plain PyTorch)"}
DTYPE_NAMES = {dtype: name for name, dtype in api.FLOAT_DTYPES.items()}
# Per device type: default shape, warm-up calls, timed calls. A 2-core CPU runs the reference
# at about 0.1 GB/s, so its defaults stay small enough to finish in seconds.
DEFAULTS = {"cuda": ((8192, 8192), 10, 100), "cpu": ((2048, 2048), 2, 10)}
RS_SEED = 1  # RS rows use one fixed Philox stream: the time does not depend on the bits
INPUT_SEED = 0
ROTATION_CACHE_MULTIPLE = 4  # rotating buffers together span this many last-level caches
MAX_ROTATING_BUFFERS = 256  # tiny inputs are launch-bound anyway; cap the number of copies
DEFAULT_CACHE_BYTES = 50 * 2**20  # H100's L2, when the device does not report its cache size
CACHE_SIZE_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}
LAUNCH_COVER_CYCLES = 2_000_000  # GPU clock cycles (about 1 ms) of spin before each timed CUDA call

# packed, scales, and the contender's per-tensor scale in its own convention (rowcol: then the
# same three of the columnwise part; rht: the transformed tensor alone)
Output = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Workload:
    """What is timed: op (one of OPS), with the Hadamard transform (rowcol: of the columnwise
    part) and/or 2-D scaling."""

    op: str = "quantize"
    hadamard: bool = False
    block_2d: bool = False

    @property
    def label(self) -> str:
        return " ".join([self.op] + ["hadamard"] * self.hadamard + ["2d"] * self.block_2d)

    @property
    def plain(self) -> bool:
        """Plain 1-D quantize: what every peer implements."""
        return self == Workload()


class Unavailable(Exception):
    """A contender that cannot run here (not installed, needs another device); the message says why."""


@dataclass(frozen=True)
class Contender:
    """One implementation under test: quantize with the per-tensor scale given, or with its amax pass."""

    name: str
    peer: bool
    tensor_scale: Callable[[torch.Tensor], torch.Tensor]  # untimed, for the "quantize" rows
    quantize: Callable[[torch.Tensor, torch.Tensor, Mode], Output]
    amax_quantize: Callable[[torch.Tensor, Mode], Output]
    to_pts: Callable[[torch.Tensor], torch.Tensor]  # its per-tensor scale -> pts = amax / 2688
    modes: tuple[Mode, ...] = (Mode.RN,)
    dtypes: tuple[torch.dtype, ...] = api.SUPPORTED_DTYPES


@dataclass(frozen=True)
class BenchResult:
    backend: str
    peer: bool
    mode: str
    shape: list[int]
    dtype: str
    includes_amax: bool
    input_bytes: int
    median_us: float
    p10_us: float
    p90_us: float
    bytes: int  # fewest bytes moved: input read once (twice with the amax pass), outputs written once
    gbps: float
    copy_gbps: float  # the copy of this input, same run
    pct_of_copy: float
    sqnr_db: float | None
    agreement: float | None  # fraction of codes equal to our RN reference
    matches_reference: bool | None  # RN rows: codes, block scales and pts all bit-equal to the reference
    op: str = "quantize"  # Workload.label


@dataclass(frozen=True)
class Skipped:
    backend: str
    peer: bool
    mode: str | None  # None: every mode
    shape: list[int] | None  # None: every shape
    reason: str


@dataclass(frozen=True)
class BenchReport:
    device: str
    torch: str
    triton: str | None
    copy_gbps: float  # copy of the largest input measured
    results: list[BenchResult]
    skipped: list[Skipped]

    def to_dict(self) -> dict:
        return asdict(self)

    def check_failures(self) -> list[str]:
        """Our backends whose RN output differs from the reference, or that failed to run."""
        failures = [
            f"{r.backend} {timed_label(r.includes_amax)} {r.dtype} {shape_text(r.shape)}: RN output differs from the reference"
            for r in self.results
            if not r.peer and r.matches_reference is False
        ]
        failures += [f"{s.backend}: {s.reason}" for s in self.skipped if not s.peer and s.reason.startswith("failed")]
        return failures


# ---------------------------------------------------------------- arguments


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def timed_label(includes_amax: bool) -> str:
    return "amax+quantize" if includes_amax else "quantize"


def parse_shape(text: str) -> tuple[int, ...]:
    """'8192x8192' -> (8192, 8192); every dim positive, the last a multiple of 16."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"malformed shape {text!r}: expected dims joined by 'x', e.g. 8192x8192") from None
    if any(dim <= 0 for dim in shape):
        raise UsageError(f"shape {text!r} has a dim that is not positive")
    if shape[-1] % BLOCK_SIZE:
        raise UsageError(f"shape {text!r}: last dim {shape[-1]} is not a multiple of {BLOCK_SIZE}")
    return shape


def parse_device(name: str | None) -> torch.device:
    """The named device, or cuda when available else cpu; cuda without a GPU is a usage error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {name!r}; valid: cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but no CUDA GPU is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return device


def parse_backends(names: Sequence[str]) -> list[str]:
    """Contender names, in the order given, without repeats; all of them when none given."""
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}; valid: {', '.join(CONTENDERS)}")
    return list(dict.fromkeys(names)) if names else list(CONTENDERS)


# ---------------------------------------------------------------- contenders


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    # torchao logs warnings about optional GPU extensions on import; they are noise here.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _identity(scale: torch.Tensor) -> torch.Tensor:
    return scale


def _our_backend(name: str, device: torch.device, work: Workload) -> Contender:
    if name == "triton" and not triton_usable(device):
        raise Unavailable(f"needs a CUDA device (or TRITON_INTERPRET=1 on CPU), got {device.type}")
    try:
        kernels = get_backend(name)
    except ImportError as exc:
        raise Unavailable(f"not importable: {message(exc)}") from None
    flags = {"hadamard": work.hadamard, "block_2d": work.block_2d}

    def tensor_scale(x: torch.Tensor):
        if work.op == "rowcol":
            return tuple(per_tensor_scale_from_amax(a) for a in kernels.amax_rowcol(x, col_hadamard=work.hadamard))
        return per_tensor_scale_from_amax(kernels.amax(x, hadamard=work.hadamard))

    def quantize(x: torch.Tensor, pts, mode: Mode) -> Output:
        if work.op == "rht":
            return (kernels.rht(x),)
        if work.op == "rowcol":
            packed, scales, col_packed, col_scales = kernels.quantize_rowcol(
                x, per_tensor_scale=pts[0], col_per_tensor_scale=pts[1], mode=mode, seed=RS_SEED, offset=0,
                block_2d=work.block_2d, col_hadamard=work.hadamard,
            )
            return packed, scales, pts[0], col_packed, col_scales, pts[1]
        packed, scales = kernels.quantize(x, per_tensor_scale=pts, mode=mode, seed=RS_SEED, offset=0, **flags)
        return packed, scales, pts

    def amax_quantize(x: torch.Tensor, mode: Mode) -> Output:
        # The input is known finite: skip the API's host-side NaN check, which waits for the GPU.
        if work.op == "rht":
            return quantize(x, None, mode)
        if work.op == "rowcol":
            rows, cols = api.quantize_rowcol(
                x, mode, RS_SEED, 0, block_2d=work.block_2d, col_hadamard=work.hadamard, backend=name, check_finite=False
            )
            return rows.packed, rows.scales, rows.per_tensor_scale, cols.packed, cols.scales, cols.per_tensor_scale
        q = api.quantize(x, mode, seed=RS_SEED, backend=name, check_finite=False, **flags)
        return q.packed, q.scales, q.per_tensor_scale

    return Contender(name, False, tensor_scale, quantize, amax_quantize, _identity, modes=tuple(Mode))


def _plain_compile(work: Workload) -> Contender:
    """torch.compile of a plain PyTorch version of the same op: the peer of the training primitives."""
    divisor = {}

    def pts_of(amax: torch.Tensor) -> torch.Tensor:
        # per_tensor_scale_from_amax with a cached divisor tensor (true division; no host copy a call)
        if amax.device not in divisor:
            divisor[amax.device] = torch.tensor(PTS_DIVISOR, device=amax.device)
        return torch.clamp(amax.float() / divisor[amax.device], min=PTS_FLOOR)

    def tensor_scale(x: torch.Tensor):
        if work.op == "rowcol":
            cols = reference_backend.rht(x.T) if work.hadamard else x.T
            return pts_of(x.abs().amax()), pts_of(cols.abs().amax())
        return pts_of((reference_backend.rht(x) if work.hadamard else x).abs().amax())

    def quantize(x: torch.Tensor, pts, mode: Mode) -> Output:
        if work.op == "rht":
            return (reference_backend.rht(x),)
        if work.op == "rowcol":
            packed, scales, col_packed, col_scales = plain_rowcol(x, pts[0], pts[1], mode, RS_SEED, 0, work.block_2d, work.hadamard)
            return packed.reshape(x.shape[0], -1), scales.reshape(x.shape[0], -1), pts[0], col_packed, col_scales, pts[1]
        packed, scales = plain_quantize(x, pts, mode, RS_SEED, 0, work.hadamard, work.block_2d)
        return packed.reshape(*x.shape[:-1], -1), scales.reshape(*x.shape[:-1], -1), pts

    def amax_quantize(x: torch.Tensor, mode: Mode) -> Output:
        return quantize(x, tensor_scale(x), mode)

    torch._dynamo.reset()  # a fresh static-shape graph per input, never the recompile limit
    compiled_quantize, compiled_amax_quantize = torch.compile(quantize), torch.compile(amax_quantize)
    return Contender("plain-compile", True, tensor_scale, compiled_quantize, compiled_amax_quantize, _identity, modes=tuple(Mode))


def _torchao(compiled: bool) -> Contender:
    try:
        with _quiet_logs():
            from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale
    except ImportError as exc:
        raise Unavailable(f"not importable: {message(exc)}") from None

    def tensor_scale(x: torch.Tensor) -> torch.Tensor:
        return per_tensor_amax_to_scale(torch.max(torch.abs(x)))

    def quantize(x: torch.Tensor, pts: torch.Tensor) -> Output:
        scales, packed = nvfp4_quantize(x, BLOCK_SIZE, pts)
        return packed, scales, pts

    def amax_quantize(x: torch.Tensor) -> Output:
        return quantize(x, tensor_scale(x))

    if compiled:
        torch._dynamo.reset()  # a fresh static-shape graph per input, never the recompile limit
        quantize, amax_quantize = torch.compile(quantize), torch.compile(amax_quantize)
    return Contender(
        "torchao-compile" if compiled else "torchao",
        True,
        tensor_scale,
        lambda x, pts, mode: quantize(x, pts),
        lambda x, mode: amax_quantize(x),
        _identity,
        dtypes=(torch.bfloat16, torch.float32),  # nvfp4_quantize asserts on float16
    )


def _compressed_tensors() -> Contender:
    try:
        with _quiet_logs():
            from compressed_tensors.compressors.nvfp4.helpers import quantize_and_pack_fp4
            from compressed_tensors.quantization import preset_name_to_scheme
            from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp, generate_gparam
    except ImportError as exc:
        raise Unavailable(f"not importable: {message(exc)}") from None
    weight_args = preset_name_to_scheme("NVFP4A16", ["Linear"]).weights

    def tensor_scale(x: torch.Tensor) -> torch.Tensor:
        return generate_gparam(*torch.aminmax(x))  # global scale = 2688 / amax

    def quantize(x: torch.Tensor, global_scale: torch.Tensor, mode: Mode) -> Output:
        x2d = x.reshape(-1, x.shape[-1])  # its packer takes 2-D weights
        scales, _ = compute_dynamic_scales_and_zp(x2d, weight_args, module=None, global_scale=global_scale)
        packed = quantize_and_pack_fp4(x2d, scales, global_scale=global_scale, group_size=BLOCK_SIZE)
        scales = scales.to(torch.float8_e4m3fn)  # as its compressor stores them
        return packed.reshape(*x.shape[:-1], -1), scales.reshape(*x.shape[:-1], -1), global_scale

    def amax_quantize(x: torch.Tensor, mode: Mode) -> Output:
        return quantize(x, tensor_scale(x), mode)

    def to_pts(global_scale: torch.Tensor) -> torch.Tensor:
        return (1.0 / global_scale.to(torch.float32)).reshape(())

    return Contender("compressed-tensors", True, tensor_scale, quantize, amax_quantize, to_pts)


def plain_quantize(x, pts, mode: Mode, seed, offset, hadamard: bool = False, block_2d: bool = False):
    """The reference's math on the whole tensor at once, the plain PyTorch version of our quantize
    (with hadamard / block_2d) that the peer "torch.compile(plain PyTorch)" compiles."""
    return reference_backend.quantize_rows(
        x.reshape(-1, x.shape[-1]), per_tensor_scale=pts, mode=mode, seed=seed, offset=offset, hadamard=hadamard, block_2d=block_2d
    )


def plain_rowcol(x, pts, col_pts, mode: Mode, seed, offset, block_2d: bool = False, col_hadamard: bool = False):
    """Plain PyTorch quantize_rowcol: the rowwise and the columnwise quantize, one after the other."""
    rows = plain_quantize(x, pts, mode, seed, offset, block_2d=block_2d)
    cols = plain_quantize(x.T, col_pts, mode, seed, offset + x.numel() // BLOCK_SIZE, hadamard=col_hadamard, block_2d=block_2d)
    return (*rows, *cols)


def make_contender(name: str, device: torch.device, work: Workload = Workload()) -> Contender:
    """The contender registered under name, or Unavailable saying why it cannot run here."""
    if name in BACKENDS:
        return _our_backend(name, device, work)
    if name == "plain-compile":
        if work.plain:
            raise Unavailable("the peer of the training primitives (--op rowcol|rht, --hadamard, --block-2d); plain quantize has torchao-compile")
        return _plain_compile(work)
    if not work.plain:
        raise Unavailable(f"times plain 1-D quantize only, not {work.label}")
    if name == "compressed-tensors":
        return _compressed_tensors()
    return _torchao(compiled=name == "torchao-compile")


# ---------------------------------------------------------------- timing


def _cpu_cache_bytes() -> int:
    # Linux lists each cache level of cpu0 as e.g. "32768K"; the largest is the last level.
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        if text[:-1].isdigit() and text[-1] in CACHE_SIZE_UNITS:
            sizes.append(int(text[:-1]) * CACHE_SIZE_UNITS[text[-1]])
    return max(sizes, default=DEFAULT_CACHE_BYTES)


def cache_bytes(device: torch.device) -> int:
    """The last-level cache a benchmark input must not sit in: the GPU's L2, or the CPU's L3."""
    if device.type == "cuda":
        return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or DEFAULT_CACHE_BYTES
    return _cpu_cache_bytes()


def rotating_copies(x: torch.Tensor) -> list[torch.Tensor]:
    """x and copies of it that together span several last-level caches (x alone when it is larger)."""
    nbytes = x.numel() * x.element_size()
    count = min(MAX_ROTATING_BUFFERS, math.ceil(ROTATION_CACHE_MULTIPLE * cache_bytes(x.device) / nbytes))
    return [x] + [x.clone() for _ in range(count - 1)]


def time_calls(fn: Callable[[int], object], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds per call of fn(i), i counting calls from 0 (callers rotate buffers by it)."""
    for i in range(warmup):
        fn(i)
    if device.type != "cuda":
        times = []
        for i in range(warmup, warmup + iters):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
        return times
    with torch.cuda.device(device):
        torch.cuda.synchronize()  # the warm-up's queued work stays out of the first interval
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i, (start, end) in enumerate(zip(starts, ends)):
            # The GPU spins while Python launches the call, so the interval holds the call's device
            # time, not the host's launch overhead (which would dominate on a slow host).
            torch.cuda._sleep(LAUNCH_COVER_CYCLES)
            start.record()
            fn(warmup + i)
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in zip(starts, ends)]


def _percentiles_us(times: list[float]) -> tuple[float, float, float]:
    median, p10, p90 = np.percentile(np.asarray(times) * 1e6, [50, 10, 90])
    return float(median), float(p10), float(p90)


# ---------------------------------------------------------------- the run


def _make_input(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(INPUT_SEED)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


def _quantize_bytes(x: torch.Tensor, includes_amax: bool, op: str = "quantize") -> int:
    """The fewest bytes the work moves: the input read once (twice with the amax pass), the outputs
    written once (rowcol: two NVFP4 outputs; rht: a float32 tensor)."""
    reads = x.numel() * x.element_size() * (2 if includes_amax else 1)
    if op == "rht":
        return reads + 4 * x.numel()
    writes = x.numel() // 2 + x.numel() // BLOCK_SIZE  # packed codes and E4M3 scales
    return reads + writes * (2 if op == "rowcol" else 1)


@dataclass
class _Run:
    """Settings and accumulating rows of one bench run."""

    device: torch.device
    warmup: int
    iters: int
    on_step: Callable[[str], None]
    results: list[BenchResult]
    skipped: list[Skipped]
    work: Workload = Workload()

    def skip(self, contender: str, mode: Mode | None, shape: tuple[int, ...] | None, reason: str) -> None:
        shape_list = None if shape is None else list(shape)
        self.skipped.append(Skipped(contender, contender in PEERS, mode and mode.value, shape_list, reason))

    def time_copy(self, buffers: list[torch.Tensor]) -> float:
        """GB/s of a device-to-device copy of the input (bytes read plus bytes written)."""
        outputs = [torch.empty_like(b) for b in buffers]

        def copy(i: int) -> torch.Tensor:
            return outputs[i % len(buffers)].copy_(buffers[i % len(buffers)])

        times = time_calls(copy, self.device, self.warmup, self.iters)
        return 2 * buffers[0].numel() * buffers[0].element_size() / _percentiles_us(times)[0] / 1e3

    def measure(
        self, contender: Contender, mode: Mode, includes_amax: bool, buffers: list[torch.Tensor], reference: Output, copy_gbps: float
    ) -> None:
        x = buffers[0]
        self.on_step(f"{contender.name} {self.work.label} {mode.value} {timed_label(includes_amax)} {shape_text(x.shape)}")
        scale = None if includes_amax else contender.tensor_scale(x)

        def fn(i: int) -> Output:
            buffer = buffers[i % len(buffers)]
            return contender.amax_quantize(buffer, mode) if includes_amax else contender.quantize(buffer, scale, mode)

        output = fn(0)  # untimed: the output checked, compilers warmed
        if self.work.op != "rht":  # per-tensor scales to pts, our convention
            output = tuple(contender.to_pts(t) if i % 3 == 2 else t for i, t in enumerate(output))
        median, p10, p90 = _percentiles_us(time_calls(fn, self.device, self.warmup, self.iters))
        nbytes = _quantize_bytes(x, includes_amax, self.work.op)
        gbps = nbytes / median / 1e3
        matches = None
        if mode is Mode.RN:
            matches = len(output) == len(reference) and all(
                a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
                for a, b in zip(output, reference)
            )
        sqnr, agreement = None, None
        if self.work.op != "rht":
            packed, scales, pts = output[:3]
            # The signal the codes hold: rht(x) under the Hadamard transform (rowcol's rowwise part: x).
            signal = reference_backend.rht(x) if self.work.hadamard and self.work.op == "quantize" else x
            sqnr = sqnr_db(signal, dequantize_blocks(packed, scales, pts, torch.float32))
            agreement = code_agreement(packed, reference[0])
        self.results.append(
            BenchResult(
                backend=contender.name,
                peer=contender.peer,
                mode=mode.value,
                shape=list(x.shape),
                dtype=DTYPE_NAMES[x.dtype],
                includes_amax=includes_amax,
                input_bytes=x.numel() * x.element_size(),
                median_us=median,
                p10_us=p10,
                p90_us=p90,
                bytes=nbytes,
                gbps=gbps,
                copy_gbps=copy_gbps,
                pct_of_copy=100.0 * gbps / copy_gbps,
                sqnr_db=sqnr,
                agreement=agreement,
                matches_reference=matches,
                op=self.work.label,
            )
        )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} ({torch.get_num_threads()} threads)"


def _triton_version() -> str | None:
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_workload(work: Workload, shapes: Sequence[tuple[int, ...]]) -> None:
    """A usage error for an op the shapes cannot take (rowcol and 2-D scaling: 2-D, rows a multiple of 16)."""
    if work.op not in OPS:
        raise UsageError(f"unknown op {work.op!r}; valid: {', '.join(OPS)}")
    if work.op == "rht" and (work.hadamard or work.block_2d):
        raise UsageError("--op rht takes neither --hadamard nor --block-2d")
    if work.op == "rowcol" or work.block_2d:
        for shape in shapes:
            if len(shape) != 2 or shape[0] % BLOCK_SIZE:
                raise UsageError(f"{work.label} needs 2-D shapes with rows a multiple of {BLOCK_SIZE}, got {shape_text(shape)}")


def run_bench(
    shapes: Sequence[tuple[int, ...]],
    dtype: torch.dtype,
    modes: Sequence[Mode],
    backends: Sequence[str],
    device: torch.device,
    warmup: int,
    iters: int,
    on_step: Callable[[str], None] = lambda step: None,
    work: Workload = Workload(),
) -> BenchReport:
    """Time every backend x mode x {quantize, amax+quantize} (of work) on a random input of each shape."""
    if iters < 1 or warmup < 0:
        raise UsageError(f"need iters >= 1 and warmup >= 0, got iters={iters} warmup={warmup}")
    if not shapes or not modes or not backends:
        raise UsageError("need at least one shape, mode and backend")
    check_workload(work, shapes)
    run = _Run(device, warmup, iters, on_step, results=[], skipped=[], work=work)
    unavailable: dict[str, str] = {}
    copies: list[tuple[int, float]] = []
    for shape in shapes:
        x = _make_input(shape, dtype, device)
        buffers = rotating_copies(x)
        on_step(f"copy {shape_text(shape)}")
        copy_gbps = run.time_copy(buffers)
        copies.append((x.numel(), copy_gbps))
        reference = _our_backend("reference", device, work).amax_quantize(x, Mode.RN)
        for name in backends:
            if name in unavailable:
                continue
            try:
                contender = make_contender(name, device, work)
            except Unavailable as exc:
                unavailable[name] = str(exc)
                run.skip(name, None, None, str(exc))
                continue
            if dtype not in contender.dtypes:
                unavailable[name] = f"does not take {dtype}"
                run.skip(name, None, None, unavailable[name])
                continue
            for mode in modes:
                if mode not in contender.modes:
                    if shape == shapes[0]:
                        run.skip(name, mode, None, "has no stochastic rounding")
                    continue
                try:
                    for includes_amax in (False,) if work.op == "rht" else (False, True):
                        run.measure(contender, mode, includes_amax, buffers, reference, copy_gbps)
                except Exception as exc:  # a peer (or a broken backend) must not sink the whole run
                    run.skip(name, mode, shape, f"failed: {message(exc)}")
        del x, buffers, reference
    return BenchReport(
        device=device_name(device),
        torch=torch.__version__,
        triton=_triton_version(),
        copy_gbps=max(copies)[1],
        results=run.results,
        skipped=run.skipped,
    )
