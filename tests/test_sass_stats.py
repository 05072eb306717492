"""scripts/sass_stats.py: the Triton kernels compiled for sm_90 on this CPU-only machine, their
SASS read back with Triton's bundled cuobjdump. Each test runs the script as a user does, in a
subprocess (one compile of each kernel is shared by the module's tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sass_stats.py"


def _missing_tools() -> str | None:
    """Why the script cannot run here, or None."""
    try:
        from triton import knobs
        from triton.backends.nvidia.compiler import get_ptxas

        for tool in (get_ptxas(90), knobs.nvidia.cuobjdump):  # raise where the bundled binaries are absent
            assert Path(tool.path).exists()
    except Exception as error:
        return f"triton with its NVIDIA ptxas and cuobjdump is not available: {error!r}"
    return None


MISSING_TOOLS = _missing_tools()
pytestmark = pytest.mark.skipif(MISSING_TOOLS is not None, reason=MISSING_TOOLS or "")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, Path]:
    """The JSON rows of quantize and amax-quantize, RN and RS (bf16), by (kernel, mode, role),
    and the --keep directory."""
    keep = tmp_path_factory.mktemp("sass")
    run = _run("--kernel", "quantize", "amax-quantize", "--mode", "rn", "rs", "--json", "--keep", str(keep))
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    return {(row["kernel"], row["mode"], row["role"]): row for row in rows}, keep


def test_counts_are_real(compiled):
    rows, _ = compiled
    assert set(rows) == {
        ("quantize", "rn", "all"), ("quantize", "rs", "all"),
        ("amax-quantize", "rn", "amax"), ("amax-quantize", "rn", "quantize"),
        ("amax-quantize", "rs", "amax"), ("amax-quantize", "rs", "quantize"),
    }
    for row in rows.values():
        assert 0 < row["registers"] <= 255  # sm_90's limit a thread
        assert row["sass_instructions"] > 0 and row["main_path_instructions"] > 0 and row["elements_per_thread"] > 0
        assert row["instructions_per_element"] > 0
        # every kernel does logic and integer work; the two pipes' share is part of the whole
        assert 0 < row["alu_per_element"] and 0 < row["imad_per_element"]
        assert row["alu_per_element"] + row["imad_per_element"] < row["instructions_per_element"]
    for mode in ("rn", "rs"):  # the quantize kernel has no loop: its main path is part of its code
        assert rows[("quantize", mode, "all")]["main_path_instructions"] < rows[("quantize", mode, "all")]["sass_instructions"]


def test_stochastic_rounding_costs_more_per_element(compiled):
    """RS adds a Philox4x32-10 call a block (10 rounds of two wide multiplies, docs/format.md §3)."""
    rows, _ = compiled
    for kernel, role in (("quantize", "all"), ("amax-quantize", "quantize")):
        rs, rn = rows[(kernel, "rs", role)], rows[(kernel, "rn", role)]
        assert rs["instructions_per_element"] > rn["instructions_per_element"]
        assert rs["imad_per_element"] > rn["imad_per_element"]  # two 32x32 -> 64 products a round


def test_the_nonfinite_flag_costs_less_than_the_amax_pass_it_replaces(compiled, tmp_path):
    """Given its per-tensor scale, a call checks NaN/Inf with the quantize kernel's flag instead
    of an amax pass: the flag's store must be compiled in, and cost less than an amax pass an
    element (its register cap may even leave fewer instructions than the plain kernel's)."""
    rows, keep = compiled
    run = _run("--kernel", "quantize", "--mode", "rn", "rs", "--check-finite", "--json", "--keep", str(tmp_path))
    assert run.returncode == 0, run.stderr
    for row in json.loads(run.stdout):
        assert row["config"].endswith("nonfinite flag")
        plain = rows[("quantize", row["mode"], "all")]["instructions_per_element"]
        amax_pass = rows[("amax-quantize", row["mode"], "amax")]["instructions_per_element"]
        assert row["instructions_per_element"] < plain + amax_pass
        sass = f"quantize_{row['mode']}_bf16.sass"
        assert (tmp_path / sass).read_text().count("STG") > (keep / sass).read_text().count("STG")  # the flag's store


def test_amax_programs_cost_less_than_quantize_programs(compiled):
    """A max of magnitude bits is a few integer operations an element; quantizing is a scale, a
    division and a rounding: the roles of the one-launch kernel must not come out swapped."""
    rows, _ = compiled
    for mode in ("rn", "rs"):
        amax, quantize = rows[("amax-quantize", mode, "amax")], rows[("amax-quantize", mode, "quantize")]
        assert amax["instructions_per_element"] < quantize["instructions_per_element"] / 2


def test_kept_files_show_vector_loads(compiled):
    """--keep writes what was counted; RN quantize reads each block's 32 bytes as 128-bit loads
    (the divisibility hints work: without them Triton loads 4 bytes at a time)."""
    _, keep = compiled
    sass = (keep / "quantize_rn_bf16.sass").read_text()
    assert "LDG.E.128" in sass
    assert ".target sm_90" in (keep / "quantize_rn_bf16.ptx").read_text()  # the default --arch


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--arch", "95"], "--arch 95"), (["--kernel", "nonsense"], "--kernel"), (["--dtype", "fp8"], "--dtype")],
)
def test_bad_arguments_are_one_line(args, message):
    run = _run(*args)
    assert run.returncode == 2
    assert run.stderr.startswith("error:") and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_missing_triton_is_one_line(tmp_path):
    """A Python whose triton lacks the NVIDIA backend (a stand-in package that says so)."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text("raise ImportError('this triton has no NVIDIA backend')\n")
    run = _run("--kernel", "amax", env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert run.returncode == 2
    assert run.stderr.startswith("error:") and "NVIDIA backend" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_2d_quantize_is_compiled_with_its_register_cap(tmp_path):
    """The 2-D RN quantize runs capped (triton_backend.QUANTIZE_REGISTERS: one more program an SM
    on an H200); the cap must reach ptxas, and the 1-D kernel must stay uncapped."""
    from nvfp4cli.format import Mode
    from nvfp4cli.kernels import triton_backend

    cap = triton_backend.QUANTIZE_REGISTERS[(Mode.RN, True, False)]
    run = _run("--kernel", "quantize-2d", "quantize", "--mode", "rn", "--json", "--keep", str(tmp_path))
    assert run.returncode == 0, run.stderr
    rows = {row["kernel"]: row for row in json.loads(run.stdout)}
    assert rows["quantize-2d"]["registers"] <= cap
    assert f".maxnreg {cap}" in (tmp_path / "quantize-2d_rn_bf16.ptx").read_text()
    assert ".maxnreg" not in (tmp_path / "quantize_rn_bf16.ptx").read_text()
