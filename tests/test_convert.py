"""Checkpoint conversion: selection, fused scales, both formats and RS streams against independent
oracles (torchao, compressed-tensors' own decompressor, the naive spec oracle, the formulas of docs/format.md)."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save, save_file

import spec_oracle
from nvfp4cli import DataError, UsageError, formats
from nvfp4cli.execute import DEFAULT_MAX_SHARD_BYTES, run
from nvfp4cli.inspection import inspect_checkpoint
from nvfp4cli.io import open_checkpoint
from nvfp4cli.modules import fused_group_key
from nvfp4cli.plan import QuantizeOptions, default_output, plan_dequantize, plan_quantize, select_weights

torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")

SAMPLE = Path(__file__).resolve().parent.parent / "sample_ckpts" / "tiny-llama"
GRID = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float64)


def quantize_dir(source: Path, output: Path, **options) -> dict:
    max_shard_bytes = options.pop("max_shard_bytes", DEFAULT_MAX_SHARD_BYTES)
    return run(plan_quantize(open_checkpoint(source), QuantizeOptions(**options)), output, max_shard_bytes=max_shard_bytes)


def all_tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def decoded(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(logical weights, each one decoded to float32) of a checkpoint, through the formats."""
    checkpoint = open_checkpoint(directory)
    weights = formats.logical_weights(checkpoint)
    return weights, {name: formats.load_float(weight, checkpoint, torch.float32) for name, weight in weights.items()}


@pytest.fixture(scope="module")
def sample_ct(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ct") / "tiny-llama-nvfp4"
    quantize_dir(SAMPLE, output)
    return output


@pytest.fixture(scope="module")
def sample_modelopt(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("mo") / "tiny-llama-modelopt"
    quantize_dir(SAMPLE, output, fmt="modelopt")
    return output


# ---- selection -------------------------------------------------------------------------------


def test_fused_group_keys():
    assert fused_group_key("model.layers.3.self_attn.k_proj.weight") == "model.layers.3.self_attn.qkv_proj"
    assert fused_group_key("encoder.layer.0.attention.self.value.weight") == "encoder.layer.0.attention.self.query_key_value"
    assert fused_group_key("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.gate_up_proj"
    assert fused_group_key("model.layers.0.block_sparse_moe.experts.5.w3.weight") == "model.layers.0.block_sparse_moe.experts.5.w13"
    assert fused_group_key("model.layers.0.block_sparse_moe.experts.5.w2.weight") is None
    assert fused_group_key("model.layers.0.self_attn.o_proj.weight") is None


@pytest.fixture
def mixed_checkpoint(tmp_path):
    tensors = {
        "model.embed_tokens.weight": torch.randn(64, 32),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(32, 32),
        "model.layers.0.self_attn.q_proj.bias": torch.randn(32),
        "model.layers.0.input_layernorm.weight": torch.randn(32),
        "model.layers.0.ln_2.weight": torch.randn(32, 32),
        "model.layers.0.mlp.gate.weight": torch.randn(8, 32),
        "model.layers.0.mlp.odd.weight": torch.randn(32, 24),
        "model.layers.0.mlp.experts.weight": torch.randn(2, 32, 32),
        "model.layers.0.mlp.int8.weight": torch.ones(32, 32, dtype=torch.int8),
        "model.layers.0.mlp.double.weight": torch.randn(32, 32, dtype=torch.float64),
        "model.layers.0.mlp.down_proj.weight": torch.randn(32, 64),
        "lm_head.weight": torch.randn(64, 32),
        "position_ids": torch.arange(32).reshape(1, 32),
    }
    save_file(tensors, tmp_path / "m.safetensors")
    return open_checkpoint(tmp_path / "m.safetensors")


def test_default_selection_and_reasons(mixed_checkpoint):
    decisions = {s.name: (s.quantize, s.reason) for s in select_weights(mixed_checkpoint)}
    assert decisions == {
        "model.embed_tokens.weight": (False, "embedding"),
        "model.layers.0.self_attn.q_proj.weight": (True, ""),
        "model.layers.0.ln_2.weight": (False, "norm"),
        "model.layers.0.mlp.gate.weight": (False, "MoE router"),
        "model.layers.0.mlp.odd.weight": (False, "last dim 24 is not a multiple of 16"),
        "model.layers.0.mlp.experts.weight": (False, "3-D: only 2-D weights are quantized"),
        "model.layers.0.mlp.int8.weight": (False, "dtype I8 is not bfloat16, float16 or float32"),
        "model.layers.0.mlp.double.weight": (False, "dtype F64 is not bfloat16, float16 or float32"),
        "model.layers.0.mlp.down_proj.weight": (True, ""),
        "lm_head.weight": (False, "lm_head"),
    }


def test_include_overrides_name_rules_and_exclude_wins(mixed_checkpoint):
    include = ("lm_head.weight", "*.mlp.*")
    decisions = {s.name: (s.quantize, s.reason) for s in select_weights(mixed_checkpoint, include, ("*down_proj*",))}
    assert decisions["lm_head.weight"] == (True, "")
    assert decisions["model.layers.0.mlp.gate.weight"] == (True, "")
    assert decisions["model.layers.0.mlp.down_proj.weight"] == (False, "excluded by --exclude '*down_proj*'")
    assert decisions["model.layers.0.self_attn.q_proj.weight"] == (False, "not matched by --include")
    assert decisions["model.layers.0.mlp.odd.weight"] == (False, "last dim 24 is not a multiple of 16")


def test_plan_lists_every_kept_weight_and_ignores_it(mixed_checkpoint):
    plan = plan_quantize(mixed_checkpoint, QuantizeOptions())
    summary = plan.summary()
    assert summary["quantized"] == ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    assert len(summary["skipped"]) == 8 and summary["tensors_in"] == 13
    ignore = plan.record["quantization_config"]["ignore"]
    assert {s["name"].removesuffix(".weight") for s in summary["skipped"]} == set(ignore)


# ---- compressed-tensors output ---------------------------------------------------------------


def torchao_reference(x: torch.Tensor, amax: torch.Tensor):
    """(packed bytes, scale bytes, pts) from torchao with the per-tensor scale of the given amax."""
    pts = torchao_nvfp4.per_tensor_amax_to_scale(amax.float())
    scales, data = torchao_nvfp4.nvfp4_quantize(x.contiguous(), 16, pts)
    return data.view(torch.uint8), scales.view(torch.uint8), pts


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    """(header as JSON, data bytes) of a safetensors file's contents."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def test_compressed_tensors_output_matches_torchao_with_fused_scales(sample_ct):
    source, output = all_tensors(SAMPLE), all_tensors(sample_ct)
    config = json.loads((sample_ct / "config.json").read_text())
    groups = {}
    for name in source:
        key = fused_group_key(name)
        if key is not None:
            groups.setdefault(key, []).append(name)
    quantized = 0
    for name, x in source.items():
        module = name.removesuffix(".weight")
        if f"{module}.weight_packed" not in output:
            assert torch.equal(output[name], x), name  # copied byte for byte
            continue
        quantized += 1
        members = groups.get(fused_group_key(name), [name])
        amax = torch.stack([source[member].float().abs().amax() for member in members]).amax()
        packed, scales, pts = torchao_reference(x, amax)
        assert torch.equal(output[f"{module}.weight_packed"], packed), name
        assert torch.equal(output[f"{module}.weight_scale"].view(torch.uint8), scales), name
        assert torch.equal(output[f"{module}.weight_global_scale"], (1.0 / pts).reshape(1)), name
    assert quantized == 14
    # q/k/v and gate/up of a layer share one global scale, and differ from other layers'
    gs = {name: float(output[name]) for name in output if name.endswith("weight_global_scale")}
    assert gs["model.layers.0.self_attn.q_proj.weight_global_scale"] == gs["model.layers.0.self_attn.v_proj.weight_global_scale"]
    assert gs["model.layers.1.mlp.gate_proj.weight_global_scale"] == gs["model.layers.1.mlp.up_proj.weight_global_scale"]
    assert len(set(gs.values())) == 2 * 4  # per layer: qkv, o, gate/up, down
    assert config["quantization_config"]["ignore"] == ["lm_head", "model.embed_tokens"]
    assert {p.name for p in sample_ct.iterdir()} == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert (sample_ct / "tokenizer.json").read_bytes() == (SAMPLE / "tokenizer.json").read_bytes()
    # the file is what the safetensors library writes for these tensors and metadata: the same
    # header (as JSON: the library orders several metadata keys at random) and the same data bytes
    written = sample_ct / "model.safetensors"
    assert split_safetensors(written.read_bytes()) == split_safetensors(save(load_file(written), metadata=open_checkpoint(written).metadata))


def test_compressed_tensors_decompressor_equals_our_dequantize(sample_ct):
    ct_quantization = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.compressors.nvfp4 import NVFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    config = ct_quantization.QuantizationConfig.model_validate(json.loads((sample_ct / "config.json").read_text())["quantization_config"])
    scheme = config.config_groups["group_0"]
    assert config.format == "nvfp4-pack-quantized" and scheme.weights.strategy == "tensor_group"
    stored = all_tensors(sample_ct)
    checkpoint = open_checkpoint(sample_ct)
    weights = formats.logical_weights(checkpoint)
    checked = 0
    for name, weight in weights.items():
        if not weight.quantized:
            continue
        module = name.removesuffix(".weight")
        state = {key.removeprefix(module + "."): stored[key] for key in weight.tensors}
        decompressed = NVFP4PackedCompressor.decompress(state, scheme)["weight"]  # bf16, its default
        assert torch.equal(decompressed, formats.load_float(weight, checkpoint, torch.bfloat16)), name
        rows, half = state["weight_packed"].shape
        values = unpack_fp4_from_uint8(state["weight_packed"], rows, half * 2, dtype=torch.float32)
        full = dequantize(values, state["weight_scale"].float(), args=scheme.weights, global_scale=state["weight_global_scale"], dtype=torch.float32)
        assert torch.equal(full, formats.load_float(weight, checkpoint, torch.float32)), name
        checked += 1
    assert checked == 14


# ---- ModelOpt output -------------------------------------------------------------------------


def test_modelopt_tensors_and_configs(sample_ct, sample_modelopt):
    ct, mo = all_tensors(sample_ct), all_tensors(sample_modelopt)
    name = "model.layers.1.self_attn.k_proj.weight"
    assert mo[name].dtype == torch.uint8 and mo[name].shape == (128, 128)
    assert torch.equal(mo[name], ct["model.layers.1.self_attn.k_proj.weight_packed"])  # same codes
    assert torch.equal(mo[f"{name}_scale"].view(torch.uint8), ct["model.layers.1.self_attn.k_proj.weight_scale"].view(torch.uint8))
    pts = mo[f"{name}_scale_2"]
    assert pts.shape == () and pts.dtype == torch.float32
    amax = torch.stack([all_tensors(SAMPLE)[f"model.layers.1.self_attn.{p}_proj.weight"].float().abs().amax() for p in "qkv"]).amax()
    assert float(pts) == float(np.float32(amax.item()) / np.float32(2688))  # pts = amax / 2688, not the reciprocal
    hf_quant = json.loads((sample_modelopt / "hf_quant_config.json").read_text())
    assert hf_quant["quantization"] == {"quant_algo": "W4A16_NVFP4", "kv_cache_quant_algo": None, "group_size": 16, "exclude_modules": ["lm_head", "model.embed_tokens"]}
    assert hf_quant["producer"]["name"] == "nvfp4cli"
    config = json.loads((sample_modelopt / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "modelopt", "quant_algo": "W4A16_NVFP4", "group_size": 16, "ignore": ["lm_head", "model.embed_tokens"]}
    weights, values = decoded(sample_modelopt)
    assert weights[name].format == "modelopt"
    codes = torch.stack([mo[name] & 15, mo[name] >> 4], dim=-1).reshape(128, -1).long()
    expected = (GRID[codes].reshape(128, -1, 16) * mo[f"{name}_scale"].double().unsqueeze(-1)).reshape(128, -1) * float(pts)
    assert torch.equal(values[name], expected.float())


# ---- RS streams ------------------------------------------------------------------------------


def spec_tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def test_rs_uses_one_stream_per_tensor_name(tmp_path):
    g = torch.Generator().manual_seed(3)
    tensors = {f"blocks.{i}.fc.weight": (torch.randn(4, 64, generator=g) * 0.1).to(torch.bfloat16) for i in range(3)}
    save_file(tensors, tmp_path / "m.safetensors")
    run(plan_quantize(open_checkpoint(tmp_path / "m.safetensors"), QuantizeOptions(mode="rs", seed=11)), tmp_path / "all.safetensors")
    run(
        plan_quantize(open_checkpoint(tmp_path / "m.safetensors"), QuantizeOptions(mode="rs", seed=11, exclude=("blocks.0.*",))),
        tmp_path / "some.safetensors",
    )
    run(plan_quantize(open_checkpoint(tmp_path / "m.safetensors"), QuantizeOptions(mode="rs", seed=12)), tmp_path / "other.safetensors")
    everything, some, other = (load_file(tmp_path / f"{n}.safetensors") for n in ("all", "some", "other"))
    for name, x in tensors.items():
        codes, scale_bytes, _ = spec_oracle.quantize(x.float().numpy(), "rs", seed=spec_tensor_seed(11, name), offset=0)
        packed = everything[name.replace(".weight", ".weight_packed")]
        assert np.array_equal(torch.stack([packed & 15, packed >> 4], -1).reshape(codes.shape).numpy(), codes), name
        assert np.array_equal(everything[name.replace(".weight", ".weight_scale")].view(torch.uint8).numpy(), scale_bytes)
        if name != "blocks.0.fc.weight":  # leaving another tensor out changes nothing here
            assert torch.equal(some[name.replace(".weight", ".weight_packed")], packed)
        assert not torch.equal(other[name.replace(".weight", ".weight_packed")], packed)  # a new seed, new bits
    record = json.loads(open_checkpoint(tmp_path / "all.safetensors").metadata["nvfp4"])
    assert record["mode"] == "rs" and record["seed"] == 11
    assert json.loads(open_checkpoint(tmp_path / "some.safetensors").metadata["nvfp4"])["quantization_config"]["ignore"] == ["blocks.0.fc", "lm_head"]


@pytest.mark.parametrize(
    "options, message",
    [
        (QuantizeOptions(mode="rs"), "needs a seed"),
        (QuantizeOptions(mode="rs", seed=-1), r"an integer in \[0, 2\^63\); got -1"),
        (QuantizeOptions(mode="xx"), "unknown mode 'xx'"),
        (QuantizeOptions(fmt="gguf"), "unknown format 'gguf'"),
        (QuantizeOptions(backend="fast"), "unknown backend 'fast'"),
        (QuantizeOptions(device="tpu"), "unknown device 'tpu'"),
    ],
    ids=["rs-no-seed", "negative-seed", "unknown-mode", "unknown-format", "unknown-backend", "unknown-device"],
)
def test_rs_without_seed_and_bad_options_are_usage_errors(mixed_checkpoint, options, message):
    with pytest.raises(UsageError, match=message):
        plan_quantize(mixed_checkpoint, options)


# ---- sharding, reproducibility, dequantize ---------------------------------------------------


def test_sharded_output_is_reproducible_and_equals_single_shard(tmp_path, sample_ct):
    first, second = tmp_path / "a", tmp_path / "b"
    report = quantize_dir(SAMPLE, first, max_shard_bytes=600_000)
    quantize_dir(SAMPLE, second, max_shard_bytes=600_000)
    assert file_bytes(first) == file_bytes(second)
    assert len(report["files"]) > 2 and (first / "model.safetensors.index.json").exists()
    index = json.loads((first / "model.safetensors.index.json").read_text())
    sharded, single = all_tensors(first), all_tensors(sample_ct)
    assert sharded.keys() == single.keys() == index["weight_map"].keys()
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in single.values())
    assert all(torch.equal(sharded[name].view(torch.uint8), single[name].view(torch.uint8)) for name in single if single[name].dim())
    for file in set(index["weight_map"].values()):  # each shard within the limit unless one unit
        size = sum(sharded[n].numel() * sharded[n].element_size() for n, f in index["weight_map"].items() if f == file)
        assert size <= 600_000 or len({n.rsplit(".", 2)[0] for n, f in index["weight_map"].items() if f == file}) <= 3
    assert formats.logical_weights(open_checkpoint(first)).keys() == formats.logical_weights(open_checkpoint(sample_ct)).keys()


@pytest.mark.parametrize("fixture", ["sample_ct", "sample_modelopt"])
def test_dequantize_round_trip(tmp_path, request, fixture):
    quantized = request.getfixturevalue(fixture)
    output = tmp_path / "float"
    report = run(plan_dequantize(open_checkpoint(quantized), torch.float32), output)
    assert report["tensors_dequantized"] == 14
    restored, source = all_tensors(output), all_tensors(SAMPLE)
    assert restored.keys() == source.keys()
    weights, values = decoded(quantized)
    for name, x in source.items():
        if weights[name].quantized:
            assert restored[name].dtype == torch.float32 and torch.equal(restored[name], values[name])
            error = (restored[name] - x.float()).norm() / x.float().norm()
            assert error < 0.15, name  # 4-bit: SQNR around 20 dB
        else:
            assert torch.equal(restored[name], x)
    config = json.loads((output / "config.json").read_text())
    assert "quantization_config" not in config and config == json.loads((SAMPLE / "config.json").read_text())
    assert not (output / "hf_quant_config.json").exists()
    with pytest.raises(DataError, match="no quantized weights"):
        plan_dequantize(open_checkpoint(output))


def test_quantizing_a_quantized_checkpoint_is_refused(sample_ct):
    with pytest.raises(DataError, match="already NVFP4"):
        plan_quantize(open_checkpoint(sample_ct), QuantizeOptions())


@pytest.mark.parametrize("victim", ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.k_proj.weight"])
def test_non_finite_weight_names_the_tensor_and_leaves_nothing(tmp_path, victim):
    model = tmp_path / "model"
    shutil.copytree(SAMPLE, model)
    tensors = load_file(model / "model-00001-of-00002.safetensors") | load_file(model / "model-00002-of-00002.safetensors")
    tensors[victim][1, 3] = float("nan")
    shard = json.loads((model / "model.safetensors.index.json").read_text())["weight_map"][victim]
    save_file({n: t for n, t in tensors.items() if n in load_file(model / shard)}, model / shard, metadata={"format": "pt"})
    with pytest.raises(DataError, match=f"tensor '{victim}'.*(NaN|non-finite)"):
        quantize_dir(model, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_interruption_mid_write_leaves_no_output_and_keeps_the_old_one(tmp_path):
    """Ctrl-C after some units are written (raised from run's progress callback, which is called
    after each unit): nothing at the output, no staging left; with --force the old output stays."""
    output = tmp_path / "out"

    def interrupt_after(units: int):
        calls = []

        def progress(tensors_done: int, bytes_done: int) -> None:
            calls.append(tensors_done)
            if len(calls) == units:
                raise KeyboardInterrupt

        return progress, calls

    progress, calls = interrupt_after(5)
    with pytest.raises(KeyboardInterrupt):
        run(plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions()), output, progress=progress)
    assert len(calls) == 5 and list(tmp_path.iterdir()) == []
    quantize_dir(SAMPLE, output)
    before = file_bytes(output)
    progress, calls = interrupt_after(5)
    with pytest.raises(KeyboardInterrupt):
        run(plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions(mode="rs", seed=1)), output, force=True, progress=progress)
    assert len(calls) == 5 and file_bytes(output) == before and list(tmp_path.iterdir()) == [output]


def test_default_output_names(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"")
    (tmp_path / "model").mkdir()
    assert default_output(tmp_path / "m.safetensors") == tmp_path / "m.nvfp4.safetensors"
    assert default_output(tmp_path / "model") == tmp_path / "model-nvfp4"
    assert default_output(tmp_path / "model" / "model.safetensors.index.json") == tmp_path / "model-nvfp4"
    (tmp_path / "model" / "sub").mkdir()
    assert default_output(tmp_path / "model" / "sub" / "..") == tmp_path / "model-nvfp4"


def test_default_output_of_the_current_directory_is_its_sibling(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path / "model")
    assert default_output(Path(".")).resolve() == tmp_path / "model-nvfp4"


def test_inspect_totals(sample_ct):
    report = inspect_checkpoint(open_checkpoint(sample_ct))
    rows = {row["name"]: row for row in report["tensors"]}
    source = all_tensors(SAMPLE)
    assert rows.keys() == source.keys()
    k_proj = rows["model.layers.0.self_attn.k_proj.weight"]
    assert k_proj["quantized"] and k_proj["shape"] == [128, 256] and k_proj["bytes"] == 128 * 128 + 128 * 16 + 4
    stored = all_tensors(sample_ct)
    assert k_proj["global_scale"] == pytest.approx(float(stored["model.layers.0.self_attn.k_proj.weight_global_scale"]), rel=1e-6)
    assert report["totals"]["bytes_stored"] == sum(t.numel() * t.element_size() for t in stored.values())
    assert report["totals"]["bytes_float"] == sum(t.numel() * 2 for t in source.values())  # all bf16
    assert report["totals"]["quantized"] == 14 and report["record"]["mode"] == "rn"


# ---- memory ----------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nvfp4cli.io import open_checkpoint
    from nvfp4cli.execute import run
    from nvfp4cli.plan import QuantizeOptions, plan_quantize

    def status_kb(key):  # VmHWM, unlike ru_maxrss, is not inherited from the parent process
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    resident = status_kb("VmRSS:")
    run(plan_quantize(open_checkpoint(sys.argv[1]), QuantizeOptions()), Path(sys.argv[2]))
    print((status_kb("VmHWM:") - resident) * 1024)  # peak over the resident size at the start
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for resident memory")
def test_peak_memory_does_not_grow_with_checkpoint_size(tmp_path):
    # 24 bf16 tensors of 8 MB (192 MB): streaming keeps the growth near a few tensors.
    tensor_bytes = 2048 * 2048 * 2
    g = torch.Generator().manual_seed(0)
    save_file({f"layers.{i}.fc.weight": torch.randn(2048, 2048, generator=g).to(torch.bfloat16) for i in range(24)}, tmp_path / "m.safetensors")
    growth = int(subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "m.safetensors"), str(tmp_path / "o.safetensors")], capture_output=True, text=True, check=True).stdout)
    assert growth < 8 * tensor_bytes + 32 * 2**20, growth  # far below the 192 MB input
