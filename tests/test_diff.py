"""`nvfp4 diff`: checkpoints written here with safetensors from torchao's NVFP4 output, metrics
checked against numpy float64 decoding of the stored bytes, codes counted nibble by nibble."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import nvfp4cli
from nvfp4cli.io import Checkpoint
from nvfp4cli.cli import app

torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
runner = CliRunner()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)
LINEARS = {
    "model.layers.0.mlp.up_proj.weight": (64, 128, 1.0),
    "model.layers.0.self_attn.q_proj.weight": (32, 64, 0.02),
    "lm_head.weight": (48, 32, 3.0),
}
NORM = "model.norm.weight"


def float_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weights = {name: (torch.randn(rows, cols, generator=gen) * std).to(torch.bfloat16) for name, (rows, cols, std) in LINEARS.items()}
    weights[NORM] = torch.rand(64, generator=gen).to(torch.bfloat16) + 0.5
    return weights


def torchao_rn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pts = torchao_nvfp4.per_tensor_amax_to_scale(x.abs().amax().float())
    scales, packed = torchao_nvfp4.nvfp4_quantize(x.contiguous(), 16, pts)
    return packed.view(torch.uint8), scales, pts


def compressed_tensors_layout(name, packed, scales, pts):
    base = name.removesuffix(".weight")
    return {f"{base}.weight_packed": packed, f"{base}.weight_scale": scales, f"{base}.weight_global_scale": (1 / pts).reshape(1)}


def modelopt_layout(name, packed, scales, pts):
    return {name: packed, f"{name}_scale": scales, f"{name}_scale_2": pts.reshape(())}


def save_nvfp4(path, weights, layout=compressed_tensors_layout, quantized=torchao_rn):
    """Every weight but the norm quantized and stored in the given layout (docs/format.md §5)."""
    tensors = {}
    for name, x in weights.items():
        tensors |= {name: x} if name == NORM else layout(name, *quantized(x))
    save_file(tensors, str(path))
    return path


def diff_json(*args) -> tuple[int, dict]:
    result = runner.invoke(app, ["diff", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {t["name"]: t for t in report["tensors"]}


def decode_ct_file(path) -> dict[str, np.ndarray]:
    """Dequantize a compressed-tensors file in numpy float64: e2m1 * scale / global_scale."""
    stored = load_file(str(path))
    decoded = {}
    for key, packed in stored.items():
        if not key.endswith(".weight_packed"):
            continue
        base = key.removesuffix("_packed")
        raw = packed.numpy()
        codes = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(raw.shape[0], -1)
        scales = stored[f"{base}_scale"].float().numpy().astype(np.float64)
        global_scale = float(stored[f"{base}_global_scale"])
        decoded[base] = (E2M1[codes].reshape(codes.shape[0], -1, 16) * (scales / global_scale)[..., None]).reshape(codes.shape)
    return decoded


def numpy_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    err = a - b
    return {
        "sqnr_db": 10 * np.log10(np.sum(a * a) / np.sum(err * err)),
        "max_abs_err": np.abs(err).max(),
        "mean_abs_err": np.abs(err).mean(),
        "rel_fro_err": np.linalg.norm(err) / np.linalg.norm(a),
        "cosine": np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)),
    }


@pytest.fixture
def weights():
    return float_weights()


@pytest.fixture
def float_file(tmp_path, weights):
    path = tmp_path / "float.safetensors"
    save_file(weights, str(path))
    return path


def test_float_vs_compressed_tensors_against_float64(tmp_path, weights, float_file):
    ct = save_nvfp4(tmp_path / "ct.safetensors", weights)
    code, report = diff_json(float_file, ct)
    assert code == 0 and report["a"] == str(float_file) and report["b"] == str(ct)
    rows = by_name(report)
    assert set(rows) == {*LINEARS, NORM}
    decoded = decode_ct_file(ct)
    signal = noise = 0.0
    for name, (rows_, cols, _) in LINEARS.items():
        a = weights[name].double().numpy()
        expected = numpy_metrics(a, decoded[name])
        row = rows[name]
        assert row["shape"] == [rows_, cols] and row["identical"] is False
        assert (row["format_a"], row["format_b"]) == ("plain", "compressed-tensors")
        assert row["code_agreement"] is None and row["scale_agreement"] is None
        for metric, value in expected.items():
            # the checkpoint's own dequantization is float32; the oracle decodes in float64
            assert row[metric] == pytest.approx(value, rel=1e-6), (name, metric)
        signal += float(np.sum(a * a))
        noise += float(np.sum((a - decoded[name]) ** 2))
    norm = rows[NORM]
    assert norm["identical"] is True and norm["sqnr_db"] is None and norm["max_abs_err"] == 0
    signal += float(np.sum(weights[NORM].double().numpy() ** 2))
    summary = report["summary"]
    assert summary["compared"] == 4 and summary["identical"] == 1
    assert summary["overall_sqnr_db"] == pytest.approx(10 * np.log10(signal / noise), rel=1e-6)
    worst = min(LINEARS, key=lambda n: rows[n]["sqnr_db"])
    assert summary["worst"] == worst and summary["worst_sqnr_db"] == rows[worst]["sqnr_db"]


def test_compressed_tensors_vs_modelopt_of_the_same_weights(tmp_path, weights):
    ct = save_nvfp4(tmp_path / "ct.safetensors", weights)
    modelopt = save_nvfp4(tmp_path / "modelopt.safetensors", weights, layout=modelopt_layout)
    code, report = diff_json(ct, modelopt)
    assert code == 0 and report["only_in_a"] == [] and report["only_in_b"] == []
    for name in LINEARS:
        row = by_name(report)[name]
        assert (row["format_a"], row["format_b"]) == ("compressed-tensors", "modelopt")
        assert row["code_agreement"] == 1.0 and row["scale_agreement"] == 1.0
        # Same codes and scales; only scale / (1 / pts) versus scale * pts may differ, by an ulp.
        assert row["identical"] or row["sqnr_db"] > 120


def test_code_agreement_of_rn_vs_rs(tmp_path, weights):
    rn = save_nvfp4(tmp_path / "rn.safetensors", weights)

    def rs(x):
        q = nvfp4cli.quantize(x, mode="rs", seed=11)
        return q.packed, q.scales, q.per_tensor_scale

    rs_file = save_nvfp4(tmp_path / "rs.safetensors", weights, quantized=rs)
    _, report = diff_json(rn, rs_file)
    stored_rn, stored_rs = load_file(str(rn)), load_file(str(rs_file))
    for name in LINEARS:
        key = name + "_packed"
        a, b = stored_rn[key].numpy(), stored_rs[key].numpy()
        equal = np.count_nonzero((a & 0xF) == (b & 0xF)) + np.count_nonzero((a >> 4) == (b >> 4))
        row = by_name(report)[name]
        assert row["code_agreement"] == pytest.approx(equal / (2 * a.size), abs=0)
        assert 0.6 < row["code_agreement"] < 0.9  # RS moves about a quarter of codes off RN
        assert row["scale_agreement"] == 1.0  # RS rounds elements only; scales are RN's
        assert 10 < row["sqnr_db"] < 25


def test_each_stored_tensor_is_read_once(tmp_path, weights, monkeypatch):
    reads = []
    original = Checkpoint.read
    monkeypatch.setattr(Checkpoint, "read", lambda self, name: reads.append(name) or original(self, name))
    ct = save_nvfp4(tmp_path / "ct.safetensors", weights)
    modelopt = save_nvfp4(tmp_path / "modelopt.safetensors", weights, layout=modelopt_layout)
    code, report = diff_json(ct, modelopt)
    assert code == 0 and by_name(report)[next(iter(LINEARS))]["code_agreement"] == 1.0
    stored = list(load_file(str(ct))) + list(load_file(str(modelopt)))
    assert sorted(reads) == sorted(stored)


def test_min_sqnr_gate(tmp_path, weights, float_file):
    ct = save_nvfp4(tmp_path / "ct.safetensors", weights)
    _, report = diff_json(float_file, ct)
    values = sorted(t["sqnr_db"] for t in report["tensors"] if t["sqnr_db"] is not None)
    threshold = (values[0] + values[1]) / 2  # exactly one tensor below it
    failing = runner.invoke(app, ["diff", str(float_file), str(ct), "--min-sqnr", str(threshold)])
    assert failing.exit_code == 1
    worst = report["summary"]["worst"]
    assert "1 tensor(s) below --min-sqnr" in failing.stderr and worst in failing.stderr
    assert "below --min-sqnr" in failing.stdout
    code, gated = diff_json(float_file, ct, "--min-sqnr", threshold)
    assert code == 1 and gated["summary"]["below_min_sqnr"] == [worst]
    passing = runner.invoke(app, ["diff", str(float_file), str(ct), "--min-sqnr", str(values[0] - 0.01)])
    assert passing.exit_code == 0, passing.output
    same = runner.invoke(app, ["diff", str(ct), str(ct), "--min-sqnr", "200"])
    assert same.exit_code == 0 and "identical" in same.stdout
    assert diff_json(ct, ct, "--min-sqnr", 200)[1]["summary"]["gate_passed"] is True


def test_min_sqnr_gate_fails_on_a_shape_mismatch_or_nothing_compared(tmp_path, weights, float_file):
    other = dict(weights)
    other[NORM] = torch.ones(32)
    b = save_nvfp4(tmp_path / "b.safetensors", other)
    assert diff_json(float_file, b)[0] == 0  # without the gate a mismatch is only reported
    code, report = diff_json(float_file, b, "--min-sqnr", -100)
    assert code == 1 and report["summary"]["below_min_sqnr"] == [] and report["summary"]["gate_passed"] is False
    mismatch = runner.invoke(app, ["diff", str(float_file), str(b), "--min-sqnr", "-100"])
    assert mismatch.exit_code == 1
    assert mismatch.stderr.strip() == f"nvfp4: 1 shape mismatch(es), first {NORM} [64] vs [32]"
    nothing = runner.invoke(app, ["diff", str(float_file), str(b), "--include", "no.such.*", "--min-sqnr", "10"])
    assert nothing.exit_code == 1 and nothing.stderr.strip() == "nvfp4: no tensor in both checkpoints to compare"


def test_names_only_on_one_side_shape_mismatch_include_sort_top(tmp_path, weights, float_file):
    other = dict(weights)
    del other["lm_head.weight"]
    other["model.extra.weight"] = torch.ones(16, 16)
    other[NORM] = torch.ones(32)
    b = save_nvfp4(tmp_path / "b.safetensors", other)
    code, report = diff_json(float_file, b)
    assert code == 0
    assert report["only_in_a"] == ["lm_head.weight"] and report["only_in_b"] == ["model.extra.weight"]
    assert report["shape_mismatches"] == [{"name": NORM, "shape_a": [64], "shape_b": [32]}]
    summary = report["summary"]
    assert (summary["compared"], summary["only_in_a"], summary["only_in_b"], summary["shape_mismatches"]) == (2, 1, 1, 1)

    _, narrowed = diff_json(float_file, b, "--include", "*.mlp.*", "--include", "model.extra.*")
    assert [t["name"] for t in narrowed["tensors"]] == ["model.layers.0.mlp.up_proj.weight"]
    assert narrowed["only_in_a"] == [] and narrowed["only_in_b"] == ["model.extra.weight"]

    ct = save_nvfp4(tmp_path / "ct.safetensors", weights)
    _, ordered = diff_json(float_file, ct, "--sort", "sqnr")
    sqnrs = [t["sqnr_db"] for t in ordered["tensors"]]
    assert sqnrs[:-1] == sorted(sqnrs[:-1]) and sqnrs[-1] is None  # worst first, identical last
    assert diff_json(float_file, ct)[1]["tensors"] == ordered["tensors"]  # the default order
    _, top = diff_json(float_file, ct, "--sort", "sqnr", "--top", "2")
    assert top["tensors"] == ordered["tensors"][:2] and top["summary"]["compared"] == 4
    table = runner.invoke(app, ["diff", str(float_file), str(ct), "--sqnr", "--sort", "name"])
    header = table.stdout.splitlines()[2]
    assert table.exit_code == 0 and header.split() == ["name", "shape", "SQNR", "dB"]


def test_sharded_directory_against_single_file(tmp_path, weights, float_file):
    directory = tmp_path / "model"
    directory.mkdir()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    for file_name, members in shards.items():
        save_file({n: weights[n] for n in members}, str(directory / file_name))
    index = {"metadata": {}, "weight_map": {n: f for f, members in shards.items() for n in members}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    code, report = diff_json(float_file, directory)
    assert code == 0 and report["summary"]["compared"] == 4 and report["summary"]["identical"] == 4
    assert report["summary"]["overall_sqnr_db"] is None and report["summary"]["worst"] is None


def test_trouble_exits_2_with_one_line(tmp_path, weights, float_file):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    ct = save_nvfp4(tmp_path / "ct.safetensors", weights)
    stored = load_file(str(ct))
    del stored["model.layers.0.mlp.up_proj.weight_scale"]
    save_file(stored, str(tmp_path / "no_scale.safetensors"))
    cases = [
        ([str(tmp_path / "missing"), str(float_file)], "missing"),
        ([str(float_file), str(corrupt)], "corrupt.safetensors"),
        ([str(float_file), str(tmp_path / "no_scale.safetensors")], "weight_scale"),
        ([str(float_file), str(float_file), "--sort", "size"], "--sort"),
        ([str(float_file), str(float_file), "--top", "0"], "--top"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, ["diff", *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output
