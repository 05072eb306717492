"""The edge cases a new user hit (issue 15), each through the CLI: what a user expects, with at
most one line on stderr and no traceback.

Files are read back with the safetensors library or by parsing the byte layout by hand, and
numbers are checked against values computed here (numpy decoding, sums over the headers), never
against the code under test's own output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_runner import SAMPLE, nvfp4
from paused_run import PausedRun
from test_robustness import fails_cleanly, raw_safetensors, tmpfs

REPO = SAMPLE.parent.parent
GRID = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])


def ok(*args: object):
    result = nvfp4(*args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def ok_json(*args: object) -> dict:
    return json.loads(ok(*args, "--json").stdout)


def header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """(tensor entries, __metadata__) of a safetensors file, parsed from its bytes."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    entries = json.loads(data[8 : 8 + length])
    return entries, entries.pop("__metadata__", {})


def raw_tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (dtype, shape, stored bytes), parsed by hand (any dtype, known to torch or not)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    entries, _ = header(path)
    start = 8 + length
    return {name: (e["dtype"], e["shape"], data[start + e["data_offsets"][0] : start + e["data_offsets"][1]]) for name, e in entries.items()}


def tree(root: Path) -> dict[str, str | None]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def weights(generator: torch.Generator, *names: str, shape=(32, 64)) -> dict[str, torch.Tensor]:
    return {name: torch.randn(shape, generator=generator) for name in names}


@pytest.fixture
def every_worker(monkeypatch) -> None:
    """--workers N starts all N processes even for these small checkpoints (it may otherwise
    convert a checkpoint too small for workers to pay in this process)."""
    monkeypatch.setenv("NVFP4_WORKER_MIN_BYTES", "0")


# ---- a weight with zero rows ----------------------------------------------------------------------


def test_zero_row_weight_is_copied_with_a_reason(tmp_path):
    g = torch.Generator().manual_seed(1)
    source = tmp_path / "m.safetensors"
    save_file({"layers.0.mlp.down_proj.weight": torch.empty(0, 64), **weights(g, "layers.0.mlp.up_proj.weight")}, source)
    result = ok("quantize", source, "-o", tmp_path / "q.safetensors", "--json")
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["quantized"] == ["layers.0.mlp.up_proj.weight"]
    assert report["skipped"] == [{"name": "layers.0.mlp.down_proj.weight", "reason": "no rows (an empty tensor): nothing to quantize"}]
    out = load_file(tmp_path / "q.safetensors")
    assert out["layers.0.mlp.down_proj.weight"].shape == (0, 64) and out["layers.0.mlp.down_proj.weight"].dtype == torch.float32
    record = json.loads(header(tmp_path / "q.safetensors")[1]["nvfp4"])
    assert "layers.0.mlp.down_proj" in record["quantization_config"]["ignore"]  # loaders must not expect it quantized
    back = ok_json("dequantize", tmp_path / "q.safetensors", "-o", tmp_path / "d.safetensors")
    assert back["tensors_dequantized"] == 1 and load_file(tmp_path / "d.safetensors")["layers.0.mlp.down_proj.weight"].shape == (0, 64)


# ---- a closed stdout ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_tensors(tmp_path_factory) -> Path:
    """4000 small weights of last dim 8 (kept, each with a reason): inspect and quantize print far
    more than a pipe holds (64 KiB), so a reader that stops early really closes the pipe on them."""
    path = tmp_path_factory.mktemp("many") / "many.safetensors"
    save_file({f"model.layers.{i}.mlp.fc.weight": torch.zeros(4, 8) for i in range(4000)} | {"model.layers.0.mlp.up_proj.weight": torch.ones(16, 16)}, path)
    return path


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--json"], ["quantize", "-o", "{tmp}/q.safetensors"]], ids=["inspect", "inspect-json", "quantize"])
def test_a_reader_that_stops_early_is_not_an_error(many_tensors, tmp_path, command):
    """`nvfp4 inspect X | head -1`: exit 0 and nothing on stderr; a quantize whose report is cut
    short has still written its whole output."""
    args = [arg.format(tmp=tmp_path) for arg in command]
    writer = subprocess.Popen([sys.executable, "-m", "nvfp4cli", args[0], str(many_tensors), *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    head = subprocess.Popen(["head", "-1"], stdin=writer.stdout, stdout=subprocess.PIPE)
    writer.stdout.close()  # only head holds the read end: when it exits, the pipe is closed
    first_line, _ = head.communicate(timeout=120)
    stderr = writer.stderr.read()
    writer.stderr.close()
    assert writer.wait(timeout=120) == 0, stderr
    assert stderr == b"" and first_line.strip()
    if args[0] == "quantize":
        assert first_line.decode().strip() == f"quantized to {tmp_path / 'q.safetensors'}"
        assert len(load_file(tmp_path / "q.safetensors")) == 4000 + 3


# ---- --include / --exclude that match nothing -------------------------------------------------


@pytest.mark.parametrize("flag", ["--include", "--exclude"])
def test_a_pattern_matching_no_weight_is_a_usage_error(tmp_path, flag):
    shutil.copytree(SAMPLE, tmp_path / "model")
    fails_cleanly(tmp_path, ["quantize", tmp_path / "model", "-o", tmp_path / "out", flag, "*.layers.*.mlp.*", flag, "*q_projection*"], 2, f"{flag} '*q_projection*'", "matches no weight")


# ---- weight files beside the checkpoint ----------------------------------------------------------


def extra_files_model(root: Path, layout: str) -> tuple[Path, dict[str, str]]:
    """A model directory with weight files that are not its checkpoint; returns it and the
    extra files (relative path -> the words their reason must hold)."""
    model = root / "model"
    model.mkdir()
    g = torch.Generator().manual_seed(2)
    tensors = weights(g, "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight") | {"model.norm.weight": torch.ones(64)}
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    save_file({"base_model.model.layers.0.mlp.up_proj.lora_A.weight": torch.randn(8, 64, generator=g)}, model / "adapter_model.safetensors")
    extras = {"adapter_model.safetensors": "an adapter"}
    if layout == "index":
        names = list(tensors)
        save_file({name: tensors[name] for name in names[:2]}, model / "model-00001-of-00002.safetensors")
        save_file({name: tensors[name] for name in names[2:]}, model / "model-00002-of-00002.safetensors")
        weight_map = {name: f"model-0000{1 if i < 2 else 2}-of-00002.safetensors" for i, name in enumerate(names)}
        (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        save_file(tensors, model / "consolidated.safetensors")
        (model / "original").mkdir()
        torch.save(tensors, model / "original" / "consolidated.00.pth")
        (model / "original" / "params.json").write_text('{"dim": 64}')
        (model / "deep" / "er").mkdir(parents=True)
        save_file({"x": torch.ones(2)}, model / "deep" / "er" / "extra.safetensors")
        extras |= {"consolidated.safetensors": "same weights", "original/consolidated.00.pth": "same weights", "deep/er/extra.safetensors": "not part of the checkpoint"}
    else:
        save_file(tensors, model / "model.safetensors")
    return model, extras


@pytest.mark.parametrize("layout", ["index", "single"])
def test_extra_weight_files_are_reported_and_never_converted_nor_copied(tmp_path, layout):
    model, extras = extra_files_model(tmp_path, layout)
    result = ok("quantize", model, "-o", tmp_path / "out", "--json")
    notes = result.stderr.splitlines()
    assert len(notes) == len(extras)
    for line, (file, words) in zip(notes, sorted(extras.items())):
        assert line.startswith(f"nvfp4: note: {file}: ") and words in line and "neither converted nor copied" in line, line
    report = json.loads(result.stdout)
    assert sorted(item["file"] for item in report["skipped_files"]) == sorted(extras)
    assert sorted(report["quantized"]) == ["model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"]
    output = tmp_path / "out"
    files = {str(path.relative_to(output)) for path in output.rglob("*") if path.is_file()}
    assert files - {"config.json", "tokenizer.json", "original/params.json"} == {"model.safetensors"}  # no weight file at any depth
    assert (output / "tokenizer.json").read_bytes() == (model / "tokenizer.json").read_bytes()
    if layout == "index":
        assert (output / "original" / "params.json").read_bytes() == (model / "original" / "params.json").read_bytes()
    assert ok_json("inspect", model)["skipped_files"] == report["skipped_files"]
    # dequantize leaves weight files beside its input out the same way
    save_file({"x": torch.ones(2)}, output / "consolidated.safetensors")
    back = ok("dequantize", output, "-o", tmp_path / "back", "--json")
    assert back.stderr.splitlines() == ["nvfp4: note: consolidated.safetensors: another layout of the same weights (consolidated checkpoint): neither converted nor copied"]
    assert not (tmp_path / "back" / "consolidated.safetensors").exists()


# ---- metadata ------------------------------------------------------------------------------------


def test_input_metadata_is_kept_by_quantize_and_dequantize(tmp_path):
    g = torch.Generator().manual_seed(3)
    metadata = {"format": "pt", "author": "Ada", "license": "apache-2.0"}
    save_file(weights(g, "layers.0.mlp.up_proj.weight", "layers.1.mlp.up_proj.weight"), tmp_path / "m.safetensors", metadata=metadata)
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tmp_path / "m.safetensors", model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    ok("quantize", tmp_path / "m.safetensors", "-o", tmp_path / "q.safetensors")
    ok("quantize", model, "-o", tmp_path / "q", "--max-shard-size", "2kB")
    ok("dequantize", tmp_path / "q.safetensors", "-o", tmp_path / "d.safetensors")
    outputs = [tmp_path / "q.safetensors", tmp_path / "d.safetensors", *sorted((tmp_path / "q").glob("*.safetensors"))]
    assert len(outputs) == 4
    for path in outputs:
        with safe_open(path, "pt") as file:
            kept = file.metadata()
        assert {key: kept[key] for key in metadata} == metadata, path
        assert json.loads(kept["nvfp4"])["producer"].startswith("nvfp4cli")


# ---- dtypes this tool does not decode ---------------------------------------------------------------

RAW_DTYPES = {"scales_e8m0": ("F8_E8M0", [4], bytes(range(120, 124))), "codes_f4": ("F4", [2, 16], bytes(range(16))), "complex": ("C64", [3], np.arange(6, dtype=np.float32).tobytes())}


def test_unknown_dtypes_pass_through_byte_for_byte(tmp_path):
    weight = (torch.randn(16, 32, generator=torch.Generator().manual_seed(4)) / 3).to(torch.bfloat16)
    blobs = {"fc.weight": ("BF16", [16, 32], weight.view(torch.uint8).numpy().tobytes()), **RAW_DTYPES}
    entries, data = {}, b""
    for name, (dtype, shape, raw) in blobs.items():
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    source = tmp_path / "raw.safetensors"
    source.write_bytes(raw_safetensors(entries, data))
    report = ok_json("quantize", source, "-o", tmp_path / "q.safetensors")
    assert report["quantized"] == ["fc.weight"] and report["tensors_copied"] == 3
    ok("dequantize", tmp_path / "q.safetensors", "-o", tmp_path / "d.safetensors")
    for path in (tmp_path / "q.safetensors", tmp_path / "d.safetensors"):
        stored = raw_tensors(path)
        assert {name: stored[name] for name in RAW_DTYPES} == {name: (dtype, shape, raw) for name, (dtype, shape, raw) in RAW_DTYPES.items()}, path
    assert load_file(tmp_path / "d.safetensors")["fc.weight"].shape == (16, 32)
    rows = {row["name"]: row["dtype"] for row in ok_json("inspect", tmp_path / "q.safetensors")["tensors"]}
    assert rows == {"fc.weight": "nvfp4", "scales_e8m0": "F8_E8M0", "codes_f4": "F4", "complex": "C64"}


# ---- output paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_a_file_output_for_a_directory_input_is_a_usage_error(tmp_path, every_worker, extra):
    shutil.copytree(SAMPLE, tmp_path / "model")
    fails_cleanly(tmp_path, ["quantize", tmp_path / "model", "-o", tmp_path / "out.safetensors", *extra], 2, "out.safetensors", "the output is a directory")


@pytest.fixture
def symlinked_model(tmp_path, monkeypatch) -> Path:
    """tmp/models/llama-3 (a model) and tmp/work/llama -> ../models/llama-3; cwd tmp/work."""
    (tmp_path / "models").mkdir()
    shutil.copytree(SAMPLE, tmp_path / "models" / "llama-3")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "llama").symlink_to(Path("..") / "models" / "llama-3")
    monkeypatch.chdir(tmp_path / "work")
    return Path("llama")


def test_the_default_output_is_named_after_the_path_given_not_a_symlinks_target(symlinked_model, tmp_path):
    report = ok_json("quantize", symlinked_model)
    assert Path(report["output"]) == Path("llama-nvfp4")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["llama", "llama-nvfp4"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["llama-3"]


def test_a_symlinked_input_converts_like_its_target(symlinked_model, tmp_path):
    ok("quantize", symlinked_model, "-o", "via-link")
    ok("quantize", tmp_path / "models" / "llama-3", "-o", "direct")
    assert tree(tmp_path / "work" / "via-link") == tree(tmp_path / "work" / "direct")


@pytest.fixture
def read_only_directory(tmp_path) -> Iterator[Path]:
    """A read-only filesystem (read-only for root too, unlike chmod)."""
    with tmpfs(tmp_path / "read-only", "ro,size=1m") as directory:
        yield directory


@pytest.mark.parametrize("target, extra", [("out", []), ("out.safetensors", []), ("out", ["--workers", "2"])], ids=["directory", "file", "workers"])
def test_a_read_only_target_is_named_as_given(tmp_path, read_only_directory, every_worker, target, extra):
    source = SAMPLE if target == "out" else SAMPLE / "model-00002-of-00002.safetensors"
    output = read_only_directory / target
    result = nvfp4("quantize", source, "-o", output, *extra)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"nvfp4: error: {'rank 0: ' if extra else ''}{output}: Read-only file system"]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 300 kB disk: room for some shards of the model below, not all."""
    with tmpfs(tmp_path / "disk", "size=300k") as disk:
        yield disk


@pytest.mark.parametrize("extra, rank", [(["--max-shard-size", "100kB"], ""), (["--workers", "2"], "rank [01]: ")], ids=["one-process", "workers"])
def test_a_full_disk_names_the_shard_in_the_output_not_the_staging(tmp_path, small_disk, every_worker, extra, rank):
    model = tmp_path / "model"
    model.mkdir()
    g = torch.Generator().manual_seed(5)
    save_file(weights(g, *(f"model.layers.{i}.mlp.down_proj.weight" for i in range(8)), shape=(256, 256)) | weights(g, "model.embed_tokens.weight", shape=(512, 256)), model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    result = nvfp4("quantize", model, "-o", small_disk / "out", *extra)
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(rf"nvfp4: error: {rank}{re.escape(str(small_disk / 'out'))}/model-\d{{5}}-of-\d{{5}}\.safetensors: No space left on device", line), line
    assert list(small_disk.iterdir()) == []


def test_an_index_whose_shards_live_in_a_subfolder(tmp_path):
    model = tmp_path / "model"
    (model / "shards").mkdir(parents=True)
    g = torch.Generator().manual_seed(6)
    first, second = weights(g, "model.layers.0.mlp.up_proj.weight"), weights(g, "model.layers.0.mlp.down_proj.weight") | {"model.norm.weight": torch.ones(64)}
    save_file(first, model / "shards" / "a.safetensors")
    save_file(second, model / "shards" / "b.safetensors")
    weight_map = dict.fromkeys(first, "shards/a.safetensors") | dict.fromkeys(second, "shards/b.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (model / "config.json").write_text("{}")
    assert [row["name"] for row in ok_json("inspect", model)["tensors"]] == list(weight_map)
    report = ok_json("quantize", model, "-o", tmp_path / "out")
    assert report["quantized"] == list(first) + ["model.layers.0.mlp.down_proj.weight"] and report["skipped_files"] == []
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(out["model.norm.weight"], second["model.norm.weight"]) and "model.layers.0.mlp.up_proj.weight_packed" in out
    assert not list((tmp_path / "out").rglob("shards/*.safetensors"))
    assert ok_json("diff", model, tmp_path / "out")["summary"]["compared"] == 3
    assert ok_json("dequantize", tmp_path / "out", "-o", tmp_path / "back")["tensors_dequantized"] == 2


def test_a_folder_of_weight_files_leaves_no_empty_folder(tmp_path):
    model = tmp_path / "model"
    (model / "shards").mkdir(parents=True)
    save_file(weights(torch.Generator().manual_seed(7), "model.layers.0.mlp.up_proj.weight"), model / "shards" / "a.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.layers.0.mlp.up_proj.weight": "shards/a.safetensors"}}))
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    report = ok_json("quantize", model, "-o", tmp_path / "out")
    assert report["copied_files"] == [] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]


# ---- fused groups ----------------------------------------------------------------------------------


def test_a_fused_group_with_a_member_excluded_is_kept_whole(tmp_path):
    report = ok_json("quantize", SAMPLE, "-o", tmp_path / "out", "--exclude", "*q_proj*")
    skipped = {item["name"]: item["reason"] for item in report["skipped"]}
    for layer in (0, 1):
        prefix = f"model.layers.{layer}.self_attn"
        assert skipped[f"{prefix}.q_proj.weight"] == "excluded by --exclude '*q_proj*'"
        for member in ("k_proj", "v_proj"):
            assert skipped[f"{prefix}.{member}.weight"].startswith(f"fused with {prefix}.q_proj.weight in {prefix}.qkv_proj"), skipped[f"{prefix}.{member}.weight"]
    assert not any("self_attn" in name and "o_proj" not in name for name in report["quantized"])
    assert len(report["quantized"]) == 14 - 6
    source, out = load_file(SAMPLE / "model-00001-of-00002.safetensors") | load_file(SAMPLE / "model-00002-of-00002.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    for name in skipped:
        if "self_attn" in name:
            assert torch.equal(out[name], source[name]) and name.replace(".weight", ".weight_packed") not in out
    ignore = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]["ignore"]
    assert {f"model.layers.{layer}.self_attn.{p}_proj" for layer in (0, 1) for p in "qkv"} <= set(ignore)


# ---- outputs: concurrent runs, modes, durability ----------------------------------------------------


@pytest.mark.parametrize("target", ["out", "out.safetensors"])
def test_a_run_finishing_second_never_replaces_the_first_runs_output(tmp_path, target):
    """Two runs to one output without --force: the one that finishes later fails with one line and
    the earlier output stays as it was; with --force the later one replaces it."""
    source = SAMPLE if target == "out" else SAMPLE / "model-00002-of-00002.safetensors"
    output = tmp_path / target
    for force, expected in (([], "first"), (["--force"], "second")):
        shutil.rmtree(output) if output.is_dir() else output.unlink(missing_ok=True)
        second = PausedRun.start(["quantize", source, "-o", output, "--mode", "rs", "--seed", 2, *force], tmp_path)
        second.wait_until_paused()  # checked that the output is absent, and is writing
        ok("quantize", source, "-o", output, "--mode", "rs", "--seed", 1)
        first = output.read_bytes() if output.is_file() else tree(output)
        second.resume()
        code, stdout, stderr = second.finish()
        leftovers = [p.name for p in tmp_path.iterdir() if ".nvfp4-" in p.name]
        assert leftovers == []
        if expected == "first":
            assert code == 2 and stdout == ""
            assert stderr.splitlines() == [f"nvfp4: error: output {output} appeared while this run was writing it (another run?); pass --force to replace it"]
            assert (output.read_bytes() if output.is_file() else tree(output)) == first
        else:
            assert code == 0, stderr
            seeds = {json.loads(header(path)[1]["nvfp4"])["seed"] for path in ([output] if output.is_file() else output.glob("*.safetensors"))}
            assert seeds == {2}


@pytest.fixture
def umask():
    """Sets the process umask for the test (the run is in this process), and restores it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_output_modes_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    ok("quantize", SAMPLE, "-o", tmp_path / "out")
    ok("quantize", SAMPLE / "model-00002-of-00002.safetensors", "-o", tmp_path / "out.safetensors")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask
    assert {path.stat().st_mode & 0o777 for path in (tmp_path / "out").rglob("*")} == {0o666 & ~mask}
    assert (tmp_path / "out.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the umask from Linux /proc")
def test_a_run_never_changes_the_process_umask(tmp_path, umask):
    """Changing it even for a moment would race with other threads of a caller (Python API): the
    umask seen while the run writes (from /proc, which reads it without changing it) stays put."""
    from nvfp4cli.execute import run
    from nvfp4cli.io import open_checkpoint
    from nvfp4cli.plan import QuantizeOptions, plan_quantize

    def current_umask(*_) -> None:
        seen.append(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("Umask:")))

    seen: list[str] = []
    umask(0o027)
    run(plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions()), tmp_path / "out", progress=current_umask)
    assert set(seen) == {"0027"} and len(seen) > 1
    assert umask(0o027) == 0o027


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize("target", ["out", "out.safetensors"])
def test_the_parent_directory_is_fsynced_after_the_rename(tmp_path, target):
    """The rename that commits an output lives in its directory: fsync the directory after it, or a
    power loss can lose a finished output. Seen in the system calls the real command makes."""
    source = SAMPLE if target == "out" else SAMPLE / "model-00002-of-00002.safetensors"
    log = tmp_path / "strace.log"
    traced = subprocess.run(
        ["strace", "-f", "-y", "-e", "trace=rename,renameat,renameat2,link,linkat,fsync,fdatasync", "-o", str(log), sys.executable, "-m", "nvfp4cli", "quantize", str(source), "-o", str(tmp_path / target)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    if traced.returncode and "ptrace" in traced.stderr:
        pytest.skip(f"strace cannot trace here: {traced.stderr.strip()}")
    assert traced.returncode == 0, traced.stderr
    calls = [line.split(None, 1)[1] for line in log.read_text().splitlines() if re.match(r"\d+ +(rename|renameat2?|link|linkat|fsync|fdatasync)\(", line)]
    commit = max(i for i, call in enumerate(calls) if re.match(r"(rename|renameat2?|link|linkat)\(.*nvfp4-tmp.*" + re.escape(target), call))
    assert any(call.startswith("fsync(") and call.split("<", 1)[1].startswith(f"{tmp_path}>") for call in calls[commit + 1 :]), calls[commit:]
    staged = [call for call in calls[:commit] if call.startswith("fsync(") and "nvfp4-tmp" in call]
    assert staged, calls  # and the data itself was made durable before the rename


# ---- numbers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory) -> Path:
    """float32 and bfloat16 weights, a kept embedding, int64 position ids, a norm."""
    model = tmp_path_factory.mktemp("mixed") / "model"
    model.mkdir()
    g = torch.Generator().manual_seed(8)
    tensors = {
        "embeddings.word_embeddings.weight": torch.randn(300, 64, generator=g),
        "embeddings.position_ids": torch.arange(128).reshape(1, 128),
        "encoder.layer.0.attention.self.query.weight": torch.randn(64, 64, generator=g),
        "encoder.layer.0.attention.self.key.weight": torch.randn(64, 64, generator=g).bfloat16(),
        "encoder.layer.0.attention.self.value.weight": torch.randn(64, 64, generator=g).bfloat16(),
        "encoder.layer.0.output.dense.weight": torch.randn(64, 256, generator=g),
        "encoder.layer.0.output.LayerNorm.weight": torch.ones(64),
    }
    save_file(tensors, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return model


def test_quantize_and_inspect_report_the_same_ratio(mixed_model, tmp_path):
    """One definition: the output's size with each NVFP4 weight counted at bf16 (2 bytes an
    element), over its size as stored; computed here from the output's header alone."""
    report = ok_json("quantize", mixed_model, "-o", tmp_path / "out")
    entries, _ = header(tmp_path / "out" / "model.safetensors")
    stored = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in entries.values())
    as_float = 0
    for name, e in entries.items():
        if name.endswith(".weight_packed"):
            as_float += 2 * e["shape"][0] * e["shape"][1] * 2  # two codes a byte, 2 bytes each at bf16
        elif not name.endswith((".weight_scale", ".weight_global_scale")):
            as_float += e["data_offsets"][1] - e["data_offsets"][0]
    assert report["tensors_quantized"] == 4
    assert report["ratio"] == pytest.approx(as_float / stored, rel=1e-12)
    assert ok_json("inspect", tmp_path / "out")["totals"]["ratio"] == pytest.approx(as_float / stored, rel=1e-12)


def test_inspect_names_integer_and_bool_dtypes(tmp_path):
    tensors = {"position_ids": torch.arange(8).reshape(1, 8), "mask": torch.ones(4, dtype=torch.bool), "ids": torch.arange(4, dtype=torch.int32), "codes": torch.zeros(4, dtype=torch.uint8)}
    save_file(tensors, tmp_path / "m.safetensors")
    rows = {row["name"]: row["dtype"] for row in ok_json("inspect", tmp_path / "m.safetensors")["tensors"]}
    assert rows == {"position_ids": "I64", "mask": "BOOL", "ids": "I32", "codes": "U8"}
    table = {line.split()[0]: line.split()[2] for line in ok("inspect", tmp_path / "m.safetensors").stdout.splitlines()[3:7]}
    assert table == rows


def test_small_sizes_are_shown_in_bytes_and_kilobytes(tmp_path):
    save_file({"fc.weight": torch.ones(16, 16), "fc.bias": torch.ones(16)}, tmp_path / "m.safetensors")  # 1088 bytes
    lines = ok("quantize", tmp_path / "m.safetensors", "-o", tmp_path / "q.safetensors").stdout.splitlines()
    table = {line[: line.index("  ")]: line[line.index("  ") :].strip() for line in lines if line.startswith("bytes")}
    out = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header(tmp_path / "q.safetensors")[0].values())
    assert table == {"bytes in": "1.1 kB", "bytes out": f"{out} B"}


def decode_compressed_tensors(packed: torch.Tensor, scales: torch.Tensor, global_scale: torch.Tensor) -> np.ndarray:
    """An NVFP4 weight's values in float64, from the stored tensors (low nibble first)."""
    codes = np.stack([packed.numpy() & 15, packed.numpy() >> 4], axis=-1).reshape(packed.shape[0], -1)
    block = np.repeat(scales.float().numpy().astype(np.float64), 16, axis=-1)
    return GRID[codes] * block / float(global_scale)


def test_diff_headline_sqnr_is_over_the_quantized_tensors(tmp_path):
    """One quantized weight at about 20 dB beside a large copied embedding: the headline is that
    weight's SQNR, not the 40+ dB the copied energy would make of it."""
    g = torch.Generator().manual_seed(9)
    a = {"model.embed_tokens.weight": torch.randn(4096, 64, generator=g) * 10, "model.layers.0.mlp.down_proj.weight": torch.randn(64, 64, generator=g)}
    save_file(a, tmp_path / "a.safetensors")
    ok("quantize", tmp_path / "a.safetensors", "-o", tmp_path / "b.safetensors")
    b = load_file(tmp_path / "b.safetensors")
    ref = a["model.layers.0.mlp.down_proj.weight"].double().numpy()
    test = decode_compressed_tensors(*(b[f"model.layers.0.mlp.down_proj.{part}"] for part in ("weight_packed", "weight_scale", "weight_global_scale")))
    expected = 10 * np.log10(np.sum(ref**2) / np.sum((ref - test) ** 2))
    summary = ok_json("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors")["summary"]
    # rel 1e-6: the tool decodes to float32 (docs/format.md §7), the oracle keeps float64
    assert summary["sqnr_db"] == pytest.approx(expected, rel=1e-6) and 15 < expected < 25
    assert summary["sqnr_over"] == "quantized" and summary["sqnr_tensors"] == 1
    everything = np.sum(a["model.embed_tokens.weight"].double().numpy() ** 2) + np.sum(ref**2)
    assert summary["overall_sqnr_db"] == pytest.approx(10 * np.log10(everything / np.sum((ref - test) ** 2)), rel=1e-6)
    assert summary["overall_sqnr_db"] > expected + 20
    lines = ok("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors").stdout.splitlines()
    assert f"SQNR dB, 1 quantized tensor(s)  {expected:.2f}" in [re.sub(r"\s{2,}", "  ", line) for line in lines]
    # float against float (the dequantized output): no side is quantized, so the headline is over the tensors that differ
    ok("dequantize", tmp_path / "b.safetensors", "-o", tmp_path / "c.safetensors", "--dtype", "fp32")
    summary = ok_json("diff", tmp_path / "a.safetensors", tmp_path / "c.safetensors")["summary"]
    assert summary["sqnr_over"] == "differing" and summary["sqnr_tensors"] == 1
    assert summary["sqnr_db"] == pytest.approx(expected, rel=1e-6) and summary["overall_sqnr_db"] > expected + 20
