"""nvfp4 convert against independent inputs and oracles: llm-compressor's MoE output
(tests/fixtures), hand-written checkpoints (safetensors' save_file), compressed-tensors' own FP4
unpacking for decoded values, numpy float32 reciprocals for the tensor-scale conventions, and a
brute-force nearest-E4M3 search for the rescaled block scales of --fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from compressed_tensors.compressors import unpack_fp4_from_uint8
from safetensors import safe_open
from safetensors.torch import save_file

from cli_runner import SAMPLE, nvfp4
from nvfp4cli.api import quantize
from nvfp4cli.relayout import e4m3_nearest
from test_verify import CT_CONFIG, FIXTURE, copy_config, ct_tensors, write
from test_verify import findings as findings_of

E4M3_FLOATS = torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).double().numpy()


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    out = {}
    for file in files:
        with safe_open(file, "pt") as handle:
            out.update({name: handle.get_tensor(name) for name in handle.keys()})
    return out


def raw(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(torch.uint8).numpy().tobytes()


def ct_modules(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [name.removesuffix(".weight_packed") for name in tensors if name.endswith(".weight_packed")]


def ct_decode(tensors: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """compressed-tensors' own unpacking, then e2m1 * scale / global_scale per 16-element block."""
    packed = tensors[f"{module}.weight_packed"]
    rows, cols = packed.shape[0], packed.shape[1] * 2
    values = unpack_fp4_from_uint8(packed, rows, cols, torch.float32)
    scales = tensors[f"{module}.weight_scale"].float() / tensors[f"{module}.weight_global_scale"].float()
    return (values.view(rows, -1, 16) * scales.unsqueeze(-1)).view(rows, cols).double()


def modelopt_decode(tensors: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    packed = tensors[f"{module}.weight"]
    rows, cols = packed.shape[0], packed.shape[1] * 2
    values = unpack_fp4_from_uint8(packed, rows, cols, torch.float32).double()
    scales = tensors[f"{module}.weight_scale"].double() * tensors[f"{module}.weight_scale_2"].double()
    return (values.view(rows, -1, 16) * scales.unsqueeze(-1)).view(rows, cols)


def sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    return 10 * math.log10(float(ref.square().sum()) / float((ref - test).square().sum()))


# ---- re-layout: byte for byte ------------------------------------------------------------------------


def test_compressed_tensors_to_modelopt_and_back(tmp_path):
    source = tensors_of(FIXTURE)
    assert nvfp4("convert", FIXTURE, "-o", tmp_path / "mo", "--format", "modelopt").exit_code == 0
    assert nvfp4("convert", tmp_path / "mo", "-o", tmp_path / "ct", "--format", "compressed-tensors").exit_code == 0
    mo, back = tensors_of(tmp_path / "mo"), tensors_of(tmp_path / "ct")
    assert set(back) == set(source)
    modules = ct_modules(source)
    assert len(modules) == 35
    for module in modules:
        gs = np.float32(source[f"{module}.weight_global_scale"].item())
        # ModelOpt stores pts = the float32 reciprocal of compressed-tensors' 1/pts, 0-d.
        assert raw(mo[f"{module}.weight"]) == raw(source[f"{module}.weight_packed"])
        assert raw(mo[f"{module}.weight_scale"]) == raw(source[f"{module}.weight_scale"])
        assert mo[f"{module}.weight_scale_2"].shape == () and mo[f"{module}.weight_scale_2"].item() == np.float32(1) / gs
        # and back: the same codes and block scales, the global scale within one float32 ulp.
        assert raw(back[f"{module}.weight_packed"]) == raw(source[f"{module}.weight_packed"])
        assert raw(back[f"{module}.weight_scale"]) == raw(source[f"{module}.weight_scale"])
        again = np.float32(back[f"{module}.weight_global_scale"].item())
        assert abs(again - gs) <= np.spacing(gs)
        # Both layouts decode to the same values (float32 rounding of the reciprocal only).
        assert torch.allclose(modelopt_decode(mo, module), ct_decode(source, module), rtol=1e-6, atol=0)
    for name in source:  # every other tensor copied byte for byte
        if not any(name.startswith(module + ".") for module in modules):
            assert raw(mo[name]) == raw(source[name]) and raw(back[name]) == raw(source[name])
    config = json.loads((tmp_path / "mo" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "modelopt" and "lm_head" in config["ignore"]
    assert json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "W4A16_NVFP4"
    assert not (tmp_path / "ct" / "hf_quant_config.json").exists()
    assert json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["format"] == "nvfp4-pack-quantized"
    assert (tmp_path / "ct" / "generation_config.json").is_file()


def test_global_scale_round_trip_within_one_ulp_everywhere(tmp_path):
    """Random global scales over the float32 range: 1/(1/x) is within one ulp of x."""
    generator = torch.Generator().manual_seed(5)
    tensors = ct_tensors()
    exponents = torch.randint(-100, 100, (7,), generator=generator).double()
    mantissas = 1 + torch.rand(7, generator=generator, dtype=torch.float64)
    modules = ct_modules(tensors)
    for module, value in zip(modules, (mantissas * 2.0**exponents).tolist()):
        tensors[f"{module}.weight_global_scale"] = torch.tensor([value], dtype=torch.float32)
    save_file(tensors, tmp_path / "in.safetensors")
    assert nvfp4("convert", tmp_path / "in.safetensors", "-o", tmp_path / "mo.safetensors", "--format", "modelopt").exit_code == 0
    assert nvfp4("convert", tmp_path / "mo.safetensors", "-o", tmp_path / "ct.safetensors").exit_code == 0
    back = tensors_of(tmp_path / "ct.safetensors")
    for module in modules:
        gs = np.float32(tensors[f"{module}.weight_global_scale"].item())
        assert abs(np.float32(back[f"{module}.weight_global_scale"].item()) - gs) <= np.spacing(gs)


@pytest.mark.parametrize(("first", "second"), [("compressed-tensors", "modelopt"), ("modelopt", "compressed-tensors")])
def test_nvfp4_quantize_output_converts_and_verifies(tmp_path, first, second):
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "q", "--format", first).exit_code == 0
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "direct", "--format", second).exit_code == 0
    assert nvfp4("convert", tmp_path / "q", "-o", tmp_path / "c", "--format", second).exit_code == 0
    assert nvfp4("verify", tmp_path / "c").exit_code == 0
    converted, direct = tensors_of(tmp_path / "c"), tensors_of(tmp_path / "direct")
    assert set(converted) == set(direct)
    for name, tensor in direct.items():
        if tensor.dtype == torch.float32 and tensor.numel() == 1:  # tensor scales: one reciprocal apart
            assert abs(np.float32(converted[name].item()) - np.float32(tensor.item())) <= np.spacing(np.float32(tensor.item()))
        else:
            assert raw(converted[name]) == raw(tensor), name
    assert json.loads((tmp_path / "c" / "config.json").read_text())["quantization_config"] == json.loads((tmp_path / "direct" / "config.json").read_text())["quantization_config"]


# ---- --fix ------------------------------------------------------------------------------------------


def nearest_e4m3_bytes(targets: np.ndarray) -> np.ndarray:
    """Brute force: the byte of the E4M3 value nearest to each target, ties to the even byte."""
    distance = np.abs(E4M3_FLOATS[None, :] - targets[:, None])
    nearest = distance == distance.min(axis=1, keepdims=True)
    index, never = np.arange(len(E4M3_FLOATS))[None, :], len(E4M3_FLOATS)
    even = np.where(nearest & (index % 2 == 0), index, never).min(axis=1)
    return np.where(even < never, even, np.where(nearest, index, never).min(axis=1)).astype(np.uint8)


def test_e4m3_nearest_matches_torch_cast_and_brute_force():
    generator = torch.Generator().manual_seed(9)
    values = torch.rand(20000, generator=generator, dtype=torch.float64) * 448
    grid = torch.from_numpy(E4M3_FLOATS)
    ties = (grid[:-1] + grid[1:]) / 2  # exact midpoints: ties to even
    tiny = torch.rand(2000, generator=generator, dtype=torch.float64) * 2.0**-6  # subnormal range
    for sample in (values.float().double(), ties, tiny.float().double()):
        ours = e4m3_nearest(sample).view(torch.uint8)
        assert torch.equal(ours, sample.float().to(torch.float8_e4m3fn).view(torch.uint8))  # torch's RNE cast from float32
        assert np.array_equal(ours.numpy(), nearest_e4m3_bytes(sample.numpy()))


def test_fix_on_llm_compressor_output(tmp_path):
    source = tensors_of(FIXTURE)
    result = nvfp4("convert", FIXTURE, "-o", tmp_path / "fixed", "--format", "modelopt", "--fix", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert nvfp4("verify", tmp_path / "fixed").exit_code == 0  # clean for vLLM: the defects are gone
    fixed = tensors_of(tmp_path / "fixed")
    assert len(report["repairs"]) == 8
    for row in report["repairs"]:
        parent = row["group"].removesuffix(".gate_up_proj")
        members = [f"{parent}.gate_proj", f"{parent}.up_proj"]
        shared = {fixed[f"{member}.weight_scale_2"].item() for member in members}
        assert len(shared) == 1 and shared == {row["per_tensor_scale"]}
        for member in members:
            assert raw(fixed[f"{member}.weight"]) == raw(source[f"{member}.weight_packed"])  # every FP4 code kept
            pts_old = 1.0 / float(np.float32(source[f"{member}.weight_global_scale"].item()))
            ratio = pts_old / row["per_tensor_scale"]
            assert ratio <= 1 + 1e-6  # the shared pts is at least each member's: no block scale can overflow
            targets = source[f"{member}.weight_scale"].double().numpy().ravel() * ratio
            expected = nearest_e4m3_bytes(targets)
            got = fixed[f"{member}.weight_scale"].view(torch.uint8).numpy().ravel()
            assert (got == expected).mean() > 0.999  # float64 vs exact-ratio ties aside
            # The reported SQNR is the written weight's against the input's, both decoded independently.
            ours, reported = sqnr(ct_decode(source, member), modelopt_decode(fixed, member)), row["sqnr_db"][f"{member}.weight"]
            if ours > 100:  # block scales kept: only the float32 rounding of 1/pts, at float32 noise level
                assert reported is None or reported > 100
            else:
                assert reported == pytest.approx(ours, abs=1e-4)  # its decode is float32
    assert report["min_sqnr_db"] >= 30  # the target, on 32x64 experts 2.8x to 4.5x apart
    # Router and embedding stored in float: the input's values (compressed-tensors' decode) in bf16.
    for module in ("model.layers.0.mlp.gate", "model.embed_tokens"):
        assert fixed[f"{module}.weight"].dtype == torch.bfloat16
        assert torch.equal(fixed[f"{module}.weight"], ct_decode(source, module).bfloat16())
    assert set(report["dequantized"]) == {"model.embed_tokens.weight", "model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"}


def test_fix_keeps_sqnr_above_30_db_on_realistic_weights(tmp_path):
    """Gaussian 512x1024 gate/up pairs quantized with their own scales (2x to 5x apart), as a
    tool without fused scales writes them: each repaired weight stays >= 30 dB from its input."""
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    for index, gap in enumerate((2.3, 3.1, 4.7)):
        for member, spread in (("gate_proj", 1.0), ("up_proj", gap)):
            q = quantize(torch.randn(512, 1024, generator=generator) * spread, "rn")
            module = f"model.layers.{index}.mlp.{member}"
            tensors.update({f"{module}.weight_packed": q.packed, f"{module}.weight_scale": q.scales, f"{module}.weight_global_scale": q.global_scale.reshape(1)})
    write(tmp_path / "in", tensors, copy_config(ignore=[]))
    report = json.loads(nvfp4("convert", tmp_path / "in", "-o", tmp_path / "out", "--fix", "--json").stdout)
    assert len(report["repairs"]) == 3 and report["min_sqnr_db"] >= 30
    out = tensors_of(tmp_path / "out")
    for row in report["repairs"]:
        for name, value in row["sqnr_db"].items():
            module = name.removesuffix(".weight")
            independent = ct_decode(tensors, module), ct_decode(out, module)
            assert value is None and torch.equal(*independent) or value == pytest.approx(sqnr(*independent), abs=1e-4)


# ---- refusals, staging ------------------------------------------------------------------------------


def broken_nan(tensors, config):
    raw_scales = tensors["model.layers.0.self_attn.o_proj.weight_scale"].view(torch.uint8).clone()
    raw_scales[0, 0] = 0xFF
    tensors["model.layers.0.self_attn.o_proj.weight_scale"] = raw_scales.view(torch.float8_e4m3fn)


def broken_missing(tensors, config):
    del tensors["model.layers.0.mlp.up_proj.weight_global_scale"]


def broken_zero_scale(tensors, config):
    tensors["model.layers.0.mlp.down_proj.weight_global_scale"] = torch.zeros(1)


@pytest.mark.parametrize("defect", [broken_nan, broken_missing, broken_zero_scale])
@pytest.mark.parametrize("fix", [False, True])
def test_unrepairable_input_writes_nothing(tmp_path, defect, fix):
    tensors, config = ct_tensors(), copy_config()
    defect(tensors, config)
    source = write(tmp_path / "in", tensors, config)
    result = nvfp4("convert", source, "-o", tmp_path / "out", "--format", "modelopt", *(["--fix"] if fix else []))
    assert result.exit_code == 1 and result.stderr.startswith("nvfp4: error:") and len(result.stderr.strip().splitlines()) == 1
    assert "cannot convert" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in"]  # no output, no staging left


def test_fix_quantizes_the_float_member_of_a_partly_nvfp4_fused_group(tmp_path):
    """v_proj in bf16 beside NVFP4 q/k (vLLM refuses the layer): --fix quantizes v with the
    group's shared scale, which torchao reproduces bit for bit from the same pts."""
    torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    tensors = ct_tensors()
    v = "model.layers.0.self_attn.v_proj"
    for suffix in ("packed", "scale", "global_scale"):
        del tensors[f"{v}.weight_{suffix}"]
    tensors[f"{v}.weight"] = (torch.randn(32, 64, generator=torch.Generator().manual_seed(4)) * 0.05).bfloat16()
    source = write(tmp_path / "in", tensors, copy_config(ignore=["lm_head", v]))
    assert nvfp4("verify", source).exit_code == 1  # the partly quantized group
    result = nvfp4("convert", source, "-o", tmp_path / "fixed", "--fix", "--json")
    assert result.exit_code == 0, result.output
    report, fixed = json.loads(result.stdout), tensors_of(tmp_path / "fixed")
    assert nvfp4("verify", tmp_path / "fixed").exit_code == 0
    (row,) = report["repairs"]
    assert row["quantized_from_float"] == [f"{v}.weight"]
    global_scale = fixed[f"{v}.weight_global_scale"]
    for member in ("q_proj", "k_proj"):
        assert torch.equal(fixed[f"model.layers.0.self_attn.{member}.weight_global_scale"], global_scale)
    pts = 1.0 / global_scale.reshape(())  # what compressed-tensors' decode divides by
    scales, data = torchao_nvfp4.nvfp4_quantize(tensors[f"{v}.weight"].contiguous(), 16, pts)
    assert raw(fixed[f"{v}.weight_packed"]) == raw(data) and raw(fixed[f"{v}.weight_scale"]) == raw(scales)
    # The shared pts covers v's amax: no block of v clips.
    assert float(pts) >= float(tensors[f"{v}.weight"].float().abs().amax()) / 2688 * (1 - 2**-23)
    without_fix = nvfp4("convert", source, "-o", tmp_path / "plain", "--format", "modelopt")
    assert without_fix.exit_code == 0 and f"{v}.weight" in tensors_of(tmp_path / "plain")  # re-laid out as it is


def test_fix_refuses_a_float_member_it_cannot_quantize(tmp_path):
    tensors = ct_tensors()
    v = "model.layers.0.self_attn.v_proj"
    for suffix in ("packed", "scale", "global_scale"):
        del tensors[f"{v}.weight_{suffix}"]
    tensors[f"{v}.weight"] = torch.zeros(32, 64, dtype=torch.int8)
    result = nvfp4("convert", write(tmp_path / "in", tensors, copy_config()), "-o", tmp_path / "fixed", "--fix")
    assert result.exit_code == 1 and "v_proj" in result.stderr and not (tmp_path / "fixed").exists()


def test_output_rules_match_quantize(tmp_path):
    source = write(tmp_path / "in", ct_tensors(), CT_CONFIG)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    result = nvfp4("convert", source, "-o", out, "--format", "modelopt")
    assert result.exit_code == 2 and "--force" in result.stderr and (out / "keep").read_text() == "old"
    assert nvfp4("convert", source, "-o", out, "--format", "modelopt", "--force").exit_code == 0
    assert not (out / "keep").exists() and (out / "hf_quant_config.json").is_file()
    assert nvfp4("convert", source, "-o", tmp_path / "x.safetensors").exit_code == 2  # a directory input gives a directory
    assert nvfp4("convert", SAMPLE, "-o", tmp_path / "f").exit_code == 1  # float: nothing to re-lay out
    assert nvfp4("convert", source, "-o", tmp_path / "g", "--format", "gguf").exit_code == 2


def w4a4_checkpoint(directory: Path, shared: bool = True) -> tuple[Path, dict[str, torch.Tensor]]:
    """The hand-written checkpoint with an activation scale (2688 / amax) on every NVFP4 weight,
    one per fused group when shared (as calibration writes them), else one per weight."""
    tensors = ct_tensors()
    generator = torch.Generator().manual_seed(8)
    by_group: dict[str, torch.Tensor] = {}
    for module in ct_modules(tensors):
        group = module.rpartition(".")[0] + {"q_proj": ".qkv", "k_proj": ".qkv", "v_proj": ".qkv", "gate_proj": ".gate_up", "up_proj": ".gate_up"}.get(module.rpartition(".")[2], module) if shared else module
        if group not in by_group:
            by_group[group] = (2688 / (1 + 10 * torch.rand(1, generator=generator))).float()
        tensors[f"{module}.input_global_scale"] = by_group[group].clone()
    config = copy_config()
    config["config_groups"]["group_0"]["input_activations"] = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "symmetric": True, "dynamic": "local"}
    return write(directory, tensors, config), tensors


def test_w4a4_converts_with_its_activation_scales(tmp_path):
    source, tensors = w4a4_checkpoint(tmp_path / "in")
    assert nvfp4("verify", source).exit_code == 0
    assert nvfp4("convert", source, "-o", tmp_path / "mo", "--format", "modelopt").exit_code == 0
    assert nvfp4("convert", tmp_path / "mo", "-o", tmp_path / "ct").exit_code == 0
    mo, back = tensors_of(tmp_path / "mo"), tensors_of(tmp_path / "ct")
    for module in ct_modules(tensors):
        igs = np.float32(tensors[f"{module}.input_global_scale"].item())
        assert mo[f"{module}.input_scale"].shape == () and mo[f"{module}.input_scale"].item() == np.float32(1) / igs  # amax / 2688
        assert back[f"{module}.input_global_scale"].shape == (1,)
        assert abs(np.float32(back[f"{module}.input_global_scale"].item()) - igs) <= np.spacing(igs)
    assert json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "NVFP4"
    assert json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]["input_activations"]["num_bits"] == 4
    assert nvfp4("verify", tmp_path / "mo", "--target", "trtllm").exit_code == 0  # W4A4 ModelOpt: what TensorRT-LLM runs
    assert nvfp4("verify", tmp_path / "ct").exit_code == 0


def test_w4a4_fix_shares_the_largest_activation_amax(tmp_path):
    source, tensors = w4a4_checkpoint(tmp_path / "in", shared=False)
    code, found, _ = findings_of(source)
    assert code == 1 and found == {("model.layers.0.self_attn.qkv_proj", "fused"), ("model.layers.0.mlp.gate_up_proj", "fused")}
    assert nvfp4("convert", source, "-o", tmp_path / "fixed", "--format", "modelopt", "--fix").exit_code == 0
    assert nvfp4("verify", tmp_path / "fixed", "--target", "trtllm").exit_code == 0
    fixed = tensors_of(tmp_path / "fixed")
    for members in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
        modules = [name for name in ct_modules(tensors) if name.rpartition(".")[2] in members]
        largest_amax = max(2688 / tensors[f"{module}.input_global_scale"].item() for module in modules)
        values = {fixed[f"{module}.input_scale"].item() for module in modules}
        assert len(values) == 1 and values.pop() == pytest.approx(largest_amax / 2688, rel=1e-6)


def test_partly_w4a4_input_is_refused(tmp_path):
    tensors = ct_tensors()
    tensors["model.layers.0.self_attn.o_proj.input_global_scale"] = torch.tensor([100.0])
    result = nvfp4("convert", write(tmp_path / "in", tensors, CT_CONFIG), "-o", tmp_path / "out", "--format", "modelopt")
    assert result.exit_code == 1 and "activation scales" in result.stderr and not (tmp_path / "out").exists()


def test_sharded_input_gives_sharded_output(tmp_path):
    assert nvfp4("quantize", SAMPLE, "-o", tmp_path / "q", "--max-shard-size", "100KB").exit_code == 0
    assert len(list((tmp_path / "q").glob("*.safetensors"))) > 1
    result = nvfp4("convert", tmp_path / "q", "-o", tmp_path / "mo", "--format", "modelopt", "--max-shard-size", "100KB", "--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)["files"]) > 1
    assert (tmp_path / "mo" / "model.safetensors.index.json").is_file()
    assert nvfp4("verify", tmp_path / "mo").exit_code == 0
    source, converted = tensors_of(tmp_path / "q"), tensors_of(tmp_path / "mo")
    for module in ct_modules(source):
        assert raw(converted[f"{module}.weight"]) == raw(source[f"{module}.weight_packed"])


def test_rescale_sqnr_from_the_scale_histogram_equals_the_decoded_weights():
    """The O(127) score --fix searches with against the SQNR of the decoded values (numpy)."""
    from nvfp4cli.relayout import rescale_block_scales, rescale_sqnr_db, scale_energy

    generator = torch.Generator().manual_seed(21)
    q = quantize(torch.randn(96, 256, generator=generator) * torch.rand(96, 1, generator=generator), "rn")
    codes = unpack_fp4_from_uint8(q.packed, 96, 256, torch.float64).numpy().reshape(96, -1, 16)
    ratios = [1.0, 0.5, 0.7312, 0.2049, 0.999]
    predicted = rescale_sqnr_db(scale_energy(q.packed, q.scales), torch.tensor(ratios, dtype=torch.float64))
    for ratio, score in zip(ratios, predicted.tolist()):
        before = codes * (q.scales.double().numpy() * ratio)[..., None]
        after = codes * rescale_block_scales(q.scales, ratio).double().numpy()[..., None]
        noise = np.square(before - after).sum()
        assert (score == math.inf and noise == 0) or score == pytest.approx(10 * math.log10(np.square(before).sum() / noise), abs=1e-9)


def test_other_quantized_formats_are_refused(tmp_path):
    tensors = ct_tensors()
    tensors["model.layers.0.mlp.extra.weight"] = torch.zeros(32, 64).to(torch.float8_e4m3fn)  # compressed-tensors FP8
    tensors["model.layers.0.mlp.extra.weight_scale"] = torch.ones(32, 1)
    result = nvfp4("convert", write(tmp_path / "in", tensors, CT_CONFIG), "-o", tmp_path / "out")
    assert result.exit_code == 1 and "model.layers.0.mlp.extra.weight" in result.stderr and not (tmp_path / "out").exists()
