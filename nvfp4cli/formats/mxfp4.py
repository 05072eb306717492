"""MXFP4 (gpt-oss; docs/format.md §7): `P_blocks` uint8 [..., out, in/32, 16], element 2j in the low
nibble of byte j and 2j+1 in the high nibble (E2M1 codes as NVFP4's), and `P_scales` uint8
[..., out, in/32], E8M0: scale = 2^(s - 127). w = E2M1(code) * scale, exact in float32. The
logical weight is `P`: [out, in] for a 2-D tensor, and for 3-D expert tensors [E, in, out], the
layout of transformers' float parameters (gpt-oss), so a dequantized checkpoint loads there. An
input, never written; lossless() re-encodes it as NVFP4 without a rounding (see there)."""

from __future__ import annotations

import torch

from ..api import QuantizedTensor, quantize
from ..errors import DataError
from ..format import BLOCK_SIZE, Mode, byte_lookup, byte_values
from ..io import Checkpoint
from .base import LogicalWeight, StoredWeight

NAME = "mxfp4"
MX_BLOCK = 32
E8M0_BIAS = 127
E8M0_NAN = 255
# An NVFP4 block scale 2^e is an exact E4M3 value for e in [-9, 8] (448 > 2^8): with the largest block
# exponent mapped to 2^8, blocks up to 17 binades below it re-encode without a rounding.
LOSSLESS_SPAN = 17
TOP_SCALE_EXPONENT = 8


def find(checkpoint: Checkpoint) -> list[LogicalWeight]:
    specs = checkpoint.specs
    weights = []
    for name, spec in specs.items():
        if not name.endswith("_blocks") or f"{name.removesuffix('_blocks')}_scales" not in specs:
            continue
        base = name.removesuffix("_blocks")
        scales = specs[f"{base}_scales"]
        if spec.dtype != "U8" or scales.dtype != "U8" or len(spec.shape) < 3 or spec.shape[-1] != MX_BLOCK // 2 or spec.shape[:-1] != scales.shape:
            raise DataError(f"{checkpoint.path}: MXFP4 tensors {name!r} {list(spec.shape)} and {base}_scales {list(scales.shape)} are not uint8 [..., G, 16] and [..., G]")
        out, inner = scales.shape[-2], scales.shape[-1] * MX_BLOCK
        shape = (out, inner) if len(scales.shape) == 2 else (*scales.shape[:-2], inner, out)
        weights.append(LogicalWeight(base, shape, NAME, (name, f"{base}_scales")))
    return weights


def read(weight: LogicalWeight, checkpoint: Checkpoint) -> StoredWeight:
    """The blocks and scales (of one expert's rows, for an expert view: rows carry their own
    scales, so a split never cuts a block)."""
    view = weight.view
    expert = None if view is None else view.expert
    blocks, scales = checkpoint.read(weight.tensors[0], expert), checkpoint.read(weight.tensors[1], expert)
    if view is not None:
        blocks, scales = view.rows(blocks), view.rows(scales)
    if (scales == E8M0_NAN).any():
        raise DataError(f"{checkpoint.file(weight.tensors[1])}: tensor {weight.tensors[1]!r} holds NaN (255) E8M0 scales")
    return StoredWeight(weight, {"blocks": blocks, "scales": scales})


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    """The values in the logical layout: [out, in] for one matrix (an expert's view too), [E, in, out] for all experts."""
    values = _decode_stored(stored.parts["blocks"], stored.parts["scales"])
    return (values.transpose(-1, -2).contiguous() if values.dim() > 2 else values).to(dtype)


def _decode_stored(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """float32 values in the stored [..., out, in] orientation."""
    values = byte_lookup(byte_values(), blocks).flatten(-2)  # [..., G, 32], low nibble first
    return values.mul_(_power_of_two(scales.to(torch.int32) - E8M0_BIAS).unsqueeze(-1)).flatten(-2)


def _power_of_two(exponents: torch.Tensor) -> torch.Tensor:
    """2^e in float32, exact, for integer exponents e."""
    return torch.ldexp(torch.ones(exponents.shape), exponents)


def _nonzero_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """[..., G] bool: the MXFP4 block holds a non-zero code (the sign alone is no value)."""
    return ((blocks & 0x77) != 0).any(dim=-1)  # either nibble's magnitude bits


def top_exponent(stored: list[StoredWeight]) -> int | None:
    """The largest E8M0 exponent over the non-zero blocks of weights that share one tensor scale."""
    tops = [int(s.parts["scales"][_nonzero_blocks(s.parts["blocks"])].max()) for s in stored if _nonzero_blocks(s.parts["blocks"]).any()]
    return max(tops) if tops else None


def lossless_per_tensor_scale(kmax: int) -> torch.Tensor | None:
    """pts = 2^(kmax - 127 - 8), so that block scale 2^(k-127) = s8 * pts with s8 = 2^(k - kmax + 8);
    None where 1/pts would not be a finite float32 (the tensor is far below any useful range)."""
    exponent = kmax - E8M0_BIAS - TOP_SCALE_EXPONENT
    if exponent < -126:
        return None
    return _power_of_two(torch.tensor(exponent, dtype=torch.int32))


def lossless(stored: StoredWeight, per_tensor_scale: torch.Tensor, kmax: int, mode: Mode, seed: int | None, backend: str) -> tuple[QuantizedTensor, int]:
    """NVFP4 of an MXFP4 weight with the tensor scale from lossless_per_tensor_scale(kmax): each
    MXFP4 block is two NVFP4 blocks; where its exponent k has kmax - k <= 17 it keeps every code
    and gets the exact E4M3 scale 2^(k - kmax + 8). Other blocks (further down, or all zero) are
    quantized from their decoded values as docs/format.md §2-§3 say, with that tensor scale, on
    the tensor scale's device (and backend); the result is on the CPU. Returns the tensor and how
    many of its NVFP4 blocks were re-encoded exactly."""
    blocks, scales = stored.parts["blocks"], stored.parts["scales"]
    values = _decode_stored(blocks, scales).to(per_tensor_scale.device)
    q = quantize(values, mode, seed=seed, per_tensor_scale=per_tensor_scale, backend=backend)
    q = QuantizedTensor(q.packed.cpu(), q.scales.cpu(), q.per_tensor_scale.cpu(), q.mode)
    exponent = scales.to(torch.int32) - kmax + TOP_SCALE_EXPONENT
    exact = _nonzero_blocks(blocks) & (exponent >= TOP_SCALE_EXPONENT - LOSSLESS_SPAN)
    # 2^e as an E4M3 byte: normal (e + 7) << 3 for e >= -6, subnormal mantissa 2^(e + 9) below.
    e4m3 = torch.where(exponent >= -6, (exponent + 7) << 3, _power_of_two((exponent + 9).clamp(min=0)).to(torch.int32))
    lead = scales.shape[:-1]
    nv_exact = exact.repeat_interleave(2, dim=-1)  # each MXFP4 block is two NVFP4 blocks
    packed = torch.where(nv_exact.unsqueeze(-1), blocks.reshape(*lead, -1, BLOCK_SIZE // 2), q.packed.reshape(*lead, -1, BLOCK_SIZE // 2))
    block_scales = torch.where(nv_exact, e4m3.clamp(0, 255).to(torch.uint8).repeat_interleave(2, dim=-1), q.scales.view(torch.uint8))
    result = QuantizedTensor(packed.reshape(q.packed.shape), block_scales.view(torch.float8_e4m3fn), q.per_tensor_scale, q.mode)
    return result, int(nv_exact.sum())


def exact_blocks(stored: StoredWeight) -> tuple[int, int]:
    """(NVFP4 blocks that lossless() re-encodes exactly, all NVFP4 blocks) of a weight whose
    leading dim holds experts that each get their own tensor scale, as `nvfp4 quantize` gives
    each expert's gate and up (one scale) and its down projection. All-zero blocks come back
    exactly either way; other blocks when within LOSSLESS_SPAN of their expert's largest exponent."""
    blocks, scales = stored.parts["blocks"], stored.parts["scales"]
    nonzero = _nonzero_blocks(blocks)
    experts = scales.reshape(scales.shape[0], -1) if scales.dim() > 2 else scales.reshape(1, -1)
    nonzero = nonzero.reshape(experts.shape)
    top = torch.where(nonzero, experts.to(torch.int32), -1).amax(dim=1, keepdim=True)
    exact = ~nonzero | (top - experts.to(torch.int32) <= LOSSLESS_SPAN)
    return 2 * int(exact.sum()), 2 * exact.numel()
