"""`nvfp4 quantize --block-2d`: 2-D-scaled checkpoints (what a trainer hands to serving)."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import nvfp4cli
from cli_runner import nvfp4


def test_block_2d_checkpoint_equals_the_api_and_keeps_the_transpose_property(tmp_path):
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(64, 96, generator=g).to(torch.bfloat16)
    save_file({"layer.weight": weight, "odd.weight": torch.randn(40, 32, generator=g)}, tmp_path / "in.safetensors")
    result = nvfp4("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "out.safetensors", "--block-2d", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["block_2d"] is True and report["quantized"] == ["layer.weight"]
    assert "--block-2d" in {item["name"]: item["reason"] for item in report["skipped"]}["odd.weight"]  # 40 rows
    with safe_open(tmp_path / "out.safetensors", "pt") as handle:
        packed, scales = handle.get_tensor("layer.weight_packed"), handle.get_tensor("layer.weight_scale")
        global_scale = handle.get_tensor("layer.weight_global_scale")
    expected = nvfp4cli.quantize(weight, block_2d=True)
    assert torch.equal(packed, expected.packed) and torch.equal(scales.view(torch.uint8), expected.scales.view(torch.uint8))
    # Every 16x16 tile has one scale, so the weight and its transpose dequantize to transposes.
    stored = nvfp4cli.QuantizedTensor(packed, scales, 1.0 / global_scale.reshape(()), "rn")
    transposed = nvfp4cli.quantize(weight.T.contiguous(), block_2d=True)
    assert torch.equal(nvfp4cli.dequantize(stored).T, nvfp4cli.dequantize(transposed))
    assert nvfp4("quantize", tmp_path / "in.safetensors", "-o", tmp_path / "x.safetensors", "--block-2d", "--scale-rule", "mse").exit_code == 2
