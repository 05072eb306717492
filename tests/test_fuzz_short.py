"""A short run of fuzz/fuzz_checkpoint.py: mutated safetensors files, model directories and
indexes through open, inspect, decode, diff, quantize and dequantize must fail only with
DataError or UsageError, leave nothing behind on failure, and write output that opens again."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_checkpoint.py"
EXAMPLES = 600  # a fixed seed, so every run of the suite tries the same inputs


def load_harness():
    spec = importlib.util.spec_from_file_location("fuzz_checkpoint", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_mutated_checkpoints_fail_only_cleanly(tmp_path):
    harness = load_harness()
    report = harness.fuzz(EXAMPLES, seed=0, crash_dir=tmp_path)
    assert report.crashes == {}, report.summary()
    assert report.examples == EXAMPLES
    # the mutations must reach past the parser: every command both succeeds and fails on some inputs
    for command in ("inspect and decode", "diff with itself", "quantize rn", "quantize rs modelopt", "dequantize"):
        assert report.outcomes[f"{command}: ok"] > 0, report.summary()
        assert report.outcomes[f"{command}: clean error"] > 0, report.summary()
