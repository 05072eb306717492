"""Public Python API: quantize a tensor to NVFP4 and back, and the FP4 training primitives.

    q = nvfp4cli.quantize(x, mode="rs", seed=7, offset=0)
    x_hat = nvfp4cli.dequantize(q)
    rowwise, columnwise = nvfp4cli.quantize_rowcol(x, "rs", 7, 0, col_hadamard=True)
    y = nvfp4cli.rht(x)  # the 16-point random Hadamard transform (docs/format.md §9)

Random bits are never reused when a caller quantizing several tensors (or steps) with one seed
advances `offset` by `philox_counters(x)` after each call (twice that after quantize_rowcol): RS
uses one Philox counter per 16-element block, counters offset .. offset + philox_counters(x) - 1.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import names
from .errors import DataError, UsageError
from .format import BLOCK_SIZE, SCALE_RULES, Mode, dequantize_blocks, per_tensor_scale_from_amax, swizzle_scales
from .kernels import HADAMARD_SIGNS, get_backend, resolve_backend
from .rng import SEED_LIMIT

# Input dtypes, by the short names the CLI takes (bench --dtype, dequantize --dtype).
FLOAT_DTYPES = dict(zip(names.FLOAT_DTYPES, (torch.bfloat16, torch.float16, torch.float32), strict=True))
SUPPORTED_DTYPES = tuple(FLOAT_DTYPES.values())


@dataclass(frozen=True)
class QuantizedTensor:
    """An NVFP4 tensor: packed E2M1 codes, row-major E4M3 block scales and the per-tensor scale."""

    packed: torch.Tensor  # uint8 [..., K/2], element 2i in the low nibble
    scales: torch.Tensor  # float8_e4m3fn [..., K/16]
    per_tensor_scale: torch.Tensor  # float32 0-d, pts = amax / 2688 (floored at 2^-120)
    mode: Mode
    hadamard: bool = False  # the codes hold rht(x): dequantize gives rht(x), rht(..., inverse=True) x

    @property
    def shape(self) -> torch.Size:
        """Shape of the original tensor."""
        return torch.Size((*self.packed.shape[:-1], self.packed.shape[-1] * 2))

    @property
    def global_scale(self) -> torch.Tensor:
        """1 / pts: the reciprocal that compressed-tensors stores as `weight_global_scale`."""
        return 1.0 / self.per_tensor_scale

    def swizzled_scales(self) -> torch.Tensor:
        """Block scales in the GEMM-ready 128x4-tile layout (docs/format.md §6); 2-D tensors only."""
        return swizzle_scales(self.scales)


def philox_counters(x: torch.Tensor | torch.Size | tuple[int, ...]) -> int:
    """Philox counters RS uses for a tensor (one per 16-element block): advance `offset` by this."""
    shape = x.shape if isinstance(x, torch.Tensor) else tuple(x)
    return math.prod(shape) // BLOCK_SIZE


def _check_tensor(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise UsageError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise DataError(f"unsupported dtype {x.dtype} for tensor of shape {tuple(x.shape)}; expected bfloat16, float16 or float32")
    if x.dim() == 0 or x.shape[-1] % BLOCK_SIZE != 0 or x.shape[-1] == 0:
        raise DataError(f"last dim of shape {tuple(x.shape)} must be a positive multiple of {BLOCK_SIZE}")


def raise_if_not_finite(x: torch.Tensor, amax: torch.Tensor | float) -> None:
    """DataError with the count and first index of x's NaN/Inf values, if amax (x's, or of its
    Hadamard transform; a tensor or its value; or a kernel's nonfinite flag) is not finite. x is
    read only when it is not."""
    if math.isfinite(float(amax)):
        return
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if count == 0:  # x is finite: its Hadamard transform overflowed
        raise DataError(f"the Hadamard transform of tensor of shape {tuple(x.shape)} overflows float32 (|x| up to {float(x.abs().max()):.4g})")
    first = int(bad.reshape(-1).to(torch.uint8).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), x.shape))
    raise DataError(f"{count} non-finite value(s) (NaN or Inf) in tensor of shape {tuple(x.shape)}, first at index {index}")


class _HostSlot(NamedTuple):
    slot: torch.Tensor  # int32 [1], page-locked on a GPU's host: a kernel writes float32 bits into it
    view: object  # its numpy view, which the host polls
    done: torch.cuda.Event | None  # marks the end of a call's kernels on x's stream (None on CPU)


class _HostSlots(threading.local):
    """Per thread and device: one 4-byte host slot that an amax or a nonfinite flag reaches the
    host through. Made once: creating its parts a call cost more host time than the kernels."""

    def __init__(self):
        self.slots: dict[torch.device, _HostSlot] = {}

    def get(self, device: torch.device) -> _HostSlot:
        if device not in self.slots:
            cuda = device.type == "cuda"
            slot = torch.empty(1, dtype=torch.int32, pin_memory=cuda)
            self.slots[device] = _HostSlot(slot, slot.numpy(), torch.cuda.Event() if cuda else None)
        return self.slots[device]


_host_slots = _HostSlots()
_NOT_WRITTEN = -1  # no float32's bits once the sign is cleared, as amax's is


def _host_flag(device: torch.device) -> torch.Tensor:
    """The thread's host slot for device, zeroed, as a float32 [1] nonfinite flag
    (Backend.quantize): the quantize kernel writes NaN straight into host memory, so nothing
    runs on the device for the check but the quantize itself."""
    host = _host_slots.get(device)
    host.view[0] = 0
    return host.slot.view(torch.float32)


def _host_flag_when_done(device: torch.device) -> float:
    """The host flag's value once the kernels queued so far on the device's current stream have run."""
    host = _host_slots.get(device)
    if host.done is not None:
        host.done.record(torch.cuda.current_stream(device))
        host.done.synchronize()
    return float(host.view.view("float32")[0])


def _amax_when_written(view, amax: torch.Tensor) -> float:
    """amax's value from the host slot, as soon as the kernel has written it (on a GPU that is
    while its quantize programs still run); once the stream has drained without it (the write
    not yet visible to the host), from amax itself."""
    stream = torch.cuda.current_stream(amax.device) if amax.device.type == "cuda" else None
    polls = 0
    while view[0] == _NOT_WRITTEN:
        polls += 1
        if stream is None or (polls % 64 == 0 and stream.query()):
            return float(amax)
    return float(view.view("float32")[0])


def _check_counter(name: str, value, device: torch.device) -> torch.Tensor | int:
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype != torch.int64:
            raise UsageError(f"{name} tensor must be a 0-d int64 tensor, got shape {tuple(value.shape)} dtype {value.dtype}")
        if value.device != device:
            raise UsageError(f"{name} tensor is on {value.device} but the input is on {device}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an int or a 0-d int64 tensor, got {type(value).__name__}")
    if not 0 <= value < SEED_LIMIT:
        raise UsageError(f"{name} must be in [0, 2^63), got {value}")
    return value


def _check_per_tensor_scale(pts, device: torch.device, check_value: bool = True) -> torch.Tensor:
    if not isinstance(pts, torch.Tensor) or pts.numel() != 1 or pts.dim() > 1:
        shape = tuple(pts.shape) if isinstance(pts, torch.Tensor) else type(pts).__name__
        raise UsageError(f"per_tensor_scale must be a 0-d (or [1]) float tensor, got {shape}")
    if not pts.is_floating_point():
        raise UsageError(f"per_tensor_scale must be floating point, got dtype {pts.dtype}")
    pts = pts.to(device=device, dtype=torch.float32).reshape(())
    if not check_value:
        return pts
    value = float(pts)
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"per_tensor_scale must be positive and finite, got {value}")
    return pts


def _raise_if_flagged(x: torch.Tensor, flag: float, given_scales: list) -> None:
    """The error behind a nonfinite flag that came back NaN: a given scale's UsageError if one is
    not positive and finite, else x's NaN/Inf (or its transform's overflow) as a DataError."""
    if math.isfinite(flag):
        return
    for scale in given_scales:
        _check_per_tensor_scale(scale, x.device)
    raise_if_not_finite(x, flag)


def parse_mode(mode: Mode | str) -> Mode:
    """Mode from an enum member or its string value; a clear error otherwise."""
    try:
        return Mode(mode)
    except ValueError:
        raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(m.value for m in Mode)}") from None


def parse_dtype(name: str) -> torch.dtype:
    """The dtype of a short name in FLOAT_DTYPES; a clear error otherwise."""
    if name not in FLOAT_DTYPES:
        raise UsageError(f"unknown dtype {name!r}; valid: {', '.join(FLOAT_DTYPES)}")
    return FLOAT_DTYPES[name]


def parse_scale_rule(scale_rule: str, backend: str | None = None) -> str:
    """scale_rule if it is one of SCALE_RULES (every backend implements all); a clear error otherwise."""
    if scale_rule not in SCALE_RULES:
        raise UsageError(f"unknown scale rule {scale_rule!r}; valid: {', '.join(SCALE_RULES)}")
    return scale_rule


def _check_block_2d(x: torch.Tensor, what: str) -> None:
    if x.dim() != 2 or x.shape[0] % BLOCK_SIZE:
        raise DataError(f"{what} needs a 2-D tensor with both dims multiples of {BLOCK_SIZE}, got shape {tuple(x.shape)}")


def _check_offset_range(offset, counters: int) -> None:
    if isinstance(offset, int) and offset + counters > SEED_LIMIT:
        raise UsageError(f"offset {offset} + {counters} blocks exceeds 2^63 Philox counters")


def _check_signs(signs) -> tuple[int, ...]:
    values = tuple(signs.tolist() if isinstance(signs, torch.Tensor) else signs)
    if len(values) != BLOCK_SIZE or any(value not in (1, -1) for value in values):
        raise UsageError(f"signs must be {BLOCK_SIZE} values, each 1 or -1, got {list(values)}")
    return tuple(int(value) for value in values)


def rht(x: torch.Tensor, inverse: bool = False, signs=None, backend: str = "auto") -> torch.Tensor:
    """The 16-point random Hadamard transform along the last dim (docs/format.md §9), as float32.

    Per 16-element block: v = fp32(x) * signs; the Sylvester butterfly in the fixed order h = 1, 2,
    4, 8 (pairs (i, i + h) inside each 2h-group -> (a + b, a - b)); v * 0.25. signs defaults to
    TransformerEngine's vector (kernels.HADAMARD_SIGNS); inverse=True undoes the transform, exact
    up to fp32 rounding. Every backend gives the same bits.
    """
    _check_tensor(x)
    kernels = get_backend(resolve_backend(backend, x.device))
    return kernels.rht(x.contiguous(), signs=HADAMARD_SIGNS if signs is None else _check_signs(signs), inverse=bool(inverse))


def quantize(
    x: torch.Tensor,
    mode: Mode | str = "rn",
    seed: int | torch.Tensor | None = None,
    offset: int | torch.Tensor = 0,
    per_tensor_scale: torch.Tensor | None = None,
    backend: str = "auto",
    scale_rule: str = "max",
    check_finite: bool = True,
    hadamard: bool = False,
    block_2d: bool = False,
) -> QuantizedTensor:
    """Quantize x (bf16/fp16/fp32, last dim a multiple of 16) to NVFP4 per docs/format.md.

    mode "rn" rounds to nearest even, bit-exact with torchao's nvfp4_quantize; "rs" rounds
    stochastically with Philox bits fixed by (seed, offset): see philox_counters(). seed and
    offset may be 0-d int64 tensors on x's device (CUDA graphs replay with a new offset).
    per_tensor_scale (pts = amax / 2688) lets fused tensors share one scale; default: from x's amax.
    backend: "auto" (triton on CUDA, reference otherwise), "reference" or "triton".
    scale_rule: how each block's scale is chosen (docs/format.md §4): "max" (block max
    -> 6, torchao's rule), "4over6" or "mse" (lowest squared RN error among candidate scales;
    the choice ignores the random bits, so RS stays unbiased given the scales).
    hadamard: quantize rht(x) (docs/format.md §9), its per-tensor scale from rht(x)'s amax.
    block_2d: each block's scale from the amax of its 16x16 tile (2-D x, both dims multiples of
    16, scale rule max); the layout stays [M, K/16], so that a weight and its transpose quantize
    to the same values with RN.
    check_finite: False skips the checks that read device values back to the host (NaN/Inf in x,
    the value of per_tensor_scale): the call then never waits for the GPU and can be captured in
    a CUDA graph, and the caller answers for finite input. With True the kernels run first and
    the amax they computed (given per_tensor_scale, a flag that the quantize pass sets and that
    also carries the scale's own check: no amax pass, no read before the launch) is read once at
    the end (x is read again only when it is not finite).
    """
    _check_tensor(x)
    mode = parse_mode(mode)
    name = resolve_backend(backend, x.device)
    scale_rule = parse_scale_rule(scale_rule)
    if block_2d:
        _check_block_2d(x, "block_2d")
        if scale_rule != "max":
            raise UsageError(f"block_2d takes scale rule 'max' only (docs/format.md §9), got {scale_rule!r}")
    seed, offset = _check_seed_offset(mode, seed, offset, x.device)
    _check_offset_range(offset, philox_counters(x))
    kernels = get_backend(name)
    x = x.contiguous()
    options = dict(mode=mode, seed=seed, offset=offset, scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d)
    if per_tensor_scale is None:  # amax, scale and quantize: one launch on the Triton backend
        slot = view = None
        if check_finite:
            slot, view, _ = _host_slots.get(x.device)
            view[0] = _NOT_WRITTEN
        packed, scales, pts, amax = kernels.quantize_amax(x, **options, host_amax=slot)
        if check_finite:  # the GPU never waits for the host's check
            raise_if_not_finite(x, _amax_when_written(view, amax))
    else:  # the check comes from the quantize pass itself: no amax pass
        pts = _check_per_tensor_scale(per_tensor_scale, x.device, check_value=False)
        nonfinite = _host_flag(x.device) if check_finite else None
        packed, scales = kernels.quantize(x, per_tensor_scale=pts, **options, nonfinite=nonfinite)
        if check_finite:  # after the launch: the GPU never waits for the host's check
            _raise_if_flagged(x, _host_flag_when_done(x.device), [per_tensor_scale])
    return QuantizedTensor(packed=packed, scales=scales, per_tensor_scale=pts, mode=mode, hadamard=hadamard)


def _check_seed_offset(mode: Mode, seed, offset, device: torch.device):
    if mode is Mode.RS and seed is None:
        raise UsageError("mode 'rs' needs a seed")
    seed = None if seed is None else _check_counter("seed", seed, device)
    return seed, _check_counter("offset", offset, device)


def quantize_rowcol(
    x: torch.Tensor,
    mode: Mode | str = "rn",
    seed: int | torch.Tensor | None = None,
    offset: int | torch.Tensor = 0,
    *,
    block_2d: bool = False,
    col_hadamard: bool = False,
    backend: str = "auto",
    per_tensor_scale: torch.Tensor | None = None,
    col_per_tensor_scale: torch.Tensor | None = None,
    check_finite: bool = True,
) -> tuple[QuantizedTensor, QuantizedTensor]:
    """(rowwise, columnwise) NVFP4 of a 2-D x [M, K] (both dims multiples of 16), for FP4 training.

    rowwise == quantize(x, mode, seed, offset, block_2d=block_2d) and columnwise ==
    quantize(x.T.contiguous(), mode, seed, offset + philox_counters(x), block_2d=block_2d,
    hadamard=col_hadamard), byte for byte: the columnwise Philox stream continues where the
    rowwise one ends, so advance offset by 2 * philox_counters(x) after the call. On the Triton
    backend both come from one pass over x (and one amax pass for both per-tensor scales).
    per_tensor_scale / col_per_tensor_scale: pts of each (default from amax(x), and from
    amax(rht(x.T)) with col_hadamard). check_finite: as quantize.
    """
    _check_tensor(x)
    _check_block_2d(x, "quantize_rowcol")
    mode = parse_mode(mode)
    kernels = get_backend(resolve_backend(backend, x.device))
    seed, offset = _check_seed_offset(mode, seed, offset, x.device)
    _check_offset_range(offset, 2 * philox_counters(x))
    x = x.contiguous()
    row_amax = col_amax = None
    scales_given = per_tensor_scale is not None and col_per_tensor_scale is not None
    if not scales_given:
        row_amax, col_amax = kernels.amax_rowcol(x, col_hadamard=col_hadamard)
    pts = [
        per_tensor_scale_from_amax(amax) if given is None else _check_per_tensor_scale(given, x.device, check_value=check_finite and not scales_given)
        for given, amax in ((per_tensor_scale, row_amax), (col_per_tensor_scale, col_amax))
    ]
    # Given both scales, the check comes from the quantize pass itself: no amax pass.
    nonfinite = _host_flag(x.device) if check_finite and scales_given else None
    packed, scales, col_packed, col_scales = kernels.quantize_rowcol(
        x, per_tensor_scale=pts[0], col_per_tensor_scale=pts[1], mode=mode, seed=seed, offset=offset,
        block_2d=block_2d, col_hadamard=col_hadamard, nonfinite=nonfinite,
    )
    if nonfinite is not None:
        _raise_if_flagged(x, _host_flag_when_done(x.device), [per_tensor_scale, col_per_tensor_scale])
    elif check_finite:
        raise_if_not_finite(x, row_amax)
        if col_hadamard:
            raise_if_not_finite(x, col_amax)
    return (
        QuantizedTensor(packed=packed, scales=scales, per_tensor_scale=pts[0], mode=mode),
        QuantizedTensor(packed=col_packed, scales=col_scales, per_tensor_scale=pts[1], mode=mode, hadamard=col_hadamard),
    )


def dequantize(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x_hat = e2m1(code) * float32(scale) * per_tensor_scale, in dtype."""
    return dequantize_blocks(q.packed, q.scales, q.per_tensor_scale, dtype)
