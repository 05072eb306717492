"""Bad input through the real CLI: every command answers with one line on stderr that names the
file, tensor or option and the problem, exits 2 (usage) or 1 (data) (diff: 2 for any trouble),
shows no traceback (unless --debug), leaves nothing behind and never touches its input.

Corrupt files are written here by hand (struct + json, or torch tensors through the safetensors
library), independently of the code under test. Every case compares the whole working directory
(hidden entries included) before and after the failed run.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli_runner import nvfp4

WEIGHT = "layers.0.mlp.down_proj.weight"
F32_BLOCK = [2, 16]  # a tensor of this shape in F32 takes 128 bytes


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under root (hidden ones included) with a file's bytes: the whole state a run may touch."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def assert_clean_failure(result, code: int, *named: str) -> None:
    assert result.exit_code == code, result.output
    # CliRunner keeps an uncaught exception in result.exception; a clean exit is a SystemExit.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nvfp4: error: "), lines[0]
    for name in named:
        assert name in lines[0], (name, lines[0])


def fails_cleanly(root: Path, args: list[object], code: int, *named: str) -> None:
    """Run args; assert a clean failure and that nothing under root changed."""
    before = tree(root)
    assert_clean_failure(nvfp4(*args), code, *named)
    assert tree(root) == before


def raw_safetensors(header: object, data: bytes = b"", header_length: int | None = None) -> bytes:
    """A safetensors file as the format defines it: u64 little-endian header length, JSON, data."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if header_length is None else header_length) + text + data


def f32_entry(offsets: list[int], dtype: str = "F32", shape: list[int] = F32_BLOCK) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


@pytest.fixture
def work(tmp_path) -> Path:
    """tmp_path with good.safetensors: a quantizable weight and a bias."""
    g = torch.Generator().manual_seed(0)
    save_file({WEIGHT: torch.randn(32, 64, generator=g), "layers.0.mlp.down_proj.bias": torch.randn(32, generator=g)}, tmp_path / "good.safetensors")
    return tmp_path


# ---- files that are not valid safetensors ----------------------------------------------------

# case -> (bytes of the broken file from the good file's bytes, words the error must contain)
CORRUPT_FILES: dict[str, tuple[Callable[[bytes], bytes], tuple[str, ...]]] = {
    "empty": (lambda good: b"", ("not a readable safetensors file",)),
    "random bytes": (lambda good: random.Random(0).randbytes(300), ("not a readable safetensors file",)),
    "truncated data": (lambda good: good[:-100], ("not a readable safetensors file", "outside the")),
    "bytes after the last tensor": (lambda good: good + bytes(8), ("8 bytes after the last tensor",)),
    "truncated header": (lambda good: good[:20], ("not a readable safetensors file",)),
    "absurd header length": (lambda good: raw_safetensors({}, header_length=2**62), ("header length 4611686018427387904 exceeds",)),
    "header longer than file": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128])}, bytes(128), header_length=10**6), ("header",)),
    "header not JSON": (lambda good: raw_safetensors(b"this is not json"), ("header is not JSON",)),
    "header a JSON list": (lambda good: raw_safetensors([1, 2, 3]), ("header is not a JSON object",)),
    "offsets beyond the data": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128])}, bytes(64)), ("data_offsets [0, 128] outside the 64 bytes",)),
    "offsets past the end": (lambda good: raw_safetensors({WEIGHT: f32_entry([64, 192])}, bytes(128)), (WEIGHT,)),
    "offsets disagree with shape": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 64]), "pad": f32_entry([64, 128], "U8", [64])}, bytes(128)), ("[2, 16] F32 does not fit its 64 bytes",)),
    "overlapping offsets": (
        lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128]), "other.weight": f32_entry([0, 128])}, bytes(128)),
        ("'other.weight' starts at byte 0", "overlap"),
    ),
    "unknown dtype": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128], dtype="Q7")}, bytes(128)), (WEIGHT, "unknown dtype 'Q7'")),
    # C64 is copied without being decoded (tests/test_edge_cases.py), but its size is still checked
    "dtype copied raw, wrong size": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128], dtype="C64")}, bytes(128)), (WEIGHT, "[2, 16] C64 does not fit its 128 bytes")),
    "sub-byte dtype, wrong size": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128], dtype="F4")}, bytes(128)), (WEIGHT, "[2, 16] F4 does not fit its 128 bytes")),
    "negative dim": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128], shape=[-2, 16])}, bytes(128)), ("invalid shape [-2, 16]",)),
    "size overflows": (lambda good: raw_safetensors({WEIGHT: f32_entry([0, 128], shape=[2**40] * 3)}, bytes(128)), ("[1099511627776, 1099511627776, 1099511627776] F32 does not fit its 128 bytes",)),
    "metadata not strings": (lambda good: raw_safetensors({"__metadata__": {"format": 1}, WEIGHT: f32_entry([0, 128])}, bytes(128)), ("string",)),
}


@pytest.mark.parametrize("case", CORRUPT_FILES)
@pytest.mark.parametrize(
    "command, code",
    [
        (("quantize", "{bad}", "-o", "{tmp}/out.safetensors"), 1),
        (("dequantize", "{bad}", "-o", "{tmp}/out.safetensors"), 1),
        (("inspect", "{bad}"), 1),
        (("diff", "{bad}", "{tmp}/good.safetensors"), 2),
        (("diff", "{tmp}/good.safetensors", "{bad}"), 2),
    ],
    ids=["quantize", "dequantize", "inspect", "diff-a", "diff-b"],
)
def test_corrupt_safetensors_file(work, case, command, code):
    make, words = CORRUPT_FILES[case]
    bad = work / "bad.safetensors"
    bad.write_bytes(make((work / "good.safetensors").read_bytes()))
    fails_cleanly(work, [arg.format(bad=bad, tmp=work) for arg in command], code, "bad.safetensors", *words)


# ---- valid safetensors, broken NVFP4 -----------------------------------------------------------

CT_BASE = "fc"


def ct_tensors() -> dict[str, torch.Tensor]:
    """A well-formed compressed-tensors NVFP4 weight of logical shape [32, 64], built by hand."""
    g = torch.Generator().manual_seed(1)
    return {
        f"{CT_BASE}.weight_packed": torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=g),
        f"{CT_BASE}.weight_scale": torch.rand(32, 4, generator=g).add(0.5).to(torch.float8_e4m3fn),
        f"{CT_BASE}.weight_global_scale": torch.tensor([2688.0]),
    }


def _set(name: str, value: torch.Tensor) -> Callable[[dict], None]:
    return lambda tensors: tensors.__setitem__(f"{CT_BASE}.{name}", value)


def _nan_scale(tensors: dict) -> None:
    scales = tensors[f"{CT_BASE}.weight_scale"].view(torch.uint8).clone()
    scales[3, 1] = 0xFF  # E4M3FN NaN (sign set)
    scales[7, 2] = 0x7F
    tensors[f"{CT_BASE}.weight_scale"] = scales.view(torch.float8_e4m3fn)


# case -> (mutation, words, whether inspect (which reads headers and tensor scales only) sees it)
BROKEN_NVFP4 = {
    "global scale zero": (_set("weight_global_scale", torch.tensor([0.0])), ("weight_global_scale", "positive and finite"), True),
    "global scale negative": (_set("weight_global_scale", torch.tensor([-2688.0])), ("weight_global_scale", "-2688"), True),
    "global scale NaN": (_set("weight_global_scale", torch.tensor([float("nan")])), ("weight_global_scale", "nan"), True),
    "global scale Inf": (_set("weight_global_scale", torch.tensor([float("inf")])), ("weight_global_scale", "inf"), True),
    "global scale reciprocal overflows": (_set("weight_global_scale", torch.tensor([1e-45])), ("weight_global_scale",), True),
    "block scales NaN": (_nan_scale, ("weight_scale", "2 NaN block scale"), False),
    "block scales missing": (lambda tensors: tensors.pop(f"{CT_BASE}.weight_scale"), ("has no 'fc.weight_scale'",), True),
    "global scale missing": (lambda tensors: tensors.pop(f"{CT_BASE}.weight_global_scale"), ("has no 'fc.weight_global_scale'",), True),
    "packed not uint8": (_set("weight_packed", torch.zeros(32, 32, dtype=torch.int8)), ("must be uint8",), True),
    "scales not float8": (_set("weight_scale", torch.ones(32, 4, dtype=torch.float16)), ("float8_e4m3fn",), True),
    "packed and scales disagree": (_set("weight_packed", torch.zeros(32, 8, dtype=torch.uint8)), ("(32, 8)", "(32, 4)"), True),
    "packed 0-d": (_set("weight_packed", torch.zeros((), dtype=torch.uint8)), ("weight_packed",), True),
    "global scale of two values": (_set("weight_global_scale", torch.ones(2)), ("must hold one value",), True),
}


@pytest.mark.parametrize("case", BROKEN_NVFP4)
def test_broken_nvfp4_weight(tmp_path, case):
    mutate, words, inspect_sees_it = BROKEN_NVFP4[case]
    save_file(ct_tensors(), tmp_path / "good.safetensors")
    assert nvfp4("dequantize", tmp_path / "good.safetensors", "-o", tmp_path / "control.safetensors").exit_code == 0  # the control decodes
    (tmp_path / "control.safetensors").unlink()
    tensors = ct_tensors()
    mutate(tensors)
    save_file(tensors, tmp_path / "bad.safetensors")
    bad = tmp_path / "bad.safetensors"
    fails_cleanly(tmp_path, ["dequantize", bad, "-o", tmp_path / "out.safetensors"], 1, "bad.safetensors", *words)
    fails_cleanly(tmp_path, ["diff", tmp_path / "good.safetensors", bad], 2, "bad.safetensors", *words)
    fails_cleanly(tmp_path, ["quantize", bad, "-o", tmp_path / "out.safetensors"], 1, "bad.safetensors")  # already NVFP4, or broken
    if inspect_sees_it:
        fails_cleanly(tmp_path, ["inspect", bad], 1, "bad.safetensors", *words)


def test_modelopt_tensor_scale_zero(tmp_path):
    tensors = ct_tensors()
    modelopt = {"fc.weight": tensors["fc.weight_packed"], "fc.weight_scale": tensors["fc.weight_scale"], "fc.weight_scale_2": torch.tensor(0.0)}
    save_file(modelopt, tmp_path / "bad.safetensors")
    fails_cleanly(tmp_path, ["dequantize", tmp_path / "bad.safetensors", "-o", tmp_path / "out.safetensors"], 1, "'fc.weight_scale_2' holds 0.0")


# ---- model directories and indexes -----------------------------------------------------------


def write_model(directory: Path, shards: dict[str, dict[str, torch.Tensor]], weight_map: object | None = None) -> Path:
    """A model directory: config.json, the shards, and an index when weight_map is given."""
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for file_name, tensors in shards.items():
        save_file(tensors, directory / file_name)
    if weight_map is not None:
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def _weights(*names: str) -> dict[str, torch.Tensor]:
    return {name: torch.ones(16, 32) for name in names}


# case -> (make the model directory in tmp, words the error must contain)
BROKEN_MODELS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "directory without weights": (lambda tmp: write_model(tmp / "model", {}), ("no .safetensors file",)),
    "index naming a missing shard": (
        lambda tmp: write_model(tmp / "model", {"a.safetensors": _weights("x.weight")}, {"x.weight": "a.safetensors", "y.weight": "gone.safetensors"}),
        ("gone.safetensors does not exist",),
    ),
    "index naming a shard outside the directory": (
        lambda tmp: write_model(tmp / "model", {"a.safetensors": _weights("x.weight")}, {"x.weight": "../good.safetensors"}),
        ("'../good.safetensors' is not a path inside",),
    ),
    "index naming a shard by absolute path": (
        lambda tmp: write_model(tmp / "model", {"a.safetensors": _weights("x.weight")}, {"x.weight": str(tmp / "good.safetensors")}),
        ("is not a path inside",),
    ),
    "index without weight_map": (lambda tmp: write_model(tmp / "model", {"a.safetensors": _weights("x.weight")}, []), ("weight_map",)),
    "index not JSON": (
        lambda tmp: (write_model(tmp / "model", {"a.safetensors": _weights("x.weight")}) / "model.safetensors.index.json").write_text("{") and tmp / "model",
        ("model.safetensors.index.json", "invalid JSON"),
    ),
    "duplicate tensor names across shards": (
        lambda tmp: write_model(
            tmp / "model",
            {"a.safetensors": _weights("x.weight"), "b.safetensors": _weights("x.weight", "y.weight")},
            {"x.weight": "a.safetensors", "y.weight": "b.safetensors"},
        ),
        ("'x.weight' is also stored in",),
    ),
    "tensor stored where the index does not say": (
        lambda tmp: write_model(
            tmp / "model", {"a.safetensors": _weights("x.weight"), "b.safetensors": _weights("y.weight")}, {"x.weight": "b.safetensors", "y.weight": "b.safetensors"}
        ),
        ("'x.weight' is listed in b.safetensors but not stored there",),
    ),
    "tensor missing from the index": (
        lambda tmp: write_model(tmp / "model", {"a.safetensors": _weights("x.weight", "y.weight")}, {"x.weight": "a.safetensors"}),
        ("'y.weight'", "missing from the index"),
    ),
    "several weight files, no index": (
        lambda tmp: write_model(tmp / "model", {"a.safetensors": _weights("x.weight"), "b.safetensors": _weights("y.weight")}),
        ("several candidates",),
    ),
    "config.json not JSON": (
        lambda tmp: (write_model(tmp / "model", {"model.safetensors": _weights("x.weight")}) / "config.json").write_text("{oops") and tmp / "model",
        ("config.json", "invalid JSON"),
    ),
    "config.json a list": (
        lambda tmp: (write_model(tmp / "model", {"model.safetensors": _weights("x.weight")}) / "config.json").write_text("[]") and tmp / "model",
        ("config.json", "expected a JSON object"),
    ),
}


@pytest.mark.parametrize("case", BROKEN_MODELS)
def test_broken_model_directory(work, case):
    make, words = BROKEN_MODELS[case]
    model = make(work)
    fails_cleanly(work, ["quantize", model, "-o", work / "out"], 1, *words)
    fails_cleanly(work, ["inspect", model], 1, *words)
    fails_cleanly(work, ["dequantize", model, "-o", work / "out"], 1, *words)
    fails_cleanly(work, ["diff", model, work / "good.safetensors"], 2, *words)


# ---- NaN and Inf in weights ------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.k_proj.weight"], ids=["single", "fused-group"])
def test_non_finite_weight_names_the_tensor_and_the_count(tmp_path, victim):
    names = ("model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight")
    tensors = {name: torch.randn(32, 64) for name in names}
    tensors[victim][1, 3] = float("nan")
    tensors[victim][5, 0] = float("inf")
    tensors[victim][9, 9] = float("-inf")
    model = write_model(tmp_path / "model", {"model.safetensors": tensors})
    fails_cleanly(
        tmp_path, ["quantize", model, "-o", tmp_path / "out"], 1, "model.safetensors", f"'{victim}'", "3 non-finite", "first at index (1, 3)"
    )


# ---- outputs ---------------------------------------------------------------------------------


def test_existing_output_needs_force_and_is_kept(work):
    for output in (work / "exists.safetensors", work / "exists-dir"):
        (output.mkdir() if output.suffix == "" else output.write_bytes(b"precious"))
    fails_cleanly(work, ["quantize", work / "good.safetensors", "-o", work / "exists.safetensors"], 2, "exists.safetensors", "--force")
    model = write_model(work / "model", {"model.safetensors": _weights("x.weight")})
    fails_cleanly(work, ["quantize", model, "-o", work / "exists-dir"], 2, "exists-dir", "--force")
    assert nvfp4("quantize", work / "good.safetensors", "-o", work / "once.safetensors").exit_code == 0
    fails_cleanly(work, ["dequantize", work / "once.safetensors", "-o", work / "exists.safetensors"], 2, "--force")


@pytest.mark.parametrize(
    "args, words",
    [
        (["quantize", "{tmp}/good.safetensors", "-o", "{tmp}/good.safetensors/out.safetensors"], ("good.safetensors", "is not a directory")),
        (["quantize", "{tmp}/good.safetensors", "-o", "{tmp}/no/such/out.safetensors"], ("does not exist",)),
        (["quantize", "{tmp}/good.safetensors", "-o", "{tmp}/good.safetensors", "--force"], ("would overwrite or write into the input",)),
        (["quantize", "{tmp}/good.safetensors", "-o", "{tmp}/out.bin"], ("out.bin", "must end with .safetensors")),
        (["quantize", "{tmp}/model", "-o", "{tmp}/model/inside"], ("would overwrite or write into the input",)),
        (["quantize", "{tmp}/model", "-o", "{tmp}/good.safetensors/out"], ("is not a directory",)),
        (["bench", "--shape", "16x32", "--iters", "1", "--csv", "{tmp}/good.safetensors/b.csv"], ("good.safetensors", "is not a directory")),
        (["bench", "--shape", "16x32", "--iters", "1", "--csv", "{tmp}/good.safetensors"], ("good.safetensors", "--force")),
    ],
    ids=["under-a-file", "missing-parent", "onto-input", "not-safetensors", "into-input-dir", "dir-under-a-file", "csv-under-a-file", "csv-exists"],
)
def test_bad_output_path(work, args, words):
    write_model(work / "model", {"model.safetensors": _weights("x.weight")})
    fails_cleanly(work, [arg.format(tmp=work) for arg in args], 2, *words)


@contextlib.contextmanager
def tmpfs(directory: Path, options: str) -> Iterator[Path]:
    """directory, made, with a tmpfs mounted on it (mount -o options) for the block; a skip where
    mounting is not permitted (it needs root). A small or read-only filesystem fails for root too."""
    directory.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 2 MB disk."""
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        yield disk


def test_full_disk(tmp_path, full_disk):
    # 4 MB kept in float (an embedding): more than the disk holds, whatever the quantized part.
    tensors = {"model.embed_tokens.weight": torch.randn(1024, 1024), "model.layers.0.mlp.up_proj.weight": torch.randn(64, 64)}
    model = write_model(tmp_path / "model", {"model.safetensors": tensors})
    for args in (["quantize", model, "-o", full_disk / "out"], ["quantize", model / "model.safetensors", "-o", full_disk / "out.safetensors"]):
        before = tree(tmp_path)
        assert_clean_failure(nvfp4(*args), 1, str(args[-1]), "No space left on device")
        assert tree(tmp_path) == before
        assert list(full_disk.iterdir()) == []


# ---- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["quantize", "{good}", "--mode", "rq"], ("--mode", "'rq'")),
        (["quantize", "{good}", "--backend", "cuda-magic"], ("--backend", "cuda-magic")),
        (["quantize", "{good}", "--format", "gguf"], ("--format", "gguf")),
        (["quantize", "{good}", "--scale-rule", "best"], ("--scale-rule", "best")),
        (["quantize", "{good}", "--device", "tpu"], ("--device", "tpu")),
        (["quantize", "{good}", "--mode", "rs", "--seed", "-1"], ("--seed",)),
        (["quantize", "{good}", "--mode", "rs", "--seed", str(2**63)], ("--seed",)),
        (["quantize", "{good}", "--mode", "rs", "--seed", "seven"], ("--seed",)),
        (["quantize", "{good}", "--max-shard-size", "lots"], ("invalid size 'lots'",)),
        (["quantize", "{good}", "--max-shard-size", "0MB"], ("invalid size '0MB'",)),
        (["quantize", "{good}", "--no-such-option"], ("--no-such-option",)),
        (["quantize"], ("Missing argument 'INPUT'",)),
        (["frobnicate"], ("frobnicate",)),
        (["dequantize", "{good}", "-o", "{tmp}/o.safetensors", "--dtype", "fp8"], ("--dtype", "fp8")),
        (["dequantize", "{good}"], ("--output",)),
        (["bench", "--shape", "64by64"], ("malformed shape '64by64'",)),
        (["bench", "--shape", "64x"], ("malformed shape '64x'",)),
        (["bench", "--shape", "0x64"], ("'0x64'", "not positive")),
        (["bench", "--shape", "64x-16"], ("'64x-16'",)),
        (["bench", "--shape", "16x17"], ("last dim 17 is not a multiple of 16",)),
        (["bench", "--mode", "rz"], ("unknown mode 'rz'",)),
        (["bench", "--backend", "fastest"], ("unknown backend 'fastest'",)),
        (["bench", "--dtype", "fp8"], ("unknown dtype 'fp8'",)),
        (["bench", "--iters", "0"], ("iters",)),
        (["diff", "{good}", "{good}", "--sort", "size"], ("--sort", "size")),
        (["diff", "{good}", "{good}", "--top", "0"], ("--top",)),
        (["diff", "{good}", "{good}", "--min-sqnr", "nan"], ("--min-sqnr",)),
        (["diff", "{good}", "{good}", "--min-sqnr", "loud"], ("--min-sqnr",)),
        (["diff", "{good}"], ("Missing argument",)),
    ],
)
def test_bad_argument_is_a_usage_error(work, args, words):
    fails_cleanly(work, [arg.format(good=work / "good.safetensors", tmp=work) for arg in args], 2, *words)


# ---- the wrong kind of file ------------------------------------------------------------------


def make_kinds(tmp: Path) -> None:
    (tmp / "config.json").write_text("{}")
    (tmp / "notes.txt").write_text("hello")
    torch.save({"w": torch.ones(2)}, tmp / "pytorch_model.bin")
    shutil.copy(tmp / "pytorch_model.bin", tmp / "pickle.safetensors")
    save_file(ct_tensors(), tmp / "nvfp4.safetensors")


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["inspect", "{tmp}/config.json"], 1, ("config.json", "expected a .safetensors file")),
        (["inspect", "{tmp}/notes.txt"], 1, ("notes.txt",)),
        (["inspect", "{tmp}/pytorch_model.bin"], 1, ("pytorch_model.bin",)),
        (["inspect", "{tmp}/pickle.safetensors"], 1, ("pickle.safetensors", "not a readable safetensors file")),
        (["inspect", "{tmp}/missing.safetensors"], 1, ("missing.safetensors", "no such file or directory")),
        (["dequantize", "{tmp}/good.safetensors", "-o", "{tmp}/o.safetensors"], 1, ("good.safetensors", "no quantized weights")),
        (["dequantize", "{tmp}/pytorch_model.bin", "-o", "{tmp}/o.safetensors"], 1, ("pytorch_model.bin",)),
        (["dequantize", "{tmp}/config.json", "-o", "{tmp}/o.safetensors"], 1, ("config.json",)),
        (["quantize", "{tmp}/nvfp4.safetensors", "-o", "{tmp}/o.safetensors"], 1, ("nvfp4.safetensors", "already NVFP4")),
        (["quantize", "{tmp}/pytorch_model.bin"], 1, ("pytorch_model.bin",)),
        (["quantize", "{tmp}/missing"], 1, ("missing", "no such file or directory")),
        (["diff", "{tmp}/config.json", "{tmp}/good.safetensors"], 2, ("config.json",)),
        (["diff", "{tmp}/good.safetensors", "{tmp}/pytorch_model.bin"], 2, ("pytorch_model.bin",)),
        (["diff", "{tmp}/good.safetensors", "{tmp}/pickle.safetensors"], 2, ("pickle.safetensors",)),
        (["diff", "{tmp}/good.safetensors", "{tmp}/missing.safetensors"], 2, ("missing.safetensors",)),
    ],
)
def test_wrong_kind_of_file(work, args, code, words):
    make_kinds(work)
    fails_cleanly(work, [arg.format(tmp=work) for arg in args], code, *words)


def test_debug_shows_the_traceback_instead(work):
    (work / "bad.safetensors").write_bytes(b"")
    result = nvfp4("inspect", work / "bad.safetensors", "--debug")
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "DataError" and "bad.safetensors" in str(result.exception)
