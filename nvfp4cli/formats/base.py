"""What every format shares: the logical weight (what a name means) and its stored parts."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..errors import DataError
from ..format import Mode
from ..io import Checkpoint

METADATA_KEY = "nvfp4"  # one safetensors metadata key holding this tool's record as sorted JSON


@dataclass(frozen=True)
class ExpertView:
    """One expert's projection inside a 3-D expert tensor (gpt-oss, Llama-4; logically [E, in, out]
    as transformers' parameters, whatever the storage), as the per-expert [out, in] Linear weight
    that serving engines load."""

    expert: int
    part: int  # which row group of the fused tensor: gate 0, up 1 of gate_up_proj
    parts: int
    interleaved: bool  # rows alternate between the parts (gpt-oss) instead of following in halves (Llama-4)

    def rows(self, matrix: torch.Tensor) -> torch.Tensor:
        """This part's rows of one expert's [out_total, ...] tensor."""
        if self.interleaved:
            return matrix[self.part :: self.parts].contiguous()
        return matrix.chunk(self.parts)[self.part].contiguous()


@dataclass(frozen=True)
class LogicalWeight:
    """One logical tensor: a plain stored tensor, or a weight a format stores in several parts.

    Pure data (picklable): the stored tensors are read through the checkpoint when needed.
    tensors: the stored names, the main one first (packed codes, FP8 values, ...).
    """

    name: str
    shape: tuple[int, ...]
    format: str
    tensors: tuple[str, ...]
    nvfp4: bool = False  # stored as NVFP4 (compressed-tensors or ModelOpt)
    view: ExpertView | None = None  # one expert's slice of a stored 3-D expert tensor

    @property
    def quantized(self) -> bool:
        """Stored in a quantized format (NVFP4, FP8, MXFP4), not as a plain tensor."""
        return self.format != "plain"


@dataclass(frozen=True)
class StoredWeight:
    """The stored tensors of one weight, read and checked, by role (values, scales, ...)."""

    weight: LogicalWeight
    parts: dict[str, torch.Tensor]


def record(checkpoint: Checkpoint) -> dict | None:
    """This tool's record of how the checkpoint was made (settings, producer), or None."""
    text = checkpoint.metadata.get(METADATA_KEY)
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise DataError(f"{checkpoint.path}: metadata {METADATA_KEY!r} is not a JSON object")
    return payload


def recorded_mode(checkpoint: Checkpoint) -> Mode:
    """The rounding mode this tool recorded in the metadata (RN when none is recorded)."""
    mode = (record(checkpoint) or {}).get("mode", Mode.RN.value)
    try:
        return Mode(mode)
    except ValueError:
        raise DataError(f"{checkpoint.path}: metadata {METADATA_KEY!r} records an unknown mode {mode!r}") from None


def input_quantization(checkpoint: Checkpoint) -> dict:
    """The input's config.json quantization_config ({} when there is none); a DataError when it
    is not a JSON object."""
    quantization = (checkpoint.config or {}).get("quantization_config")
    if quantization is None:
        return {}
    if not isinstance(quantization, dict):
        raise DataError(f"{checkpoint.path}: config.json quantization_config is {type(quantization).__name__}, not an object")
    return quantization
