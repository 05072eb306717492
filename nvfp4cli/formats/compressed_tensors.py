"""compressed-tensors NVFP4, format "nvfp4-pack-quantized" (docs/format.md §5): loads in vLLM and
transformers. `X.weight_packed`, `X.weight_scale`, `X.weight_global_scale` = 1 / pts."""

from __future__ import annotations

import torch

from ..api import QuantizedTensor
from ..format import BLOCK_SIZE, dequantize_blocks
from ..io import Checkpoint, TensorSpec
from ..modules import module_name
from . import nvfp4
from .base import LogicalWeight, StoredWeight

NAME = "compressed-tensors"
FORMAT_NAME = "nvfp4-pack-quantized"
TENSOR_SCALE_SHAPE = (1,)
read = nvfp4.read


def _names(name: str) -> tuple[str, str, str]:
    module = module_name(name)
    return f"{module}.weight_packed", f"{module}.weight_scale", f"{module}.weight_global_scale"


def find(checkpoint: Checkpoint) -> list[LogicalWeight]:
    return [
        nvfp4.triple(checkpoint, NAME, name.removesuffix("_packed"), _names(name.removesuffix("_packed")))
        for name in checkpoint.tensor_names()
        if name.endswith(".weight_packed")
    ]


def per_tensor_scale(stored: torch.Tensor) -> torch.Tensor:
    """This ecosystem stores the reciprocal of pts."""
    return 1.0 / stored


def decode(stored: StoredWeight, dtype: torch.dtype) -> torch.Tensor:
    """e2m1 * (scale / global_scale), in that order, as compressed-tensors dequantizes."""
    parts = stored.parts
    effective_scales = parts["scales"].to(torch.float32) / parts["tensor_scale"]
    return dequantize_blocks(parts["packed"], effective_scales, torch.ones(()), dtype)


def specs(name: str, shape: tuple[int, ...]) -> tuple[TensorSpec, ...]:
    return nvfp4.specs(_names(name), shape, TENSOR_SCALE_SHAPE)


def encode(name: str, q: QuantizedTensor) -> dict[str, torch.Tensor]:
    return nvfp4.encode(_names(name), q, q.global_scale, TENSOR_SCALE_SHAPE)


def configs(ignore: list[str], activations: bool = False) -> tuple[dict, dict[str, dict]]:
    """config.json's quantization_config for NVFP4, as compressed-tensors writes it: weight-only,
    or with activations (its NVFP4 preset: dynamic block scales, a static global scale per
    Linear, `input_global_scale`); no extra files."""
    weights = {
        "num_bits": 4,
        "type": "float",
        "symmetric": True,
        "group_size": BLOCK_SIZE,
        "strategy": "tensor_group",
        "dynamic": False,
        "scale_dtype": "torch.float8_e4m3fn",
    }
    input_activations = {**weights, "dynamic": "local", "observer": "static_minmax"} if activations else None
    group = {"targets": ["Linear"], "weights": weights, "input_activations": input_activations, "output_activations": None, "format": FORMAT_NAME}
    config = {
        "config_groups": {"group_0": group},
        "quant_method": "compressed-tensors",
        "kv_cache_scheme": None,
        "format": FORMAT_NAME,
        "quantization_status": "compressed",
        "ignore": ignore,
    }
    return config, {}

