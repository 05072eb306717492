"""Plain tensors: stored as they are (float weights, biases, norms, integer buffers, ...)."""

from __future__ import annotations

import torch

from ..io import Checkpoint
from .base import LogicalWeight, StoredWeight

NAME = "plain"


def weight(checkpoint: Checkpoint, name: str) -> LogicalWeight:
    return LogicalWeight(name, checkpoint.info(name).shape, NAME, (name,))


def read(weight: LogicalWeight, checkpoint: Checkpoint) -> StoredWeight:
    view = weight.view
    if view is None:
        return StoredWeight(weight, {"values": checkpoint.read(weight.tensors[0])})
    values = checkpoint.read(weight.tensors[0], view.expert)  # [in, out], as transformers stores experts
    return StoredWeight(weight, {"values": view.rows(values.T)})


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    return stored.parts["values"].to(dtype)
