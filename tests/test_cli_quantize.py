"""`nvfp4 quantize`, `dequantize` and `inspect` as a user runs them: paths, exit codes, JSON."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_runner import SAMPLE, nvfp4


def tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(SAMPLE, copy)
    return copy


@pytest.fixture
def single_file(tmp_path) -> Path:
    g = torch.Generator().manual_seed(0)
    tensors = {"fc1.weight": torch.randn(32, 64, generator=g), "fc1.bias": torch.randn(32, generator=g), "norm.weight": torch.ones(64)}
    save_file(tensors, tmp_path / "small.safetensors", metadata={"format": "pt"})
    return tmp_path / "small.safetensors"


def test_directory_default_output_json_and_input_untouched(model):
    before = tree_bytes(model)
    result = nvfp4("quantize", model, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    output = model.parent / "tiny-nvfp4"
    assert report["output"] == str(output) and output.is_dir()
    assert report["tensors_quantized"] == 14 and report["tensors_in"] == 21
    assert {item["name"]: item["reason"] for item in report["skipped"]} == {"lm_head.weight": "lm_head", "model.embed_tokens.weight": "embedding"}
    assert report["bytes_out"] == sum(len(b) for n, b in tree_bytes(output).items() if n.endswith(".safetensors")) - sum(
        8 + int.from_bytes(b[:8], "little") for n, b in tree_bytes(output).items() if n.endswith(".safetensors")
    )
    assert tree_bytes(model) == before
    assert sorted(p.name for p in model.parent.iterdir()) == ["tiny", "tiny-nvfp4"]  # no temporaries left


def test_file_default_output_and_force(single_file):
    output = single_file.with_name("small.nvfp4.safetensors")
    assert nvfp4("quantize", single_file).exit_code == 0
    tensors = load_file(output)
    assert set(tensors) == {"fc1.weight_packed", "fc1.weight_scale", "fc1.weight_global_scale", "fc1.bias", "norm.weight"}
    with safe_open(output, framework="pt") as handle:
        record = json.loads(handle.metadata()["nvfp4"])
    assert record["quantization_config"]["format"] == "nvfp4-pack-quantized" and record["mode"] == "rn"
    refused = nvfp4("quantize", single_file)
    assert refused.exit_code == 2
    assert refused.stderr.strip() == f"nvfp4: error: output {output} exists; pass --force to replace it"
    first = output.read_bytes()
    assert nvfp4("quantize", single_file, "--force", "--format", "modelopt").exit_code == 0
    assert output.read_bytes() != first and "fc1.weight_scale_2" in load_file(output)


def test_same_command_same_bytes(model, tmp_path):
    for name in ("a", "b"):
        result = nvfp4("quantize", model, "-o", tmp_path / name, "--mode", "rs", "--seed", "5", "--max-shard-size", "700KB", "--json")
        assert result.exit_code == 0, result.output
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert len(json.loads(result.stdout)["files"]) >= 3


def test_rs_without_seed_prints_and_records_a_repeatable_seed(single_file, tmp_path):
    result = nvfp4("quantize", single_file, "-o", tmp_path / "r1.safetensors", "--mode", "rs")
    assert result.exit_code == 0
    seed = int(re.search(r"--seed (\d+)", result.stderr).group(1))
    with safe_open(tmp_path / "r1.safetensors", framework="pt") as handle:
        assert json.loads(handle.metadata()["nvfp4"])["seed"] == seed
    assert nvfp4("quantize", single_file, "-o", tmp_path / "r2.safetensors", "--mode", "rs", "--seed", seed).exit_code == 0
    assert (tmp_path / "r1.safetensors").read_bytes() == (tmp_path / "r2.safetensors").read_bytes()


def test_a_seed_with_rn_is_flagged_and_changes_nothing(single_file, tmp_path):
    seeded = nvfp4("quantize", single_file, "-o", tmp_path / "seeded.safetensors", "--seed", "5")
    plain = nvfp4("quantize", single_file, "-o", tmp_path / "plain.safetensors")
    assert seeded.exit_code == 0 and plain.exit_code == 0
    assert seeded.stderr.strip() == "nvfp4: --seed has no effect with --mode rn (it rounds to nearest, with no random bits)"
    assert plain.stderr == ""
    assert (tmp_path / "seeded.safetensors").read_bytes() == (tmp_path / "plain.safetensors").read_bytes()


def test_dry_run_writes_nothing_and_honours_globs(model):
    result = nvfp4("quantize", model, "--dry-run", "--json", "--include", "*mlp*", "--include", "lm_head.weight", "--exclude", "*.1.*")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dry_run"] and not Path(report["output"]).exists()
    assert sorted(report["quantized"]) == ["lm_head.weight", *[f"model.layers.0.mlp.{p}_proj.weight" for p in ("down", "gate", "up")]]
    reasons = {item["name"]: item["reason"] for item in report["skipped"]}
    assert reasons["model.layers.1.mlp.up_proj.weight"] == "excluded by --exclude '*.1.*'"
    assert reasons["model.layers.0.self_attn.q_proj.weight"] == "not matched by --include"
    table = nvfp4("quantize", model, "--dry-run")
    assert table.exit_code == 0 and "dry run: nothing written" in table.stdout and "lm_head.weight" in table.stdout


def test_table_output_summarises_the_run(model, tmp_path):
    result = nvfp4("quantize", model, "-o", tmp_path / "out")
    assert result.exit_code == 0
    for label in ("tensors quantized", "bytes in", "bytes out", "compression (NVFP4 at bf16)", "throughput", "model.embed_tokens.weight"):
        assert label in result.stdout


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["quantize", "{tmp}/missing"], 1, "no such file or directory"),
        (["quantize", "{tmp}/garbage.safetensors"], 1, "not a readable safetensors file"),
        (["quantize", "{model}", "--max-shard-size", "lots"], 2, "invalid size 'lots'"),
        (["quantize", "{model}", "-o", "{model}", "--force"], 2, "would overwrite or write into the input"),
        (["quantize", "{tmp}/nan.safetensors"], 1, "tensor 'fc.weight'"),
        (["quantize", "{model}", "--mode", "rq"], 2, "'rq' is not one of"),
        (["dequantize", "{model}", "-o", "{tmp}/deq"], 1, "no quantized weights to dequantize"),
        (["inspect", "{tmp}/missing"], 1, "no such file or directory"),
    ],
)
def test_errors_are_one_line_with_exit_codes(model, tmp_path, args, code, message):
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 32)
    save_file({"fc.weight": torch.tensor([[float("nan")] * 16])}, tmp_path / "nan.safetensors")
    result = nvfp4(*[arg.format(tmp=tmp_path, model=model) for arg in args])
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1


def test_dequantize_and_inspect(model, tmp_path):
    assert nvfp4("quantize", model, "-o", tmp_path / "q", "--format", "modelopt").exit_code == 0
    inspected = nvfp4("inspect", tmp_path / "q", "--json")
    assert inspected.exit_code == 0
    report = json.loads(inspected.stdout)
    assert report["totals"]["quantized"] == 14 and report["totals"]["ratio"] > 2
    assert {row["format"] for row in report["tensors"]} == {"plain", "modelopt"}
    table = nvfp4("inspect", tmp_path / "q")
    assert table.exit_code == 0 and "compression ratio" in table.stdout and "model.layers.1.mlp.up_proj.weight" in table.stdout
    result = nvfp4("dequantize", tmp_path / "q", "-o", tmp_path / "f", "--dtype", "fp16", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tensors_dequantized"] == 14
    restored = load_file(tmp_path / "f" / "model.safetensors")
    assert restored["model.layers.1.mlp.up_proj.weight"].dtype == torch.float16
    assert restored["model.norm.weight"].dtype == torch.bfloat16  # copied tensors keep their dtype
    assert not (tmp_path / "f" / "hf_quant_config.json").exists()
    again = nvfp4("dequantize", tmp_path / "q", "-o", tmp_path / "f")
    assert again.exit_code == 2 and "--force" in again.stderr
