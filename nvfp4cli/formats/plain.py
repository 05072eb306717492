"""Plain tensors: stored as they are (float weights, biases, norms, integer buffers, ...)."""

from __future__ import annotations

import torch

from ..io import Checkpoint
from .base import LogicalWeight, StoredWeight

NAME = "plain"


def weight(checkpoint: Checkpoint, name: str) -> LogicalWeight:
    return LogicalWeight(name, checkpoint.info(name).shape, NAME, (name,))


def read(weight: LogicalWeight, checkpoint: Checkpoint) -> StoredWeight:
    return StoredWeight(weight, {"values": checkpoint.read(weight.name)})


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    return stored.parts["values"].to(dtype)
