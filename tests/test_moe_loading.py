"""Loading NVFP4 MoE checkpoints in transformers (issue: per-expert NVFP4 MoE loads wrongly there).

transformers 5.x rebuilds each expert without its global scale (docs/moe.md), so a per-expert
NVFP4 checkpoint with the usual scales gives garbage logits; `nvfp4 dequantize` of the same output
loads correctly, and so does `quantize --experts-unit-scale` (every expert's global scale is 1).
Measured against the float model's logits on the Qwen3-MoE sample."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from cli_runner import nvfp4

transformers = pytest.importorskip("transformers")
SAMPLE = Path(__file__).resolve().parent.parent / "sample_ckpts" / "qwen3-moe"
TOKENS = torch.tensor([[1, 5, 9, 23, 42, 77, 100, 3, 8, 13, 21, 34]])
MIN_COSINE = 0.95  # NVFP4 of this tiny model measures ~0.987; garbage measures ~0.03


def logits(path: Path, **kwargs) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    with torch.no_grad():
        return model(TOKENS).logits.flatten()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return logits(SAMPLE)


def test_dequantize_route_loads_in_transformers(tmp_path, reference):
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "q").exit_code == 0
    assert nvfp4("dequantize", tmp_path / "q", "-o", tmp_path / "dq").exit_code == 0
    assert cosine(logits(tmp_path / "dq"), reference) >= MIN_COSINE


def test_experts_unit_scale_loads_directly_in_transformers(tmp_path, reference):
    config = transformers.CompressedTensorsConfig(dequantize=True)
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "usual").exit_code == 0
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "unit", "--experts-unit-scale").exit_code == 0
    # The usual layout is what transformers gets wrong: this documents the reason for the option.
    assert cosine(logits(tmp_path / "usual", quantization_config=config), reference) < 0.5
    assert cosine(logits(tmp_path / "unit", quantization_config=config), reference) >= MIN_COSINE
    # Only the routed experts change; the experts' global scales are all exactly 1.
    from safetensors import safe_open

    with safe_open(tmp_path / "unit" / "model.safetensors", "pt") as handle:
        scales = {name: float(handle.get_tensor(name)) for name in handle.keys() if name.endswith("weight_global_scale")}
    assert {value for name, value in scales.items() if ".experts." in name} == {1.0}
    assert any(value != 1.0 for name, value in scales.items() if ".experts." not in name)
    assert nvfp4("verify", tmp_path / "unit").exit_code == 0


def test_dequantized_gpt_oss_loads_in_transformers_as_its_float_model(tmp_path):
    # MXFP4 experts dequantize to transformers' own [E, in, out] parameters: no missing or unexpected
    # names, and the logits of transformers' own MXFP4 decode (Mxfp4Config(dequantize=True)).
    gpt_oss = SAMPLE.parent / "gpt-oss-mxfp4"
    assert nvfp4("dequantize", gpt_oss, "-o", tmp_path / "dq", "--dtype", "fp32").exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoModelForCausalLM.from_pretrained(gpt_oss, dtype=torch.float32, quantization_config=transformers.Mxfp4Config(dequantize=True))
        ours, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dq", dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info
    tokens = TOKENS[:, :8]
    with torch.no_grad():
        assert cosine(ours(tokens).logits.flatten(), theirs(tokens).logits.flatten()) > 0.9999
