"""Backend registry. Every backend module has the same functional signature:

    amax(x) -> float32 0-d tensor (NaN if x holds NaN)
    quantize(x, per_tensor_scale, mode, seed, offset[, scale_rule=...]) -> (packed uint8 [..., K/2], scales e4m3 [..., K/16])

x is contiguous bf16/fp16/fp32 with last dim a multiple of 16; arguments are already validated.
A backend that implements block scale rules beyond "max" (docs/format.md "Scale rules") lists
them in a module attribute SCALE_RULES and takes the optional keyword scale_rule; the API passes
it only for rules other than "max", so a backend without SCALE_RULES offers max alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import torch

from ..errors import UsageError

BACKENDS = ("reference", "triton")
_MODULES = {"reference": ".reference", "triton": ".triton_backend"}


def triton_usable(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
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


def get_backend(name: str) -> ModuleType:
    """The backend module registered under name (imported on first use)."""
    if name not in _MODULES:
        raise UsageError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return importlib.import_module(_MODULES[name], __name__)
