"""The quantized and MoE sample checkpoints (sample_ckpts/make_sample.py) and the numpy decoders in
quantized_oracles.py: each decoder agrees bit for bit in fp32 with an independent one that ships
with transformers or compressed-tensors, on every quantized tensor of the samples; the samples load
in transformers under their real names; and the committed bytes are what the script makes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quantized_oracles import E2M1, E4M3, ct_fp8_dequant, fp8_block_dequant, mxfp4_decode

SAMPLES = Path(__file__).resolve().parent.parent / "sample_ckpts"
QUANTIZED_SAMPLES = ("deepseek-v3-fp8", "gpt-oss-mxfp4", "qwen3-moe", "llama-fp8-ct")
MIB = 1 << 20


def read_tensors(sample: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted((SAMPLES / sample).glob("*.safetensors")):
        with safe_open(path, "pt") as handle:
            tensors |= {name: handle.get_tensor(name) for name in handle.keys()}
    return tensors


def config_of(sample: str) -> dict:
    return json.loads((SAMPLES / sample / "config.json").read_text())


def raw(tensor: torch.Tensor) -> np.ndarray:
    return tensor.view(torch.uint8).numpy()


def assert_bitwise_equal(ours: np.ndarray, theirs: torch.Tensor, name: str) -> None:
    theirs = theirs.detach().to(torch.float32).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape, name
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), name


def load_transformers_model(path: Path, **kwargs):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, dtype=torch.float32, **kwargs)
    assert not any(info.values()), info  # no missing, unexpected or mismatched names
    return model


# --- the oracles' value tables, against torch's own float8 cast and the E2M1 grid -------------


def test_e4m3_table_matches_torch_float8():
    from_torch = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32).numpy()
    assert np.array_equal(np.isnan(E4M3), np.isnan(from_torch)) and np.isnan(E4M3).sum() == 2
    finite = ~np.isnan(E4M3)
    assert np.array_equal(E4M3[finite].view(np.uint32), from_torch[finite].view(np.uint32))
    assert E4M3[0x7E] == 448.0 and E4M3[0x01] == 2.0**-9 and E4M3[0x38] == 1.0


def test_e2m1_table_is_the_fp4_grid():
    grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert E2M1[:8].tolist() == grid and E2M1[8:].tolist() == [-v for v in grid]
    assert np.signbit(E2M1[8])  # code 8 is -0.0


def test_oracles_refuse_malformed_input():
    with pytest.raises(TypeError):
        fp8_block_dequant(np.zeros((4, 4), np.float32), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError):
        fp8_block_dequant(np.zeros((130, 16), np.uint8), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError):
        ct_fp8_dequant(np.zeros((4, 16), np.uint8), np.ones((2, 1), np.float32))
    with pytest.raises(ValueError):
        mxfp4_decode(np.zeros((2, 3, 16), np.uint8), np.zeros((2, 4), np.uint8))


def test_mxfp4_decode_by_hand():
    blocks = np.zeros((1, 16), np.uint8)
    blocks[0, 0] = 0x72  # element 0: code 2 (1.0), element 1: code 7 (6.0)
    blocks[0, 15] = 0x9F  # element 30: code 15 (-6.0), element 31: code 9 (-0.5)
    decoded = mxfp4_decode(blocks, np.array([127 - 3], np.uint8))
    assert decoded.shape == (32,)
    assert decoded[[0, 1, 30, 31]].tolist() == [1.0 / 8, 6.0 / 8, -6.0 / 8, -0.5 / 8]
    assert not decoded[2:30].any()
    assert np.isnan(mxfp4_decode(blocks, np.array([255], np.uint8))).all()


# --- each oracle against the decoders transformers and compressed-tensors ship ---------------


def test_fp8_block_oracle_matches_transformers_dequantizer():
    from transformers.integrations.finegrained_fp8 import _dequantize_fp8_weight

    tensors = read_tensors("deepseek-v3-fp8")
    modules = [name.removesuffix(".weight_scale_inv") for name in tensors if name.endswith(".weight_scale_inv")]
    shapes = {tuple(tensors[f"{m}.weight"].shape) for m in modules}
    # The sample must exercise partial edge blocks in both dimensions, and K stays a multiple of 16.
    assert any(rows % 128 for rows, _ in shapes) and any(cols % 128 for _, cols in shapes)
    assert all(cols % 16 == 0 for _, cols in shapes)
    for module in modules:
        weight, scale_inv = tensors[f"{module}.weight"], tensors[f"{module}.weight_scale_inv"]
        assert weight.dtype == torch.float8_e4m3fn and scale_inv.dtype == torch.float32, module
        theirs = _dequantize_fp8_weight(weight.clone(), scale_inv, [128, 128], torch.float32)
        assert_bitwise_equal(fp8_block_dequant(raw(weight), scale_inv.numpy()), theirs, module)


def test_ct_fp8_oracle_matches_compressed_tensors():
    from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig

    config = QuantizationConfig.model_validate(config_of("llama-fp8-ct")["quantization_config"])
    schemes = {target: scheme for scheme in config.config_groups.values() for target in scheme.targets}
    tensors = read_tensors("llama-fp8-ct")
    scale_shapes = set()
    for name in [n for n in tensors if n.endswith(".weight_scale")]:
        module = name.removesuffix(".weight_scale")
        scheme = schemes.get(module, schemes["Linear"])  # an exact module name outranks the class target
        weight, scale = tensors[f"{module}.weight"], tensors[name]
        expected_shape = (1,) if scheme.weights.strategy == "tensor" else (weight.shape[0], 1)
        assert tuple(scale.shape) == expected_shape, name
        scale_shapes.add(len(scale.shape) == 1)
        theirs = FloatQuantizationCompressor.decompress({"weight": weight, "weight_scale": scale}, scheme)["weight"]
        assert_bitwise_equal(ct_fp8_dequant(raw(weight), scale.numpy()), theirs, module)
    assert scale_shapes == {True, False}  # both per-channel and per-tensor scales are covered


def mxfp4_tensors() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    tensors = read_tensors("gpt-oss-mxfp4")
    return {n.removesuffix("_blocks"): (tensors[n], tensors[n.replace("_blocks", "_scales")]) for n in tensors if n.endswith("_blocks")}


def test_mxfp4_oracle_matches_transformers_decoder():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    pairs = mxfp4_tensors()
    assert len(pairs) == 4
    for name, (blocks, scales) in pairs.items():
        # transformers returns gpt-oss's in-memory [E, in, out]; on disk (and here) out precedes in.
        theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
        assert_bitwise_equal(mxfp4_decode(blocks.numpy(), scales.numpy()).swapaxes(1, 2), theirs, name)


def test_mxfp4_sample_block_exponents_span_a_realistic_range():
    pairs = mxfp4_tensors()
    scales = pairs["model.layers.0.mlp.experts.gate_up_proj"][1].int()
    zero_blocks = ~pairs["model.layers.0.mlp.experts.gate_up_proj"][0].reshape(*scales.shape, 16).bool().any(-1)
    assert zero_blocks.sum() == 1
    span = scales.max() - scales[~zero_blocks]
    assert (span > 17).sum() >= 3 and (span <= 17).float().mean() > 0.99
    for name in ("model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"):
        scales = pairs[name][1].int()
        assert 8 <= scales.max() - scales.min() <= 17, name  # varied, yet losslessly re-encodable


# --- configs and names, as transformers and compressed-tensors read them ----------------------


@pytest.mark.parametrize("sample", QUANTIZED_SAMPLES)
def test_sample_config_loads_with_autoconfig(sample):
    from transformers import AutoConfig

    on_disk = config_of(sample)
    config = AutoConfig.from_pretrained(SAMPLES / sample)
    assert config.model_type == on_disk["model_type"] and config.architectures == on_disk["architectures"]
    method = on_disk.get("quantization_config", {}).get("quant_method")
    if method == "fp8":
        from transformers import FineGrainedFP8Config

        assert FineGrainedFP8Config.from_dict(on_disk["quantization_config"]).weight_block_size == [128, 128]
    elif method == "mxfp4":
        from transformers import Mxfp4Config

        assert "model.layers.*.mlp.router" in Mxfp4Config.from_dict(on_disk["quantization_config"]).modules_to_not_convert
    elif method == "compressed-tensors":
        from compressed_tensors.quantization import QuantizationConfig

        assert QuantizationConfig.model_validate(on_disk["quantization_config"]).format == "float-quantized"


def test_gpt_oss_sample_loads_in_transformers_as_the_oracle_decodes_it():
    from transformers import Mxfp4Config

    model = load_transformers_model(SAMPLES / "gpt-oss-mxfp4", quantization_config=Mxfp4Config(dequantize=True))
    parameters = dict(model.named_parameters())
    for name, (blocks, scales) in mxfp4_tensors().items():
        assert_bitwise_equal(mxfp4_decode(blocks.numpy(), scales.numpy()).swapaxes(1, 2), parameters[name], name)


def test_bf16_moe_and_ct_fp8_samples_load_in_transformers():
    model = load_transformers_model(SAMPLES / "qwen3-moe")
    assert model.config.num_experts == 8
    model = load_transformers_model(SAMPLES / "llama-fp8-ct")
    assert model.model.layers[1].self_attn.o_proj.weight_scale.shape == (1,)


def test_deepseek_sample_names_load_in_transformers(tmp_path):
    """transformers 5 needs accelerate for an FP8 checkpoint and its own on-load FP8 dequantizer
    misreads partial edge blocks, so the names are checked on an oracle-dequantized copy."""
    tensors = read_tensors("deepseek-v3-fp8")
    dequantized = {}
    for name, tensor in tensors.items():
        if name.endswith(".weight_scale_inv"):
            continue
        scale_inv = tensors.get(f"{name}_scale_inv")
        dequantized[name] = tensor if scale_inv is None else torch.from_numpy(fp8_block_dequant(raw(tensor), scale_inv.numpy()))
    save_file(dequantized, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = config_of("deepseek-v3-fp8")
    del config["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_transformers_model(tmp_path)
    assert model.model.layers[1].mlp.gate.e_score_correction_bias.shape == (8,)


# --- the committed samples are the script's output, and small --------------------------------


def test_committed_samples_are_what_make_sample_writes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLES / "make_sample.py")
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    monkeypatch.setattr(make_sample, "HERE", tmp_path)
    make_sample.main()
    for sample in ("tiny-llama", *QUANTIZED_SAMPLES):
        written = sorted(p.name for p in (tmp_path / sample).iterdir())
        assert written == sorted(p.name for p in (SAMPLES / sample).iterdir()), sample
        for name in written:
            assert (tmp_path / sample / name).read_bytes() == (SAMPLES / sample / name).read_bytes(), f"{sample}/{name}"


def test_samples_stay_small():
    sizes = {sample: sum(p.stat().st_size for p in (SAMPLES / sample).iterdir()) for sample in QUANTIZED_SAMPLES}
    assert all(size < 2 * MIB for size in sizes.values()), sizes
    assert sum(sizes.values()) < 6 * MIB, sizes
