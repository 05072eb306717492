"""Checkpoint reading and writing, checked against the safetensors library itself."""

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

import nvfp4cli
from nvfp4cli import DataError, UsageError
from nvfp4cli import formats
from nvfp4cli.commands.common import parse_size
from nvfp4cli.io import SafetensorsWriter, TensorSpec, open_checkpoint, split_into_shards
from nvfp4cli.staging import check_output_path, staged_output

SAMPLE = Path(__file__).resolve().parent.parent / "sample_ckpts" / "tiny-llama"
ALL_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
]  # fmt: skip


def random_tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for index, dtype in enumerate(ALL_DTYPES):
        shape = [(3, 5), (7,), (2, 2, 3), ()][index % 4]
        raw = torch.randint(0, 256, (max(1, torch.Size(shape).numel()) * dtype.itemsize,), dtype=torch.uint8, generator=g)
        if dtype == torch.bool:
            raw = raw % 2
        tensors[f"t{index}.{dtype}".replace("torch.", "")] = raw.view(dtype).reshape(shape)
    tensors["empty"] = torch.zeros(0, 4)
    return tensors


def write_streamed(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], order_seed: int) -> None:
    specs = [TensorSpec.of(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]
    writer = SafetensorsWriter(path, specs, metadata)
    names = list(tensors)
    random.Random(order_seed).shuffle(names)
    for name in names:
        writer.write(name, tensors[name])
    writer.close()


@pytest.mark.parametrize("metadata", [{}, {"format": "pt"}])
def test_streamed_file_equals_library_bytes(tmp_path, metadata):
    # With at most one metadata key the library's output is deterministic: ours must be identical.
    tensors = random_tensors(0)
    write_streamed(tmp_path / "ours.safetensors", tensors, metadata, order_seed=1)
    assert (tmp_path / "ours.safetensors").read_bytes() == save(tensors, metadata=metadata or None)


def test_streamed_file_with_several_metadata_keys_is_reproducible_and_readable(tmp_path):
    tensors = random_tensors(1)
    metadata = {"zeta": "1", "format": "pt", "alpha": json.dumps({"b": 1, "a": 2})}
    write_streamed(tmp_path / "a.safetensors", tensors, metadata, order_seed=2)
    write_streamed(tmp_path / "b.safetensors", tensors, dict(reversed(metadata.items())), order_seed=3)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    with safe_open(tmp_path / "a.safetensors", framework="pt") as handle:
        assert handle.metadata() == metadata
    loaded = load_file(tmp_path / "a.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(loaded[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


def test_writer_refuses_wrong_tensor_and_missing_tensor(tmp_path):
    specs = [TensorSpec.of("a", torch.float32, (2, 2)), TensorSpec.of("b", torch.uint8, (4,))]
    writer = SafetensorsWriter(tmp_path / "x.safetensors", specs, {})
    with pytest.raises(ValueError, match="'a'"):
        writer.write("a", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="'a'"):
        writer.write("a", torch.zeros(2, 2, dtype=torch.float16))
    writer.write("b", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'a' was planned but never written"):
        writer.close()


def shard_tensors() -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in load_file(SAMPLE / "model-00001-of-00002.safetensors").items()} | load_file(
        SAMPLE / "model-00002-of-00002.safetensors"
    )


@pytest.mark.parametrize("target", [".", "model.safetensors.index.json"])
def test_sharded_checkpoint_reads_as_the_library_does(target):
    checkpoint = open_checkpoint(SAMPLE / target)
    expected = shard_tensors()
    assert sorted(checkpoint.tensor_names()) == sorted(expected)
    assert checkpoint.config["model_type"] == "llama"
    assert checkpoint.directory == SAMPLE
    assert len(checkpoint.files) == 2
    for name, tensor in expected.items():
        assert checkpoint.info(name).shape == tuple(tensor.shape) and checkpoint.info(name).torch_dtype == tensor.dtype
        assert torch.equal(checkpoint.read(name), tensor)
    weights = formats.logical_weights(checkpoint)
    assert all(weight.format == "plain" and formats.load_quantized(weight, checkpoint) is None for weight in weights.values())
    assert torch.equal(formats.load_float(weights["lm_head.weight"], checkpoint, torch.bfloat16), expected["lm_head.weight"])


def test_single_file_checkpoint(tmp_path):
    tensors = {"b.weight": torch.randn(4, 32), "a.bias": torch.randn(4)}
    save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt", "note": "x"})
    checkpoint = open_checkpoint(tmp_path / "m.safetensors")
    assert checkpoint.directory is None and checkpoint.config is None
    assert checkpoint.metadata == {"format": "pt", "note": "x"}
    assert sorted(checkpoint.tensor_names()) == ["a.bias", "b.weight"]
    assert [file.path for file in open_checkpoint(tmp_path).files] == [tmp_path / "m.safetensors"]  # a directory with one file


def nvfp4_triples(x: torch.Tensor):
    q = nvfp4cli.quantize(x, mode="rn")
    compressed = {"layer.weight_packed": q.packed, "layer.weight_scale": q.scales, "layer.weight_global_scale": q.global_scale.reshape(1)}
    modelopt = {"layer.weight": q.packed, "layer.weight_scale": q.scales, "layer.weight_scale_2": q.per_tensor_scale.reshape(())}
    return q, compressed, modelopt


def float64_dequantize(packed, scales, per_tensor_factor):
    """e2m1 * scale * factor in float64 from an independent code table."""
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float64)
    codes = torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1).long()
    blocks = grid[codes].reshape(packed.shape[0], -1, 16) * scales.double().unsqueeze(-1)
    return blocks.reshape(packed.shape[0], -1) * per_tensor_factor


def test_nvfp4_triples_read_back_as_logical_weights(tmp_path):
    x = torch.randn(8, 64) * 3
    q, compressed, modelopt = nvfp4_triples(x)
    save_file(compressed | {"layer.bias": torch.zeros(8)}, tmp_path / "ct.safetensors")
    save_file(modelopt, tmp_path / "mo.safetensors")
    ct, mo = open_checkpoint(tmp_path / "ct.safetensors"), open_checkpoint(tmp_path / "mo.safetensors")
    ct_weights, mo_weights = formats.logical_weights(ct), formats.logical_weights(mo)
    assert sorted(ct_weights) == ["layer.bias", "layer.weight"] and list(mo_weights) == ["layer.weight"]
    for weight, checkpoint, fmt in ((ct_weights["layer.weight"], ct, "compressed-tensors"), (mo_weights["layer.weight"], mo, "modelopt")):
        assert weight.format == fmt and weight.shape == (8, 64)
        loaded = formats.load_quantized(weight, checkpoint)
        assert torch.equal(loaded.packed, q.packed) and torch.equal(loaded.scales.view(torch.uint8), q.scales.view(torch.uint8))
    # ModelOpt stores pts itself; compressed-tensors stores 1/pts and divides by it.
    assert torch.equal(formats.load_quantized(mo_weights["layer.weight"], mo).per_tensor_scale, q.per_tensor_scale)
    # compressed-tensors first forms scale / global_scale in float32, then multiplies.
    ct_scales = q.scales.float() / q.global_scale.reshape(1)
    mo_expected = float64_dequantize(q.packed, q.scales, float(q.per_tensor_scale)).float()
    ct_expected = float64_dequantize(q.packed, ct_scales, 1.0).float()
    assert torch.equal(formats.load_float(mo_weights["layer.weight"], mo), mo_expected)
    assert torch.equal(formats.load_float(ct_weights["layer.weight"], ct), ct_expected)
    assert torch.allclose(ct_expected, mo_expected, rtol=2**-22, atol=0)


def write_index(directory: Path, weight_map: dict[str, str]) -> Path:
    path = directory / "model.safetensors.index.json"
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def write_file(name: str, content: bytes):
    def setup(directory: Path) -> Path:
        (directory / name).write_bytes(content)
        return directory / name

    return setup


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "missing.safetensors", "no such file"),
        (write_file("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"), "not a readable safetensors"),
        (write_file("short.safetensors", b"\x01"), "not a readable safetensors"),
        (write_file("x.txt", b"hi"), "expected a .safetensors file"),
        (lambda d: write_index(d, {"a": "gone.safetensors"}), "shard gone.safetensors does not exist"),
        (write_file("model.safetensors.index.json", b"[1, 2"), "invalid JSON"),
        (lambda d: write_index(d, {}), "no 'weight_map'"),
    ],
)
def test_bad_inputs_give_one_line_data_errors(tmp_path, setup, message):
    with pytest.raises(DataError, match=message) as info:
        open_checkpoint(setup(tmp_path))
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_index_must_agree_with_shards(tmp_path):
    save_file({"a": torch.zeros(2), "b": torch.zeros(2)}, tmp_path / "s1.safetensors")
    with pytest.raises(DataError, match="'c' is listed in s1.safetensors but not stored there"):
        open_checkpoint(write_index(tmp_path, {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s1.safetensors"}))
    with pytest.raises(DataError, match="'b' is stored in s1.safetensors but missing from the index"):
        open_checkpoint(write_index(tmp_path, {"a": "s1.safetensors"}))


def test_directory_with_several_files_and_no_index_is_ambiguous(tmp_path):
    for name in ("a", "b"):
        save_file({name: torch.zeros(2)}, tmp_path / f"{name}.safetensors")
    with pytest.raises(DataError, match="several candidates"):
        open_checkpoint(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .safetensors file"):
        open_checkpoint(tmp_path / "empty")
    with pytest.raises(DataError, match="no tensor named 'nope'"):
        open_checkpoint(tmp_path / "a.safetensors").read("nope")


def test_incomplete_nvfp4_triple_is_reported(tmp_path):
    save_file({"layer.weight_packed": torch.zeros(2, 8, dtype=torch.uint8), "layer.weight_scale": torch.zeros(2, 1).to(torch.float8_e4m3fn)}, tmp_path / "m.safetensors")
    with pytest.raises(DataError, match="'layer.weight_packed' has no 'layer.weight_global_scale'"):
        formats.logical_weights(open_checkpoint(tmp_path / "m.safetensors"))


def test_split_into_shards_keeps_order_units_and_limit():
    g = random.Random(5)
    units = [[TensorSpec.of(f"u{u}.{i}", torch.uint8, (g.randint(0, 300),)) for i in range(g.randint(1, 3))] for u in range(60)]
    limit = 500
    shards = split_into_shards(units, limit)
    assert [spec for shard in shards for spec in shard] == [spec for unit in units for spec in unit]
    unit_of = {spec.name: index for index, unit in enumerate(units) for spec in unit}
    for shard in shards:
        size = sum(spec.nbytes for spec in shard)
        assert size <= limit or len({unit_of[spec.name] for spec in shard}) == 1
    for first, second in zip(shards, shards[1:]):  # greedy: the next unit did not fit
        assert unit_of[first[-1].name] != unit_of[second[0].name]
        next_unit = units[unit_of[second[0].name]]
        assert sum(spec.nbytes for spec in first) + sum(spec.nbytes for spec in next_unit) > limit


@pytest.mark.parametrize("text, expected", [("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30), ("1.5kb", 1500), ("1000", 1000)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "5XB", "-1GB", "0", "0.1B"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("is_dir", [False, True])
def test_staged_output_renames_on_success_and_cleans_up_on_error(tmp_path, is_dir):
    output = tmp_path / ("out" if is_dir else "out.safetensors")

    def fill(staging: Path, text: str) -> None:
        (staging / "f" if is_dir else staging).write_text(text)

    def read() -> str:
        return (output / "f" if is_dir else output).read_text()

    with pytest.raises(RuntimeError):
        with staged_output(output, is_dir) as staging:
            fill(staging, "partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_output(output, is_dir) as staging:
        fill(staging, "first")
    assert read() == "first"
    with pytest.raises(KeyboardInterrupt):  # a failed replacement leaves the old output whole
        with staged_output(output, is_dir, force=True) as staging:
            fill(staging, "second")
            raise KeyboardInterrupt
    assert read() == "first" and list(tmp_path.iterdir()) == [output]
    with staged_output(output, is_dir, force=True) as staging:
        fill(staging, "third")
    assert read() == "third" and list(tmp_path.iterdir()) == [output]


def test_check_output_path(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "m.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="would overwrite or write into the input"):
        check_output_path(model, model, force=True)
    with pytest.raises(UsageError, match="would overwrite or write into the input"):
        check_output_path(model / "out", model, force=True)
    with pytest.raises(UsageError, match="would overwrite or write into the input"):
        check_output_path(tmp_path, model / "m.safetensors", force=True)
    with pytest.raises(UsageError, match="exists; pass --force"):
        check_output_path(model / "m.safetensors", tmp_path / "other.safetensors", force=False)
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.safetensors", model, force=False)
    check_output_path(tmp_path / "model-nvfp4", model, force=False)
