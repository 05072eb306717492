"""nvfp4 verify against independent inputs: llm-compressor's model-free output (tests/fixtures),
hand-written compressed-tensors and ModelOpt checkpoints (safetensors' own save_file, configs
written here from the formats' documentation), a corpus of broken copies, and nvfp4's own output.
Each broken input must give exactly the findings its defect implies, naming the tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli_runner import SAMPLE, nvfp4

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "llmc-qwen3moe-nvfp4a16"
JSON_KEYS = {"path", "format", "target", "findings", "summary"}
FINDING_KEYS = {"tensor", "check", "message"}

CT_CONFIG = {
    "quant_method": "compressed-tensors",
    "format": "nvfp4-pack-quantized",
    "quantization_status": "compressed",
    "ignore": ["lm_head"],
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "symmetric": True, "dynamic": False},
            "input_activations": None,
            "format": "nvfp4-pack-quantized",
        }
    },
}
MODELOPT_HF = {"producer": {"name": "modelopt", "version": "0.39"}, "quantization": {"quant_algo": "W4A16_NVFP4", "kv_cache_quant_algo": None, "group_size": 16, "exclude_modules": ["lm_head"]}}

# (module, [out, in], fused group id: members of one id share a global scale)
LINEARS = [
    ("model.layers.0.self_attn.q_proj", (64, 64), "qkv"),
    ("model.layers.0.self_attn.k_proj", (32, 64), "qkv"),
    ("model.layers.0.self_attn.v_proj", (32, 64), "qkv"),
    ("model.layers.0.self_attn.o_proj", (64, 64), None),
    ("model.layers.0.mlp.gate_proj", (96, 64), "gate_up"),
    ("model.layers.0.mlp.up_proj", (96, 64), "gate_up"),
    ("model.layers.0.mlp.down_proj", (64, 96), None),
]
GLOBAL_SCALES = {"qkv": 3000.0, "gate_up": 5000.0, None: 7000.0}  # compressed-tensors: 1/pts


def nvfp4_parts(shape: tuple[int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random packed codes and valid E4M3 block scales (normal, positive: bytes 0x08..0x7E)."""
    out, k = shape
    packed = torch.randint(0, 256, (out, k // 2), dtype=torch.uint8, generator=generator)
    scales = torch.randint(0x08, 0x7F, (out, k // 16), dtype=torch.uint8, generator=generator).view(torch.float8_e4m3fn)
    return packed, scales


def ct_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1700)
    tensors = {
        "model.embed_tokens.weight": torch.randn(128, 64, generator=generator).bfloat16(),
        "lm_head.weight": torch.randn(128, 64, generator=generator).bfloat16(),
        "model.norm.weight": torch.ones(64, dtype=torch.bfloat16),
        "model.layers.0.input_layernorm.weight": torch.ones(64, dtype=torch.bfloat16),
    }
    for module, shape, group in LINEARS:
        packed, scales = nvfp4_parts(shape, generator)
        tensors[f"{module}.weight_packed"] = packed
        tensors[f"{module}.weight_scale"] = scales
        tensors[f"{module}.weight_global_scale"] = torch.tensor([GLOBAL_SCALES[group]])
    return tensors


def to_modelopt(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under ModelOpt's names: packed as X.weight, pts (not 1/pts), 0-d."""
    out = {}
    for name, tensor in tensors.items():
        if name.endswith(".weight_packed"):
            out[name.removesuffix("_packed")] = tensor
        elif name.endswith(".weight_global_scale"):
            out[name.removesuffix("_global_scale") + "_scale_2"] = (1.0 / tensor).reshape(())
        else:
            out[name] = tensor
    return out


def write(directory: Path, tensors: dict[str, torch.Tensor], quantization_config: dict | None, hf_quant_config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "model.safetensors")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (directory / "config.json").write_text(json.dumps(config))
    if hf_quant_config is not None:
        (directory / "hf_quant_config.json").write_text(json.dumps(hf_quant_config))
    return directory


def findings(path: Path, *options: str) -> tuple[int, set[tuple[str, str]], dict]:
    result = nvfp4("verify", path, "--json", *options)
    report = json.loads(result.stdout)
    assert set(report) == JSON_KEYS
    assert all(set(finding) == FINDING_KEYS for finding in report["findings"])
    return result.exit_code, {(finding["tensor"], finding["check"]) for finding in report["findings"]}, report


def copy_config(**changes) -> dict:
    config = json.loads(json.dumps(CT_CONFIG))
    config.update(changes)
    return config


# ---- clean inputs -------------------------------------------------------------------------------


def test_clean_compressed_tensors_and_modelopt_checkpoints_pass(tmp_path):
    ct = write(tmp_path / "ct", ct_tensors(), CT_CONFIG)
    code, found, report = findings(ct)
    assert (code, found) == (0, set())
    assert report["format"] == "compressed-tensors" and report["target"] == "vllm"
    assert report["summary"]["nvfp4_weights"] == len(LINEARS) and report["summary"]["fused_groups"] == 2
    modelopt = write(tmp_path / "mo", to_modelopt(ct_tensors()), {"quant_method": "modelopt", "quant_algo": "W4A16_NVFP4", "group_size": 16, "ignore": ["lm_head"]}, MODELOPT_HF)
    code, found, report = findings(modelopt)
    assert (code, found, report["format"]) == (0, set(), "modelopt")
    assert nvfp4("verify", ct).exit_code == 0 and "clean" in nvfp4("verify", ct).stdout


def test_a_lone_file_has_no_config_to_check(tmp_path):
    save_file(ct_tensors(), tmp_path / "w.safetensors")
    code, found, report = findings(tmp_path / "w.safetensors")
    assert (code, found) == (0, set()) and report["summary"]["config_checked"] is False


@pytest.mark.parametrize("fmt", ["compressed-tensors", "modelopt"])
def test_nvfp4_quantize_output_of_the_sample_verifies_clean(tmp_path, fmt):
    out = tmp_path / "q"
    assert nvfp4("quantize", SAMPLE, "-o", out, "--format", fmt, "--json").exit_code == 0
    for target in ("vllm", "transformers", "trtllm"):
        code, found, _ = findings(out, "--target", target)
        engine_limits = {
            ("transformers", "modelopt"): {("config.json", "target")},  # transformers does not load ModelOpt
            ("trtllm", "compressed-tensors"): {("config.json", "target")},  # TensorRT-LLM loads ModelOpt only
            ("trtllm", "modelopt"): {("hf_quant_config.json", "target")},  # W4A16_NVFP4 is not a TRT-LLM algo
        }.get((target, fmt), set())
        assert found == engine_limits and code == (1 if engine_limits else 0), (target, found)


# ---- llm-compressor's output (independent producer) ---------------------------------------------


def test_llm_compressor_moe_output_findings():
    code, found, report = findings(FIXTURE)
    expected_fused = {(f"model.layers.{layer}.mlp.experts.{expert}.gate_up_proj", "fused") for layer in (0, 1) for expert in range(4)}
    expected_target = {("model.layers.0.mlp.gate.weight", "target"), ("model.layers.1.mlp.gate.weight", "target"), ("model.embed_tokens.weight", "target")}
    # Its config targets Linear, which an embedding is not: every loader leaves embed_tokens float.
    embedding = {("model.embed_tokens.weight", "config")}
    assert code == 1 and found == expected_fused | expected_target | embedding
    assert report["format"] == "compressed-tensors"
    # The fused message carries both stored global scales, read from the file itself.
    from safetensors import safe_open

    with safe_open(FIXTURE / "model.safetensors", "pt") as handle:
        gate = handle.get_tensor("model.layers.0.mlp.experts.0.gate_proj.weight_global_scale").item()
        up = handle.get_tensor("model.layers.0.mlp.experts.0.up_proj.weight_global_scale").item()
    assert gate != up
    message = next(f["message"] for f in report["findings"] if f["tensor"] == "model.layers.0.mlp.experts.0.gate_up_proj")
    assert f"gate_proj {gate:.9g}" in message and f"up_proj {up:.9g}" in message
    # transformers loads a quantized router (a Linear the config targets); it drops per-expert
    # global scales (docs/moe.md), so every experts block is a finding of its own.
    code, found, _ = findings(FIXTURE, "--target", "transformers")
    experts = {(f"model.layers.{layer}.mlp.experts", "target") for layer in (0, 1)}
    assert (code, found) == (1, expected_fused | embedding | experts)


# ---- the broken corpus -----------------------------------------------------------------------------

ATTN, MLP = "model.layers.0.self_attn", "model.layers.0.mlp"


def nan_block_scale(tensors, config):
    raw = tensors[f"{ATTN}.o_proj.weight_scale"].view(torch.uint8).clone()
    raw[3, 1] = 0x7F
    tensors[f"{ATTN}.o_proj.weight_scale"] = raw.view(torch.float8_e4m3fn)
    return {(f"{ATTN}.o_proj.weight_scale", "tensors")}


def negative_block_scale(tensors, config):
    raw = tensors[f"{MLP}.down_proj.weight_scale"].view(torch.uint8).clone()
    raw[0, 0] = 0xB8  # -1.0
    tensors[f"{MLP}.down_proj.weight_scale"] = raw.view(torch.float8_e4m3fn)
    return {(f"{MLP}.down_proj.weight_scale", "tensors")}


def zero_global_scale(tensors, config):
    tensors[f"{MLP}.down_proj.weight_global_scale"] = torch.zeros(1)
    return {(f"{MLP}.down_proj.weight_global_scale", "tensors")}


def infinite_global_scale(tensors, config):
    tensors[f"{ATTN}.o_proj.weight_global_scale"] = torch.tensor([float("inf")])
    return {(f"{ATTN}.o_proj.weight_global_scale", "tensors")}


def wrong_packed_shape(tensors, config):
    tensors[f"{ATTN}.o_proj.weight_packed"] = tensors[f"{ATTN}.o_proj.weight_packed"][:, :16].clone()
    return {(f"{ATTN}.o_proj.weight_packed", "tensors")}


def wrong_scale_dtype(tensors, config):
    tensors[f"{ATTN}.o_proj.weight_scale"] = tensors[f"{ATTN}.o_proj.weight_scale"].float()
    return {(f"{ATTN}.o_proj.weight", "tensors")}


def missing_block_scales(tensors, config):
    del tensors[f"{MLP}.gate_proj.weight_scale"]
    return {(f"{MLP}.gate_proj.weight", "tensors")}


def v_unquantized(tensors, config):
    for suffix in ("packed", "scale", "global_scale"):
        del tensors[f"{ATTN}.v_proj.weight_{suffix}"]
    tensors[f"{ATTN}.v_proj.weight"] = torch.randn(32, 64).bfloat16()
    # Partly quantized fused layer, and a float Linear the config does not ignore.
    return {(f"{ATTN}.v_proj.weight", "fused"), (f"{ATTN}.v_proj.weight", "config")}


def v_unquantized_and_ignored(tensors, config):
    v_unquantized(tensors, config)
    config["ignore"] = ["lm_head", f"{ATTN}.v_proj"]
    return {(f"{ATTN}.v_proj.weight", "fused")}


def fused_scales_differ(tensors, config):
    tensors[f"{MLP}.up_proj.weight_global_scale"] = torch.tensor([GLOBAL_SCALES["gate_up"] * 4])
    return {(f"{MLP}.gate_up_proj", "fused")}


def no_quantization_groups(tensors, config):
    del config["config_groups"]
    return {("config.json", "config")}


def no_quantization_config(tensors, config):
    config.clear()
    return {("config.json", "config")}


def group_size_32(tensors, config):
    config["config_groups"]["group_0"]["weights"]["group_size"] = 32
    return {("config.json", "config")}


def wrong_format_name(tensors, config):
    config["format"] = config["config_groups"]["group_0"]["format"] = "float-quantized"
    return {("config.json", "config")}


def quantized_module_ignored(tensors, config):
    config["ignore"] = ["lm_head", f"{ATTN}.o_proj"]
    return {(f"{ATTN}.o_proj.weight", "config")}


def lm_head_not_ignored(tensors, config):
    config["ignore"] = []
    return {("lm_head.weight", "config")}


def w4a4_without_input_scales(tensors, config):
    config["config_groups"]["group_0"]["input_activations"] = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local", "symmetric": True}
    tensors[f"{ATTN}.o_proj.input_global_scale"] = torch.tensor([100.0])
    return {(f"{module}.weight", "config") for module, _, _ in LINEARS if module != f"{ATTN}.o_proj"}


def fused_input_widths_differ(tensors, config):
    packed, scales = nvfp4_parts((32, 96), torch.Generator().manual_seed(6))  # k_proj reads 96 inputs, q and v 64
    tensors[f"{ATTN}.k_proj.weight_packed"], tensors[f"{ATTN}.k_proj.weight_scale"] = packed, scales
    return {(f"{ATTN}.qkv_proj", "fused")}


def w4a4_fused_input_scales_differ(tensors, config):
    config["config_groups"]["group_0"]["input_activations"] = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local", "symmetric": True}
    for module, _, _ in LINEARS:
        tensors[f"{module}.input_global_scale"] = torch.tensor([300.0 if module.endswith("k_proj") else 200.0])
    return {(f"{ATTN}.qkv_proj", "fused")}


def lm_head_quantized(tensors, config):
    del tensors["lm_head.weight"]
    packed, scales = nvfp4_parts((128, 64), torch.Generator().manual_seed(3))
    tensors.update({"lm_head.weight_packed": packed, "lm_head.weight_scale": scales, "lm_head.weight_global_scale": torch.tensor([900.0])})
    config["ignore"] = []
    return {("lm_head.weight", "target")}  # vLLM: ParallelLMHead gets no compressed-tensors method


def unmapped_name(tensors, config):
    tensors[f"{ATTN}.o_proj.weight_zero_point"] = torch.zeros(64, 4, dtype=torch.uint8)
    return {(f"{ATTN}.o_proj.weight_zero_point", "target")}


def ignore_not_a_list(tensors, config):
    config["ignore"] = "lm_head"
    return {("config.json", "config"), ("lm_head.weight", "config")}


def invalid_regex_in_ignore(tensors, config):
    config["ignore"] = ["lm_head", "re:(unclosed"]
    return {("config.json", "config")}


def modelopt_config_over_ct_names(tensors, config):
    config.clear()
    config.update({"quant_method": "modelopt", "quant_algo": "W4A16_NVFP4", "group_size": 16, "ignore": ["lm_head"]})
    return {("config.json", "config")} | {(f"{module}.weight", "tensors") for module, _, _ in LINEARS}


CORPUS = [
    nan_block_scale, negative_block_scale, zero_global_scale, infinite_global_scale, wrong_packed_shape, wrong_scale_dtype,
    missing_block_scales, v_unquantized, v_unquantized_and_ignored, fused_scales_differ, no_quantization_groups,
    no_quantization_config, group_size_32, wrong_format_name, quantized_module_ignored, lm_head_not_ignored,
    w4a4_without_input_scales, lm_head_quantized, unmapped_name, ignore_not_a_list, invalid_regex_in_ignore,
    modelopt_config_over_ct_names, w4a4_fused_input_scales_differ, fused_input_widths_differ,
]  # fmt: skip


@pytest.mark.parametrize("defect", CORPUS, ids=[defect.__name__ for defect in CORPUS])
def test_broken_checkpoint_gives_exactly_its_findings(tmp_path, defect):
    tensors, config = ct_tensors(), copy_config()
    expected = defect(tensors, config)
    code, found, report = findings(write(tmp_path / defect.__name__, tensors, config))
    assert code == 1 and found == expected, report["findings"]
    # The table names the same tensors, one line per finding.
    table = nvfp4("verify", tmp_path / defect.__name__)
    assert table.exit_code == 1 and all(tensor in table.stdout for tensor, _ in expected)


def moe_and_mla_tensors() -> dict[str, torch.Tensor]:
    """DeepSeek-like names: MLA q_a/kv_a, routed experts w1/w3, shared experts gate/up."""
    generator = torch.Generator().manual_seed(17)
    tensors = {}
    modules = [
        ("model.layers.0.self_attn.q_a_proj", 100.0),
        ("model.layers.0.self_attn.kv_a_proj_with_mqa", 100.0),
        ("model.layers.0.block_sparse_moe.experts.0.w1", 200.0),
        ("model.layers.0.block_sparse_moe.experts.0.w3", 200.0),
        ("model.layers.0.block_sparse_moe.experts.1.w1", 300.0),
        ("model.layers.0.block_sparse_moe.experts.1.w3", 300.0),
        ("model.layers.0.mlp.shared_experts.gate_proj", 400.0),
        ("model.layers.0.mlp.shared_experts.up_proj", 400.0),
    ]
    for module, global_scale in modules:
        packed, scales = nvfp4_parts((32, 64), generator)
        tensors.update({f"{module}.weight_packed": packed, f"{module}.weight_scale": scales, f"{module}.weight_global_scale": torch.tensor([global_scale])})
    return tensors


@pytest.mark.parametrize(
    ("member", "group"),
    [
        ("model.layers.0.self_attn.kv_a_proj_with_mqa", "model.layers.0.self_attn.fused_qkv_a_proj"),
        ("model.layers.0.block_sparse_moe.experts.1.w3", "model.layers.0.block_sparse_moe.experts.1.w13"),
        ("model.layers.0.mlp.shared_experts.up_proj", "model.layers.0.mlp.shared_experts.gate_up_proj"),
    ],
)
def test_fused_groups_per_expert_shared_expert_and_mla(tmp_path, member, group):
    tensors = moe_and_mla_tensors()
    assert findings(write(tmp_path / "clean", tensors, copy_config()))[:2] == (0, set())
    tensors[f"{member}.weight_global_scale"] = tensors[f"{member}.weight_global_scale"] * 2
    assert findings(write(tmp_path / "broken", tensors, copy_config()))[:2] == (1, {(group, "fused")})


def test_experts_of_different_shapes_for_vllm(tmp_path):
    tensors = moe_and_mla_tensors()
    packed, scales = nvfp4_parts((48, 64), torch.Generator().manual_seed(2))
    tensors["model.layers.0.block_sparse_moe.experts.1.w3.weight_packed"] = packed
    tensors["model.layers.0.block_sparse_moe.experts.1.w3.weight_scale"] = scales
    code, found, _ = findings(write(tmp_path / "m", tensors, copy_config()))
    assert (code, found) == (1, {("model.layers.0.block_sparse_moe.experts.*.w3", "target")})


def test_experts_partly_quantized_for_vllm(tmp_path):
    tensors = moe_and_mla_tensors()
    for suffix in ("packed", "scale", "global_scale"):
        del tensors[f"model.layers.0.block_sparse_moe.experts.1.w1.weight_{suffix}"], tensors[f"model.layers.0.block_sparse_moe.experts.1.w3.weight_{suffix}"]
    tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"] = torch.zeros(32, 64, dtype=torch.bfloat16)
    tensors["model.layers.0.block_sparse_moe.experts.1.w3.weight"] = torch.zeros(32, 64, dtype=torch.bfloat16)
    config = copy_config(ignore=["model.layers.0.block_sparse_moe.experts.1.w1", "model.layers.0.block_sparse_moe.experts.1.w3"])
    code, found, _ = findings(write(tmp_path / "m", tensors, config))
    assert (code, found) == (1, {("model.layers.0.block_sparse_moe.experts", "target")})
    assert findings(tmp_path / "m", "--target", "transformers")[:2] == (1, {("model.layers.0.block_sparse_moe.experts", "target")})  # global scales 200 and 300, not 1


# ---- ModelOpt layout ----------------------------------------------------------------------------


def modelopt_dir(tmp_path: Path, hf: dict | None = MODELOPT_HF, **tensor_changes) -> Path:
    tensors = to_modelopt(ct_tensors())
    tensors.update(tensor_changes)
    return write(tmp_path, tensors, None, hf)


def test_modelopt_corpus(tmp_path):
    hf = json.loads(json.dumps(MODELOPT_HF))
    del hf["quantization"]["kv_cache_quant_algo"]
    assert findings(modelopt_dir(tmp_path / "a", hf))[:2] == (1, {("hf_quant_config.json", "config")})
    hf = json.loads(json.dumps(MODELOPT_HF))
    hf["quantization"]["quant_algo"] = "NVFP4"  # W4A4: every NVFP4 weight needs its input_scale
    expected = {(f"{module}.weight", "config") for module, _, _ in LINEARS}
    assert findings(modelopt_dir(tmp_path / "b", hf))[:2] == (1, expected)
    scales = {f"{module}.input_scale": torch.tensor(0.01) for module, _, _ in LINEARS}
    code, found, _ = findings(write(tmp_path / "c", {**to_modelopt(ct_tensors()), **scales}, None, hf), "--target", "trtllm")
    assert (code, found) == (0, set())  # W4A4 ModelOpt with input scales: what TensorRT-LLM runs
    scale_2 = f"{MLP}.up_proj.weight_scale_2"
    assert findings(modelopt_dir(tmp_path / "d", **{scale_2: torch.tensor(1.0 / 1234.0)}))[:2] == (1, {(f"{MLP}.gate_up_proj", "fused")})
    assert findings(modelopt_dir(tmp_path / "e", None))[:2] == (1, {("hf_quant_config.json", "config")})
    assert findings(modelopt_dir(tmp_path / "f"), "--target", "transformers")[:2] == (1, {("config.json", "target")})


# ---- trouble and usage --------------------------------------------------------------------------


def test_unreadable_input_is_trouble_exit_2(tmp_path):
    garbage = tmp_path / "bad.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    for path in (garbage, tmp_path / "missing"):
        result = nvfp4("verify", path)
        assert result.exit_code == 2 and result.stderr.startswith("nvfp4: error:") and len(result.stderr.strip().splitlines()) == 1
    bad_config = write(tmp_path / "d", ct_tensors(), CT_CONFIG)
    (bad_config / "hf_quant_config.json").write_text("{")
    assert nvfp4("verify", bad_config).exit_code == 2
    assert nvfp4("verify", bad_config, "--target", "sglang").exit_code == 2


def test_float_checkpoint_is_a_finding(tmp_path):
    code, found, report = findings(SAMPLE)
    assert code == 1 and found == {(str(SAMPLE), "format")} and report["format"] is None
    # A config that declares NVFP4 over float weights only.
    float_weights = {"model.layers.0.mlp.up_proj.weight": torch.zeros(32, 64, dtype=torch.bfloat16)}
    declared = write(tmp_path / "declared", float_weights, copy_config(ignore=["model.layers.0.mlp.up_proj"]))
    code, found, report = findings(declared)
    assert code == 1 and found == {(str(declared), "format")} and report["format"] == "compressed-tensors"


def test_verify_reads_scales_only_never_the_packed_codes():
    from dataclasses import replace

    from nvfp4cli.verify import describe, verify

    view = describe(FIXTURE)
    read = []
    report = verify(replace(view, read=lambda name: read.append(name) or view.read(name)))
    assert report["findings"] and read
    assert all(name.endswith(("weight_scale", "weight_global_scale")) for name in read)
    assert not any(name.endswith("weight_packed") for name in read)


def test_transformers_needs_unit_expert_scales(tmp_path):
    """Per-expert NVFP4 loads in transformers 5.x only with every expert's global scale 1
    (docs/moe.md); nvfp4 quantize --experts-unit-scale writes that."""
    moe = Path(__file__).resolve().parent.parent / "sample_ckpts" / "qwen3-moe"
    assert nvfp4("quantize", moe, "-o", tmp_path / "usual").exit_code == 0
    assert nvfp4("quantize", moe, "-o", tmp_path / "unit", "--experts-unit-scale").exit_code == 0
    code, found, _ = findings(tmp_path / "usual", "--target", "transformers")
    assert code == 1 and found and all(check == "target" and tensor.endswith(".mlp.experts") for tensor, check in found)
    assert findings(tmp_path / "unit", "--target", "transformers")[:2] == (0, set())
    assert findings(tmp_path / "usual")[:2] == (0, set())  # vLLM takes the scales as they are
