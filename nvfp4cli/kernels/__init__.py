"""Backend registry and the contract every backend implements (`Backend`, a typing.Protocol).

x is contiguous bf16/fp16/fp32 with last dim a multiple of 16 and the arguments are already
validated by nvfp4cli.api; every backend implements every scale rule of format.SCALE_RULES, the
Hadamard transform and 2-D scaling, bit for bit like the reference backend (docs/format.md §2, §3, §8).
tests/test_backend_conformance.py checks each registered backend against this Protocol.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from types import ModuleType
from typing import Protocol, runtime_checkable

import torch

from ..errors import UsageError
from ..format import Mode, per_tensor_scale_from_amax
from ..names import BACKENDS

_MODULES = {"reference": ".reference", "triton": ".triton_backend"}

# TransformerEngine's fixed random-sign vector of its 16-point RHT (docs/format.md §9).
HADAMARD_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)

Counter = torch.Tensor | int | None  # a seed or offset: a Python int or a 0-d int64 tensor on x's device


@runtime_checkable
class Backend(Protocol):
    """What nvfp4cli.api calls on a backend module. All outputs are on x's device."""

    def amax(self, x: torch.Tensor, *, hadamard: bool = False) -> torch.Tensor:
        """max |x| (of rht(x) with hadamard) as float32 0-d; NaN/Inf when x holds one."""
        ...

    def amax_rowcol(self, x: torch.Tensor, *, col_hadamard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(amax(x), amax of the columnwise input: x.T, or rht(x.T) with col_hadamard), 2-D x."""
        ...

    def quantize(
        self,
        x: torch.Tensor,
        *,
        per_tensor_scale: torch.Tensor,
        mode: Mode,
        seed: Counter,
        offset: Counter,
        scale_rule: str = "max",
        hadamard: bool = False,
        block_2d: bool = False,
        nonfinite: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(packed uint8 [..., K/2], row-major e4m3 scales [..., K/16]) of x, or of rht(x) with
        hadamard; block_2d (2-D x, both dims multiples of 16, scale rule max) scales 16x16 tiles.
        nonfinite: a float32 [1] that the caller zeroes, on x's device or in page-locked host
        memory; NaN is written into it when what was quantized (x, or rht(x)) holds NaN or Inf or
        the per-tensor scale is not positive and finite, and nothing otherwise (the checks of a
        call given its per-tensor scale, without an amax pass or a read before the launch)."""
        ...

    def quantize_amax(
        self,
        x: torch.Tensor,
        *,
        mode: Mode,
        seed: Counter,
        offset: Counter,
        scale_rule: str = "max",
        hadamard: bool = False,
        block_2d: bool = False,
        host_amax: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """quantize with the per-tensor scale from amax(x) (of rht(x) with hadamard), docs/format.md
        §2: (packed, scales, per_tensor_scale float32 0-d, amax float32 0-d). host_amax: an int32
        [1] in host memory that receives amax's float32 bits as soon as they are known (before
        the quantize has finished, on a GPU); the caller sets it to -1 first."""
        ...

    def quantize_rowcol(
        self,
        x: torch.Tensor,
        *,
        per_tensor_scale: torch.Tensor,
        col_per_tensor_scale: torch.Tensor,
        mode: Mode,
        seed: Counter,
        offset: Counter,
        block_2d: bool = False,
        col_hadamard: bool = False,
        nonfinite: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(packed, scales) of quantize(x) and of quantize(x.T, offset + numel / 16,
        hadamard=col_hadamard), both with block_2d, for a 2-D x with both dims multiples of 16;
        nonfinite as quantize's, for x, the columnwise input (rht(x.T) with col_hadamard) and both scales."""
        ...

    def rht(self, x: torch.Tensor, *, signs: tuple[int, ...] = HADAMARD_SIGNS, inverse: bool = False) -> torch.Tensor:
        """The 16-point random Hadamard transform along the last dim (docs/format.md §9), float32."""
        ...


def quantize_amax_in_steps(amax, quantize, x: torch.Tensor, *, hadamard: bool = False, host_amax: torch.Tensor | None = None, **options):
    """Backend.quantize_amax from a backend's own amax and quantize, one after the other: amax,
    the per-tensor scale (docs/format.md §2), quantize; host_amax gets amax's bits once known."""
    amax_value = amax(x, hadamard=hadamard)
    if host_amax is not None:
        host_amax.copy_(amax_value.view(torch.int32).reshape(1))
    pts = per_tensor_scale_from_amax(amax_value)
    packed, scales = quantize(x, per_tensor_scale=pts, hadamard=hadamard, **options)
    return packed, scales, pts, amax_value


@functools.cache
def _triton_installed() -> bool:
    # Looked up once: find_spec costs about 0.1 ms, more than a small tensor's quantize kernel.
    return importlib.util.find_spec("triton") is not None


def triton_usable(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    if device.type == "cuda":
        return _triton_installed()
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(name: str, device: torch.device) -> str:
    """'auto' picks triton on CUDA and reference elsewhere; other names must be registered."""
    if name == "auto":
        return "triton" if device.type == "cuda" and triton_usable(device) else "reference"
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKENDS)}")
    if name == "triton" and not triton_usable(device):
        raise UsageError(f"backend 'triton' needs a CUDA tensor (or TRITON_INTERPRET=1 on CPU), got device {device}")
    return name


def get_backend(name: str) -> Backend:
    """The backend module registered under name (imported on first use)."""
    if name not in _MODULES:
        raise UsageError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    module: ModuleType = importlib.import_module(_MODULES[name], __name__)
    return module  # type: ignore[return-value]  # a module satisfies the Protocol structurally
