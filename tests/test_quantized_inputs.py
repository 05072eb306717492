"""Already-quantized and MoE inputs (FP8 block, compressed-tensors FP8, MXFP4; per-expert and 3-D
experts), end to end through `nvfp4 quantize`: every decode checked against the numpy oracles of
quantized_oracles.py (which tests/test_samples.py checks against transformers' and
compressed-tensors' own decoders), every NVFP4 output against nvfp4cli.quantize of the oracle's
values with a tensor scale computed here, and MoE names against vLLM's (docs/moe.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import nvfp4cli
from cli_runner import nvfp4
from quantized_oracles import ct_fp8_dequant, fp8_block_dequant, mxfp4_decode

SAMPLES = Path(__file__).resolve().parent.parent / "sample_ckpts"


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")) if path.is_dir() else [path]:
        with safe_open(file, "pt") as handle:
            tensors |= {name: handle.get_tensor(name) for name in handle.keys()}
    return tensors


def raw(tensor: torch.Tensor) -> np.ndarray:
    return tensor.view(torch.uint8).numpy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    results = {}
    for sample in ("deepseek-v3-fp8", "llama-fp8-ct", "gpt-oss-mxfp4", "qwen3-moe"):
        result = nvfp4("quantize", SAMPLES / sample, "-o", out / sample, "--json")
        assert result.exit_code == 0, result.output
        results[sample] = out / sample
    return results


def oracle_values(sample: str) -> dict[str, np.ndarray]:
    """Every quantized weight of a sample decoded by the numpy oracles, by weight name."""
    tensors = tensors_of(SAMPLES / sample)
    values = {}
    for name, tensor in tensors.items():
        if name.endswith("_scale_inv"):
            weight = name.removesuffix("_scale_inv")
            values[weight] = fp8_block_dequant(raw(tensors[weight]), tensors[name].numpy())
        elif name.endswith(".weight_scale") and tensors[name].dtype == torch.float32:
            weight = name.removesuffix("_scale")
            values[weight] = ct_fp8_dequant(raw(tensors[weight]), tensors[name].numpy())
        elif name.endswith("_blocks"):
            base = name.removesuffix("_blocks")
            values[base] = mxfp4_decode(tensors[name].numpy(), tensors[f"{base}_scales"].numpy())
    return values


def global_scales(path: Path) -> dict[str, float]:
    return {name.removesuffix(".weight_global_scale"): float(t) for name, t in tensors_of(path).items() if name.endswith(".weight_global_scale")}


def expected_nvfp4(values: dict[str, np.ndarray], group: list[str]) -> dict[str, nvfp4cli.QuantizedTensor]:
    """docs/format.md §2 on the oracle's float32 values, the group sharing pts from its largest amax."""
    amax = max(float(np.abs(values[name]).max()) for name in group)
    pts = torch.tensor(amax, dtype=torch.float32) / torch.tensor(2688.0)
    return {name: nvfp4cli.quantize(torch.from_numpy(values[name]), per_tensor_scale=pts) for name in group}


@pytest.mark.parametrize("sample", ["deepseek-v3-fp8", "llama-fp8-ct"])
def test_fp8_inputs_are_decoded_exactly_then_quantized(converted, sample):
    values = oracle_values(sample)
    output = tensors_of(converted[sample])
    groups: dict[str, list[str]] = {}
    for name in values:
        key = nvfp4cli.modules.fused_group_key(name) or name
        groups.setdefault(key, []).append(name)
    for group in groups.values():
        for name, q in expected_nvfp4(values, group).items():
            module = name.removesuffix(".weight")
            assert torch.equal(output[f"{module}.weight_packed"], q.packed), name
            assert torch.equal(output[f"{module}.weight_scale"].view(torch.uint8), q.scales.view(torch.uint8)), name
            assert torch.equal(output[f"{module}.weight_global_scale"], q.global_scale.reshape(1)), name
    # The FP8 layout leaves with its config: no FP8 tensor, no scale_inv, a compressed-tensors config.
    assert not any(t.dtype == torch.float8_e4m3fn and not n.endswith("weight_scale") for n, t in output.items())
    assert not any(n.endswith("_scale_inv") for n in output)
    config = json.loads((converted[sample] / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "nvfp4-pack-quantized"


def test_deepseek_moe_rules(converted):
    output = tensors_of(converted["deepseek-v3-fp8"])
    scales = global_scales(converted["deepseek-v3-fp8"])
    for layer in (1, 2):
        prefix = f"model.layers.{layer}"
        # Routers and their bias stay as they are.
        assert output[f"{prefix}.mlp.gate.weight"].dtype == torch.bfloat16
        assert output[f"{prefix}.mlp.gate.e_score_correction_bias"].dtype == torch.float32
        # gate/up share one global scale per expert and for the shared experts; MLA q_a and kv_a share one.
        for expert in [f"experts.{e}" for e in range(8)] + ["shared_experts"]:
            assert scales[f"{prefix}.mlp.{expert}.gate_proj"] == scales[f"{prefix}.mlp.{expert}.up_proj"]
        assert scales[f"{prefix}.self_attn.q_a_proj"] == scales[f"{prefix}.self_attn.kv_a_proj_with_mqa"]
        # ... and they are not one scale for the whole layer: each group has its own.
        assert len({scales[f"{prefix}.mlp.experts.{e}.gate_proj"] for e in range(8)}) > 1
    assert nvfp4("verify", converted["deepseek-v3-fp8"]).exit_code == 0


def test_qwen3_moe_experts_and_router(converted):
    scales = global_scales(converted["qwen3-moe"])
    output = tensors_of(converted["qwen3-moe"])
    for expert in range(8):
        base = f"model.layers.1.mlp.experts.{expert}"
        assert scales[f"{base}.gate_proj"] == scales[f"{base}.up_proj"]
        assert f"{base}.down_proj.weight_packed" in output
    assert output["model.layers.1.mlp.gate.weight"].dtype == torch.bfloat16
    assert nvfp4("verify", converted["qwen3-moe"]).exit_code == 0


def test_gpt_oss_experts_are_written_per_expert_and_losslessly(converted):
    """Expert e's gate/up are rows 0::2 / 1::2 of its gate_up (transformers' split, docs/moe.md);
    blocks within 17 binades of their expert's largest come back bit for bit."""
    stored = tensors_of(SAMPLES / "gpt-oss-mxfp4")
    output = tensors_of(converted["gpt-oss-mxfp4"])
    exact = total = 0
    for layer in (0, 1):
        prefix = f"model.layers.{layer}.mlp.experts"
        gate_up = mxfp4_decode(stored[f"{prefix}.gate_up_proj_blocks"].numpy(), stored[f"{prefix}.gate_up_proj_scales"].numpy())
        down = mxfp4_decode(stored[f"{prefix}.down_proj_blocks"].numpy(), stored[f"{prefix}.down_proj_scales"].numpy())
        for expert in range(gate_up.shape[0]):
            wanted = {"gate_proj": gate_up[expert, 0::2], "up_proj": gate_up[expert, 1::2], "down_proj": down[expert]}
            for part, values in wanted.items():
                module = f"{prefix}.{expert}.{part}"
                q = nvfp4cli.QuantizedTensor(
                    output[f"{module}.weight_packed"], output[f"{module}.weight_scale"], 1.0 / output[f"{module}.weight_global_scale"].reshape(()), "rn"
                )
                decoded = nvfp4cli.dequantize(q).numpy()
                blocks_equal = (decoded.reshape(-1, 16) == values.reshape(-1, 16)).all(axis=1)
                exact, total = exact + int(blocks_equal.sum()), total + blocks_equal.size
                if layer == 1:  # every exponent span there is within 17
                    assert np.array_equal(decoded, values), module
            # gate and up of one expert share a power-of-two tensor scale
            gate_scale = float(output[f"{prefix}.{expert}.gate_proj.weight_global_scale"])
            assert gate_scale == float(output[f"{prefix}.{expert}.up_proj.weight_global_scale"])
            assert math.log2(gate_scale).is_integer()
        # Biases, sinks and the router stay as they are.
        assert torch.equal(output[f"{prefix}.gate_up_proj_bias"], stored[f"{prefix}.gate_up_proj_bias"])
        assert torch.equal(output[f"model.layers.{layer}.self_attn.sinks"], stored[f"model.layers.{layer}.self_attn.sinks"])
        assert torch.equal(output[f"model.layers.{layer}.mlp.router.weight"], stored[f"model.layers.{layer}.mlp.router.weight"])
    # The sample holds a few blocks 18..25 binades down: all else is exact, and inspect says how much.
    assert exact < total and exact / total > 0.99
    report = json.loads(nvfp4("inspect", SAMPLES / "gpt-oss-mxfp4", "--json").stdout)
    assert report["totals"]["mxfp4_exact_share"] == pytest.approx(exact / total, abs=2 / total)


def test_llama4_float_experts_split_in_halves_and_transposed(tmp_path):
    # transformers' Llama-4 layout: gate_up_proj [E, H, 2I] = gate (first half) then up; down [E, I, H].
    g = torch.Generator().manual_seed(4)
    experts, hidden, inter = 3, 64, 32
    gate_up = torch.randn(experts, hidden, 2 * inter, generator=g).to(torch.bfloat16)
    down = torch.randn(experts, inter, hidden, generator=g).to(torch.bfloat16)
    prefix = "language_model.model.layers.0.feed_forward.experts"
    model = tmp_path / "llama4"
    model.mkdir()
    save_file({f"{prefix}.gate_up_proj": gate_up, f"{prefix}.down_proj": down}, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "llama4"}))
    assert nvfp4("quantize", model, "-o", tmp_path / "out").exit_code == 0
    output = tensors_of(tmp_path / "out")
    for e in range(experts):
        wanted = {"gate_proj": gate_up[e, :, :inter].T, "up_proj": gate_up[e, :, inter:].T, "down_proj": down[e].T}
        group = [f"{prefix}.{e}.gate_proj", f"{prefix}.{e}.up_proj"]
        amax = {"gate_up": max(float(wanted[p].abs().max()) for p in ("gate_proj", "up_proj")), "down": float(wanted["down_proj"].abs().max())}
        for part, values in wanted.items():
            pts = torch.tensor(amax["down" if part == "down_proj" else "gate_up"]) / torch.tensor(2688.0)
            q = nvfp4cli.quantize(values.contiguous(), per_tensor_scale=pts)
            assert torch.equal(output[f"{prefix}.{e}.{part}.weight_packed"], q.packed), (e, part)
        assert float(output[f"{group[0]}.weight_global_scale"]) == float(output[f"{group[1]}.weight_global_scale"])
    assert f"{prefix}.gate_up_proj" not in output


def test_dequantize_inspect_and_diff_read_quantized_inputs(converted, tmp_path):
    values = oracle_values("llama-fp8-ct")
    assert nvfp4("dequantize", SAMPLES / "llama-fp8-ct", "-o", tmp_path / "dq", "--dtype", "fp32").exit_code == 0
    restored = tensors_of(tmp_path / "dq")
    for name, expected in values.items():
        assert np.array_equal(restored[name].numpy(), expected), name
    assert not any(n.endswith("weight_scale") for n in restored)
    report = json.loads(nvfp4("inspect", SAMPLES / "deepseek-v3-fp8", "--json").stdout)
    formats = {row["name"]: row["format"] for row in report["tensors"]}
    assert formats["model.layers.1.mlp.experts.0.gate_proj.weight"] == "fp8-block"
    diff = nvfp4("diff", SAMPLES / "deepseek-v3-fp8", converted["deepseek-v3-fp8"], "--json", "--min-sqnr", "15")
    assert diff.exit_code == 0, diff.output
    summary = json.loads(diff.stdout)["summary"]
    assert summary["only_in_a"] == 0 and summary["only_in_b"] == 0


def write_model(directory: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    directory.mkdir()
    save_file(tensors, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize(
    "tensors, config, message",
    [
        ({"l.weight": torch.zeros(16, 32)}, {"quantization_config": {"quant_method": "gptq"}}, "quant_method 'gptq'"),
        ({"l.weight": torch.zeros(16, 32).to(torch.float8_e4m3fn)}, {}, "has no scale nvfp4 knows"),
        ({"l.weight": torch.zeros(16, 32)}, {"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized"}}, "'pack-quantized'"),
        (
            {"l.weight": torch.zeros(200, 32).to(torch.float8_e4m3fn), "l.weight_scale_inv": torch.ones(1, 1)},
            {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
            "needs F32 [2, 1]",
        ),
    ],
)
def test_undecodable_quantized_inputs_are_refused(tmp_path, tensors, config, message):
    model = write_model(tmp_path / "m", tensors, config)
    result = nvfp4("quantize", model, "-o", tmp_path / "out")
    assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.output
    assert not (tmp_path / "out").exists()


def test_tied_embeddings_stay_in_high_precision_even_when_included(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {"model.embed_tokens.weight": torch.randn(64, 32, generator=g), "model.layers.0.mlp.down_proj.weight": torch.randn(32, 64, generator=g)}
    model = write_model(tmp_path / "m", tensors, {"model_type": "llama", "tie_word_embeddings": True})
    result = nvfp4("quantize", model, "-o", tmp_path / "out", "--include", "*.weight", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["quantized"] == ["model.layers.0.mlp.down_proj.weight"]
    assert "tie_word_embeddings" in {item["name"]: item["reason"] for item in report["skipped"]}["model.embed_tokens.weight"]
