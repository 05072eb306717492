"""The job behind `nvfp4 inspect`: what a checkpoint holds, tensor by tensor, read from the
headers (and, for NVFP4 weights, their one-value tensor scales)."""

from __future__ import annotations

import math

from . import formats
from .formats.base import METADATA_KEY, record
from .io import Checkpoint


def inspect_checkpoint(checkpoint: Checkpoint) -> dict:
    """Per logical tensor: shape, stored dtype, format, scales (and, for MXFP4, how many blocks
    re-encode to NVFP4 exactly); totals and compression ratio.

    bytes_float counts a quantized weight at 2 bytes an element (its bf16 size): the ratio is the
    same number `nvfp4 quantize` reports for the checkpoint it wrote."""
    rows = []
    for name, weight in formats.logical_weights(checkpoint).items():
        stored = sum(checkpoint.info(tensor).nbytes for tensor in weight.tensors)
        row = {"name": name, "shape": list(weight.shape), "format": weight.format, "quantized": weight.quantized, "bytes": stored}
        if weight.nvfp4:
            pts = float(formats.load_per_tensor_scale(weight, checkpoint))
            row.update(dtype="nvfp4", bytes_float=math.prod(weight.shape) * 2, per_tensor_scale=pts, global_scale=1.0 / pts)
        elif weight.quantized:
            row.update(dtype=weight.format, bytes_float=math.prod(weight.shape) * 2)
            if weight.format == formats.mxfp4.NAME:
                exact, total = formats.mxfp4.exact_blocks(formats.mxfp4.read(weight, checkpoint))
                row.update(nvfp4_exact_blocks=exact, nvfp4_blocks=total)
        else:
            row.update(dtype=checkpoint.info(name).dtype, bytes_float=stored)
        rows.append(row)
    bytes_stored = sum(row["bytes"] for row in rows)
    mxfp4_blocks = sum(row.get("nvfp4_blocks", 0) for row in rows)
    bytes_float = sum(row["bytes_float"] for row in rows)
    return {
        "path": str(checkpoint.path),
        "files": [str(file.path) for file in checkpoint.files],
        "metadata": {key: value for key, value in checkpoint.metadata.items() if key != METADATA_KEY},
        "record": record(checkpoint),
        "tensors": rows,
        "totals": {
            "tensors": len(rows),
            "quantized": sum(row["quantized"] for row in rows),
            "bytes_float": bytes_float,
            "bytes_stored": bytes_stored,
            "ratio": bytes_float / bytes_stored if bytes_stored else None,
            # MXFP4 inputs: the share of NVFP4 blocks `nvfp4 quantize` re-encodes without a rounding.
            "mxfp4_exact_share": sum(row.get("nvfp4_exact_blocks", 0) for row in rows) / mxfp4_blocks if mxfp4_blocks else None,
        },
    }
