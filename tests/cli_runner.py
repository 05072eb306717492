"""`nvfp4` run in this process, for the CLI tests, and the sample checkpoint they convert.

Every checkpoint a test writes with `nvfp4 quantize` through nvfp4() is also
checked with `nvfp4 verify` (vLLM's view): whatever the suite makes, engines can load. (A model
directory made without a config.json, as some tests make, has nothing for an engine to load.)"""

from pathlib import Path

from typer.testing import CliRunner

from nvfp4cli.cli import app

SAMPLE = Path(__file__).resolve().parent.parent / "sample_ckpts" / "tiny-llama"
WRITES_NVFP4 = ("quantize",)


def nvfp4(*args: object):
    """The click Result of `nvfp4 ARGS` (each argument passed as str)."""
    argv = [str(arg) for arg in args]
    result = CliRunner().invoke(app, argv)
    if result.exit_code == 0 and argv and argv[0] in WRITES_NVFP4 and "--dry-run" not in argv and ("-o" in argv or "--output" in argv):
        output = argv[argv.index("-o" if "-o" in argv else "--output") + 1]
        if Path(output).is_dir() and not (Path(output) / "config.json").exists():
            return result
        verified = CliRunner().invoke(app, ["verify", output])
        assert verified.exit_code == 0, f"nvfp4 verify {output} after nvfp4 {' '.join(argv)}:\n{verified.output}"
    return result
