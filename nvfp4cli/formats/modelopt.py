"""ModelOpt NVFP4 (docs/format.md §5): loads in vLLM, SGLang and TensorRT-LLM. `X.weight` (packed),
`X.weight_scale`, `X.weight_scale_2` = pts itself; quant_algo W4A16_NVFP4 for weight-only."""

from __future__ import annotations

import torch

from .. import __version__
from ..api import QuantizedTensor
from ..format import BLOCK_SIZE, dequantize_blocks
from ..io import Checkpoint, TensorSpec
from . import nvfp4
from .base import LogicalWeight, StoredWeight

NAME = "modelopt"
WEIGHT_ONLY_ALGO = "W4A16_NVFP4"
W4A4_ALGO = "NVFP4"  # with activations: an `X.input_scale` (amax / 2688) per Linear
HF_QUANT_CONFIG_NAME = "hf_quant_config.json"
TENSOR_SCALE_SHAPE = ()  # a 0-d float32
read = nvfp4.read


def _names(name: str) -> tuple[str, str, str]:
    return name, f"{name}_scale", f"{name}_scale_2"


def find(checkpoint: Checkpoint) -> list[LogicalWeight]:
    specs = checkpoint.specs
    return [
        nvfp4.triple(checkpoint, NAME, name, _names(name))
        for name, spec in specs.items()
        if name.endswith(".weight") and spec.dtype == "U8" and f"{name}_scale" in specs and specs[f"{name}_scale"].dtype == "F8_E4M3"
    ]


def per_tensor_scale(stored: torch.Tensor) -> torch.Tensor:
    """ModelOpt stores pts itself."""
    return stored


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    """e2m1 * scale * pts, as ModelOpt and vLLM dequantize."""
    parts = stored.parts
    return dequantize_blocks(parts["packed"], parts["scales"], parts["tensor_scale"], dtype)


def specs(name: str, shape: tuple[int, ...]) -> tuple[TensorSpec, ...]:
    return nvfp4.specs(_names(name), shape, TENSOR_SCALE_SHAPE)


def encode(name: str, q: QuantizedTensor) -> dict[str, torch.Tensor]:
    return nvfp4.encode(_names(name), q, q.per_tensor_scale, TENSOR_SCALE_SHAPE)


def configs(ignore: list[str], activations: bool = False) -> tuple[dict, dict[str, dict]]:
    """(config.json's quantization_config, {hf_quant_config.json: its payload}); vLLM requires
    all three of group_size, kv_cache_quant_algo and exclude_modules."""
    algo = W4A4_ALGO if activations else WEIGHT_ONLY_ALGO
    quantization_config = {"quant_method": "modelopt", "quant_algo": algo, "group_size": BLOCK_SIZE, "ignore": ignore}
    hf_quant_config = {
        "producer": {"name": "nvfp4cli", "version": __version__},
        "quantization": {"quant_algo": algo, "kv_cache_quant_algo": None, "group_size": BLOCK_SIZE, "exclude_modules": ignore},
    }
    return quantization_config, {HF_QUANT_CONFIG_NAME: hf_quant_config}
