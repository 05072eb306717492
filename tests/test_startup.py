"""Start-up: `--help` and usage errors import no torch (most of a command's start-up), a command
loads no module it does not use (Triton on the CPU, transformers, the peers), and NVFP4_TIMING=1
reports where a run's time went."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cli_runner import SAMPLE

TORCH_STACK = ("torch", "safetensors", "numpy", "triton")
HEAVY = ("triton", "transformers", "torchao", "compressed_tensors", "llmcompressor", "matplotlib")
# Core modules a weight-only quantize of a float checkpoint has no use for (W4A4, convert, verify, bench).
UNUSED_BY_QUANTIZE = ("nvfp4cli.calibrate", "nvfp4cli.relayout", "nvfp4cli.verify", "nvfp4cli.bench")
COMMANDS = ("quantize", "dequantize", "inspect", "diff", "bench", "verify", "convert")
PROBE = textwrap.dedent(
    """
    import sys
    from nvfp4cli.cli import app
    try:
        app(sys.argv[1:], prog_name="nvfp4")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    print(code, " ".join(sorted(sys.modules)))
    """
)


def loaded_modules(args: list[str], env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """(exit code, modules loaded, stderr) of `nvfp4 ARGS` in a fresh interpreter (a package's
    submodule comes with the package itself: "torch" is there whenever any of torch is)."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, env=env)
    code, _, names = result.stdout.strip().splitlines()[-1].partition(" ")
    return int(code), set(names.split()), result.stderr


LIGHT = [
    pytest.param(["--help"], 0, id="help"),
    *[pytest.param([command, "--help"], 0, id=f"{command}-help") for command in COMMANDS],
    pytest.param([], 2, id="no-arguments"),
    pytest.param(["quantize"], 2, id="missing-argument"),
    pytest.param(["quantize", str(SAMPLE), "--mode", "bogus"], 2, id="bad-choice"),
    pytest.param(["quantize", str(SAMPLE), "--seed", "-1"], 2, id="out-of-range"),
    pytest.param(["quantize", str(SAMPLE), "--no-such-option"], 2, id="unknown-option"),
    pytest.param(["no-such-command"], 2, id="unknown-command"),
]


@pytest.mark.parametrize(("args", "exit_code"), LIGHT)
def test_help_and_usage_errors_import_no_torch(args, exit_code):
    code, loaded, _ = loaded_modules(args)
    assert code == exit_code
    assert {"nvfp4cli", "typer"} <= loaded  # the probe saw the modules
    assert not loaded & set(TORCH_STACK), sorted(loaded & set(TORCH_STACK))


def test_the_package_loads_its_names_on_first_use():
    script = textwrap.dedent(
        """
        import sys
        import nvfp4cli
        assert "torch" not in sys.modules, "import nvfp4cli loaded torch"
        assert nvfp4cli.names.MODES and "torch" not in sys.modules  # a submodule loads on first use too
        from nvfp4cli import api, errors, format
        assert nvfp4cli.quantize is api.quantize and nvfp4cli.Mode is format.Mode
        assert nvfp4cli.DataError is errors.DataError and {"quantize", "Mode", "__version__"} <= set(dir(nvfp4cli))
        assert isinstance(nvfp4cli.__version__, str) and nvfp4cli.__version__
        try:
            nvfp4cli.no_such_name
        except AttributeError:
            print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_names_is_a_leaf_module():
    """Core modules import names.py, and `--help` reads it: it must load nothing but itself."""
    script = "import sys, nvfp4cli; before = set(sys.modules); import nvfp4cli.names; print(sorted(set(sys.modules) - before))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['nvfp4cli.names']"


def cli_option(command: str, flag: str):
    """The Click parameter Typer builds for `nvfp4 COMMAND FLAG`."""
    import typer.main

    from nvfp4cli.cli import app

    (param,) = [param for param in typer.main.get_command(app).commands[command].params if flag in param.opts]
    return param


def offered(command: str, flag: str) -> tuple[str, ...]:
    """The values a choice option accepts: those of the Enum its default is a member of."""
    return tuple(member.value for member in type(cli_option(command, flag).default))


def test_each_closed_set_is_written_once_and_the_cli_offers_the_cores():
    import torch

    from nvfp4cli import api, bench, format, formats, kernels, names, rng, verify

    # The core takes its constants from names.py: the same objects, not copies that could drift.
    assert format.SCALE_RULES is names.SCALE_RULES and kernels.BACKENDS is names.BACKENDS
    assert verify.TARGETS is names.VERIFY_TARGETS and rng.SEED_LIMIT is names.SEED_LIMIT
    assert (bench.OPS, bench.PEERS, bench.CONTENDERS) == (names.BENCH_OPS, names.BENCH_PEERS, names.BENCH_CONTENDERS)
    assert bench.OPS is names.BENCH_OPS and bench.PEERS is names.BENCH_PEERS and bench.CONTENDERS is names.BENCH_CONTENDERS
    assert set(bench.CONTENDERS) == {*kernels.BACKENDS, *bench.PEERS}  # every backend is a contender
    # Mode keeps its public members, a str Enum whose values are names.MODES.
    assert [(mode.name, mode.value) for mode in format.Mode] == list(zip(("RN", "RS"), names.MODES, strict=True))
    assert isinstance(format.Mode.RN, str) and format.Mode(names.MODES[1]) is format.Mode.RS
    # The maps keyed by the names: each dtype name is its torch dtype, each format name its module's NAME.
    assert list(api.FLOAT_DTYPES.items()) == list(zip(names.FLOAT_DTYPES, (torch.bfloat16, torch.float16, torch.float32), strict=True))
    assert api.SUPPORTED_DTYPES == tuple(api.FLOAT_DTYPES.values())
    assert tuple(formats.OUTPUT_FORMATS) == names.OUTPUT_FORMATS
    assert all(module.NAME == name for name, module in formats.OUTPUT_FORMATS.items())

    # The CLI offers exactly the core's values (read from the commands Typer builds).
    modes = tuple(mode.value for mode in format.Mode)
    assert offered("quantize", "--mode") == modes
    assert offered("quantize", "--scale-rule") == format.SCALE_RULES
    assert offered("quantize", "--backend") == ("auto", *kernels.BACKENDS)
    assert offered("quantize", "--format") == offered("convert", "--format") == tuple(formats.OUTPUT_FORMATS)
    assert offered("dequantize", "--dtype") == offered("convert", "--dtype") == tuple(api.FLOAT_DTYPES)
    assert offered("verify", "--target") == verify.TARGETS
    assert cli_option("quantize", "--seed").max == rng.SEED_LIMIT - 1
    bench_help = " ".join(cli_option("bench", flag).help for flag in ("--op", "--backend"))
    assert all(name in bench_help for name in (*bench.OPS, *bench.CONTENDERS))


@pytest.mark.parametrize("args", [["inspect", str(SAMPLE), "--json"], ["quantize", str(SAMPLE), "--dry-run", "--json"]], ids=["inspect", "quantize-dry-run"])
def test_a_command_loads_torch_but_no_heavy_module(args):
    code, loaded, stderr = loaded_modules(args)
    assert code == 0, stderr
    assert "torch" in loaded  # the command ran
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("timing", ["1", None], ids=["NVFP4_TIMING=1", "unset"])
def test_a_cpu_quantize_loads_no_triton_and_times_its_phases_when_asked(tmp_path, timing):
    env = {key: value for key, value in os.environ.items() if key != "NVFP4_TIMING"} | ({"NVFP4_TIMING": timing} if timing else {})
    args = ["quantize", str(SAMPLE), "-o", str(tmp_path / "out"), "--device", "cpu", "--json"]
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, env=env)
    document, _, last = result.stdout.strip().rpartition("\n")
    code, _, names = last.partition(" ")
    assert code == "0", result.stderr
    assert not set(names.split()) & {*HEAVY, *UNUSED_BY_QUANTIZE}, sorted(set(names.split()) & {*HEAVY, *UNUSED_BY_QUANTIZE})
    report = json.loads(document)
    assert report["tensors_quantized"] > 0
    if timing is None:
        assert "timing" not in report
        return
    phases = report["timing"]
    assert ["interpreter_s", "cli_s", "imports_s", "plan_s", "run_s", "total_s"] == list(phases)  # no CUDA phases on the CPU
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["total_s"] == pytest.approx(sum(seconds for name, seconds in phases.items() if name != "total_s"), abs=1e-3)
    assert phases["run_s"] >= report["seconds"] - 1e-3  # the run's phase holds the conversion


def test_python_m_nvfp4cli_exits_with_the_commands_code_after_all_of_its_output(tmp_path):
    """`python -m nvfp4cli` skips the interpreter's teardown: its output must still be whole."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "nvfp4cli", "quantize", str(SAMPLE), "-o", str(out), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole document reached the pipe
    from safetensors import safe_open

    (name,) = report["files"]
    with safe_open(out / name, framework="pt") as f:  # an independent reader: the file is complete
        assert sum(f.get_tensor(key).nbytes for key in f.keys()) <= report["bytes_out"]
        assert len(f.keys()) >= report["tensors_quantized"] + report["tensors_copied"]
    for args, code in ((["quantize", str(tmp_path / "missing")], 1), (["quantize", str(SAMPLE), "--mode", "x"], 2), (["--version"], 0)):
        result = subprocess.run([sys.executable, "-m", "nvfp4cli", *args], capture_output=True, text=True)
        assert result.returncode == code, (args, result.stderr)
        assert len((result.stderr or result.stdout).strip().splitlines()) == 1, (args, result.stderr)
