"""`nvfp4 bench`: rows checked against float64 SQNR from torchao's output, byte counts from the
format's definition, a sleeping timer, and the --check gate tripped by a deliberately wrong backend."""

from __future__ import annotations

import builtins
import csv
import json
import math
import re
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from nvfp4cli import bench
from nvfp4cli.cli import app
from nvfp4cli.format import Mode

runner = CliRunner()
TINY = ["--shape", "32x64", "--iters", "2", "--warmup", "0", "--device", "cpu"]
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["bench", *TINY, "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def rows_of(report: dict, backend: str, mode: str = "rn") -> list[dict]:
    return [r for r in report["results"] if r["backend"] == backend and r["mode"] == mode]


def sqnr_from_torchao(x: torch.Tensor) -> float:
    """Quantize with torchao, decode nibbles and scales by hand, SQNR with exact Python sums."""
    from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale

    pts = per_tensor_amax_to_scale(x.abs().amax().float())
    scales, packed = nvfp4_quantize(x, 16, pts)
    values = x.float().flatten().tolist()
    scale_list = scales.float().flatten().tolist()
    signal_terms, noise_terms = [], []
    for i, byte in enumerate(packed.view(torch.uint8).flatten().tolist()):
        for j, code in enumerate((byte & 0xF, byte >> 4)):
            element = 2 * i + j
            decoded = (-1 if code & 8 else 1) * E2M1[code & 7] * scale_list[element // 16] * float(pts)
            signal_terms.append(values[element] ** 2)
            noise_terms.append((values[element] - decoded) ** 2)
    signal, noise = math.fsum(signal_terms), math.fsum(noise_terms)
    return 10 * math.log10(signal / noise)


def test_json_rows_reference_and_torchao():
    pytest.importorskip("torchao")
    report = run_json("--backend", "reference", "--backend", "torchao")
    assert set(report) >= {"device", "torch", "triton", "copy_gbps", "results"}
    assert report["torch"] == torch.__version__ and report["copy_gbps"] > 0
    x = bench._make_input((32, 64), torch.bfloat16, torch.device("cpu"))
    expected_sqnr = sqnr_from_torchao(x)
    numel = 32 * 64
    for backend in ("reference", "torchao"):
        rows = rows_of(report, backend)
        assert sorted(r["includes_amax"] for r in rows) == [False, True]
        for r in rows:
            assert r["shape"] == [32, 64] and r["dtype"] == "bf16"
            assert r["peer"] is (backend == "torchao")
            # Our RN equals torchao's bit for bit (docs/format.md §2), so both rows agree fully.
            assert r["agreement"] == 1.0 and r["matches_reference"] is True
            # x_hat is float32 (docs/format.md §2 dequantize); the oracle decodes in float64.
            assert r["sqnr_db"] == pytest.approx(expected_sqnr, rel=1e-6)
            reads = numel * 2 * (2 if r["includes_amax"] else 1)
            assert r["bytes"] == reads + numel // 2 + numel // 16
            assert r["gbps"] == pytest.approx(r["bytes"] / (r["median_us"] * 1e-6) / 1e9)
            assert r["pct_of_copy"] == pytest.approx(100 * r["gbps"] / r["copy_gbps"])
            assert r["p10_us"] <= r["median_us"] <= r["p90_us"]
    rs_rows = rows_of(report, "reference", "rs")
    assert len(rs_rows) == 2
    for r in rs_rows:
        # RS rounds about a quarter of codes differently from RN, and loses about 3 dB.
        assert 0.5 < r["agreement"] < 0.95 and r["matches_reference"] is None
        assert expected_sqnr - 6 < r["sqnr_db"] < expected_sqnr - 1
    skipped = {(s["backend"], s["mode"]): s["reason"] for s in report["skipped"]}
    assert "stochastic" in skipped[("torchao", "rs")]


def test_unavailable_backends_are_skipped_with_a_note(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    real_import = builtins.__import__

    def no_torchao(name, *args, **kwargs):
        if name.startswith("torchao"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchao)
    for module in [m for m in sys.modules if m.startswith("torchao")]:
        monkeypatch.delitem(sys.modules, module)
    report = run_json("--backend", "triton", "--backend", "torchao", "--backend", "reference", "--mode", "rn")
    skipped = {s["backend"]: s for s in report["skipped"]}
    assert "CUDA" in skipped["triton"]["reason"] and skipped["triton"]["peer"] is False
    assert "not importable" in skipped["torchao"]["reason"] and skipped["torchao"]["peer"] is True
    assert {r["backend"] for r in report["results"]} == {"reference"}

    table = runner.invoke(app, ["bench", *TINY, "--backend", "triton", "--backend", "torchao", "--backend", "reference"])
    assert table.exit_code == 0, table.output
    assert "skipped torchao (peer)" in table.stdout and "skipped triton" in table.stdout


def test_float16_skips_torchao_but_runs_ours():
    pytest.importorskip("torchao")
    report = run_json("--dtype", "fp16", "--backend", "torchao", "--backend", "reference", "--mode", "rn")
    assert {r["backend"] for r in report["results"]} == {"reference"}
    assert any(s["backend"] == "torchao" and "float16" in s["reason"] for s in report["skipped"])


def test_compressed_tensors_peer_is_close_but_not_bit_exact():
    pytest.importorskip("compressed_tensors")
    report = run_json("--backend", "compressed-tensors")
    rows = rows_of(report, "compressed-tensors")
    assert len(rows) == 2 and all(r["peer"] for r in rows)
    for r in rows:
        # It computes its global scale in the input dtype, so a few codes differ from our RN (docs/format.md §2).
        assert r["agreement"] > 0.9 and 15 < r["sqnr_db"] < 25


@pytest.mark.slow
def test_torch_compile_peer_matches_reference():
    pytest.importorskip("torchao")
    report = run_json("--backend", "torchao-compile", "--iters", "1")
    rows = rows_of(report, "torchao-compile")
    assert len(rows) == 2 and all(r["matches_reference"] for r in rows), report["skipped"]


def test_check_fails_on_a_wrong_backend(monkeypatch):
    honest = bench.make_contender

    def flip_first_code(output):
        packed, scales, pts = output
        packed = packed.clone()
        packed.view(-1)[0] ^= 1
        return packed, scales, pts

    def with_broken_triton(name, device, work=bench.Workload()):
        if name != "triton":
            return honest(name, device, work)
        good = honest("reference", device, work)
        return bench.Contender(
            "triton",
            False,
            good.tensor_scale,
            lambda x, pts, mode: flip_first_code(good.quantize(x, pts, mode)),
            lambda x, mode: flip_first_code(good.amax_quantize(x, mode)),
            good.to_pts,
            modes=tuple(Mode),
        )

    monkeypatch.setattr(bench, "make_contender", with_broken_triton)
    args = ["bench", *TINY, "--backend", "triton", "--backend", "reference", "--mode", "rn"]
    unchecked = runner.invoke(app, args)
    assert unchecked.exit_code == 0, unchecked.output
    checked = runner.invoke(app, [*args, "--check"])
    assert checked.exit_code == 1
    assert checked.stderr.splitlines() == [
        f"nvfp4: check failed: triton {timed} bf16 32x64: RN output differs from the reference"
        for timed in ("quantize", "amax+quantize")
    ]
    passing = runner.invoke(app, ["bench", *TINY, "--backend", "reference", "--check"])
    assert passing.exit_code == 0, passing.output


def test_csv_and_plot_files(tmp_path):
    pytest.importorskip("matplotlib")
    csv_path, png_path = tmp_path / "bench.csv", tmp_path / "bench.png"
    args = ["--backend", "reference", "--mode", "rn", "--shape", "16x32", "--csv", str(csv_path), "--plot", str(png_path)]
    report = run_json(*args)
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["shape"], r["includes_amax"]) for r in rows] == [("32x64", "False"), ("32x64", "True"), ("16x32", "False"), ("16x32", "True")]
    assert [float(r["median_us"]) for r in rows] == [r["median_us"] for r in report["results"]]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.png"]  # no temporaries left

    again = runner.invoke(app, ["bench", *TINY, "--backend", "reference", "--csv", str(csv_path)])
    assert again.exit_code == 2 and "--force" in again.stderr
    forced = runner.invoke(app, ["bench", *TINY, "--backend", "reference", "--mode", "rn", "--csv", str(csv_path), "--force"])
    assert forced.exit_code == 0 and len(csv_path.read_text().splitlines()) == 3


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    result = runner.invoke(app, ["bench", *TINY, "--backend", "reference", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2 and "matplotlib" in result.stderr
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "64by64"], "malformed shape"),
        (["--shape", "64x40"], "not a multiple of 16"),
        (["--shape", "0x64"], "not positive"),
        (["--backend", "fastest"], "unknown backend 'fastest'"),
        (["--dtype", "fp8"], "unknown dtype"),
        (["--mode", "rz"], "unknown mode"),
        (["--device", "tpu"], "unknown device"),
        (["--device", "meta"], "unsupported device"),
        (["--iters", "0"], "iters >= 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = runner.invoke(app, ["bench", "--device", "cpu", *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_usage_error():
    result = runner.invoke(app, ["bench", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.stderr


def test_cpu_timer_measures_what_it_times():
    calls = []

    def sleep_2ms(i):
        calls.append(i)
        time.sleep(0.002)

    start = time.perf_counter()
    times = bench.time_calls(sleep_2ms, torch.device("cpu"), warmup=2, iters=5)
    elapsed = time.perf_counter() - start
    assert calls == list(range(7)) and len(times) == 5
    # Each timed call holds its sleep and no more than the whole run took (no absolute bound: a
    # loaded machine stretches sleeps).
    assert all(0.002 <= t for t in times) and sum(times) <= elapsed


def test_small_inputs_rotate_through_more_than_the_cache():
    x = torch.randn(64, 64)
    copies = bench.rotating_copies(x)
    span = len(copies) * x.numel() * x.element_size()
    assert span >= 4 * bench.cache_bytes(x.device) or len(copies) == bench.MAX_ROTATING_BUFFERS
    assert copies[0] is x and all(torch.equal(c, x) for c in copies)
    assert len({c.data_ptr() for c in copies}) == len(copies)  # distinct memory, not views
    big = torch.empty(bench.ROTATION_CACHE_MULTIPLE * bench.cache_bytes(x.device) // 4 + 16)  # float32, past the span
    assert len(bench.rotating_copies(big)) == 1


def test_backend_names_in_order_without_repeats():
    assert bench.parse_backends([]) == list(bench.CONTENDERS)
    assert bench.parse_backends(["torchao", "reference", "torchao"]) == ["torchao", "reference"]


def test_training_ops_rows_bytes_and_peer_notes():
    numel = 32 * 64
    report = run_json("--op", "rowcol", "--hadamard", "--block-2d", "--backend", "reference", "--backend", "torchao")
    rows = rows_of(report, "reference")
    assert {r["op"] for r in rows} == {"rowcol hadamard 2d"} and len(rows) == 2
    for r in rows:
        reads = numel * 2 * (2 if r["includes_amax"] else 1)
        assert r["bytes"] == reads + 2 * (numel // 2 + numel // 16)  # two NVFP4 outputs
        assert r["matches_reference"] is True and r["agreement"] == 1.0
    assert any(s["backend"] == "torchao" and "plain 1-D quantize only" in s["reason"] for s in report["skipped"])
    rht = run_json("--op", "rht", "--backend", "reference", "--mode", "rn")
    (row,) = rows_of(rht, "reference")
    assert row["op"] == "rht" and row["bytes"] == numel * 2 + numel * 4 and row["sqnr_db"] is None
    plain = run_json("--backend", "plain-compile", "--backend", "reference", "--mode", "rn")
    assert any(s["backend"] == "plain-compile" and "training primitives" in s["reason"] for s in plain["skipped"])


def test_hadamard_rows_measure_sqnr_against_the_transformed_signal():
    report = run_json("--hadamard", "--backend", "reference", "--mode", "rn")
    x = bench._make_input((32, 64), torch.bfloat16, torch.device("cpu"))
    import nvfp4cli

    q = nvfp4cli.quantize(x, hadamard=True)
    y, y_hat = nvfp4cli.rht(x).double(), nvfp4cli.dequantize(q).double()
    expected = 10 * math.log10(float((y**2).sum() / ((y - y_hat) ** 2).sum()))
    for r in rows_of(report, "reference"):
        assert r["op"] == "quantize hadamard" and r["sqnr_db"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["--op", "rowcol", "--shape", "8x64"], r"rowcol needs 2-D shapes with rows a multiple of 16, got 8x64"),
        (["--block-2d", "--shape", "2x16x16"], r"quantize 2d needs 2-D shapes"),
        (["--op", "rht", "--hadamard"], r"--op rht takes neither --hadamard nor --block-2d"),
        (["--op", "gemm"], r"unknown op 'gemm'; valid: quantize, rowcol, rht"),
    ],
)
def test_training_op_usage_errors(args, pattern):
    result = runner.invoke(app, ["bench", "--iters", "1", "--warmup", "0", "--device", "cpu", "--backend", "reference", *args])
    assert result.exit_code == 2, result.output
    assert re.search(pattern, result.output)
