"""`nvfp4 bench --checkpoint DIR`: the whole conversion against its I/O floor (and llm-compressor
where an interpreter with it is given), checked against the files themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from cli_runner import SAMPLE, nvfp4

LLMC_PYTHON = Path("/tmp/llmc/bin/python")


def stored_bytes(directory: Path) -> int:
    total = 0
    for file in directory.glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            total += sum(tensor.numel() * tensor.element_size() for tensor in map(handle.get_tensor, handle.keys()))
    return total


def test_bench_checkpoint_reports_the_floor_and_the_conversion(tmp_path):
    result = nvfp4("bench", "--checkpoint", SAMPLE, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bytes_in"] == report["floor"]["bytes_in"] == stored_bytes(SAMPLE)
    (row,) = report["results"]
    assert row["tool"] == "nvfp4" and row["peak_rss_bytes"] > 0 and row["wall_s"] > row["convert_s"] > 0
    assert row["gbps"] == pytest.approx(report["bytes_in"] / 1e9 / row["convert_s"])
    assert row["pct_of_floor"] == pytest.approx(100 * report["floor"]["seconds"] / row["convert_s"])
    assert 15 < row["sqnr_db"] < 25  # 4-bit quantization of Gaussian-like weights: about 20 dB
    assert [item["tool"] for item in report["skipped"]] == ["llm-compressor"]
    table = nvfp4("bench", "--checkpoint", SAMPLE)
    assert table.exit_code == 0 and "I/O floor" in table.stdout and "skipped llm-compressor" in table.stdout


def test_a_missing_peer_interpreter_is_a_one_line_error(tmp_path):
    result = nvfp4("bench", "--checkpoint", SAMPLE, "--peer-python", tmp_path / "nope" / "python")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0 and "no such interpreter" in result.stderr


@pytest.mark.skipif(not LLMC_PYTHON.exists(), reason="needs llm-compressor in /tmp/llmc (see tests/fixtures/make_llmc_qwen3moe.py)")
def test_llm_compressor_side_by_side_at_the_same_sqnr():
    result = nvfp4("bench", "--checkpoint", SAMPLE, "--peer-python", LLMC_PYTHON, "--json")
    assert result.exit_code == 0, result.output
    ours, peer = json.loads(result.stdout)["results"]
    assert peer["tool"] == "llm-compressor (peer)" and peer["peak_rss_bytes"] > 0
    assert peer["sqnr_db"] == pytest.approx(ours["sqnr_db"], abs=0.05)  # the same NVFP4 format, RN
