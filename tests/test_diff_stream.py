"""`nvfp4 diff` streams: its resident memory grows with the largest tensor, not with the model,
and stays near what one comparison needs (measured in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nvfp4cli.execute import run
from nvfp4cli.io import open_checkpoint
from nvfp4cli.plan import QuantizeOptions, plan_quantize
from nvfp4cli.verify import describe, verify

ROWS = COLS = 2048
TENSOR_BYTES = ROWS * COLS * 2  # 8 MB of bf16
PROBE = textwrap.dedent(
    """
    import sys
    from nvfp4cli.compare import compare_checkpoints

    def status_kb(key):  # VmHWM, unlike ru_maxrss, is not inherited from the parent process
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    resident = status_kb("VmRSS:")
    summary = compare_checkpoints(sys.argv[1], sys.argv[2]).summary()
    print(summary["compared"], (status_kb("VmHWM:") - resident) * 1024)
    """
)


def diff_growth(directory: Path, count: int) -> int:
    """Peak memory growth of comparing `count` bf16 tensors with their NVFP4 output."""
    g = torch.Generator().manual_seed(count)
    (directory / "model").mkdir(parents=True)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(ROWS, COLS, generator=g).to(torch.bfloat16) for i in range(count)}
    save_file(tensors, directory / "model" / "model.safetensors")
    (directory / "model" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    run(plan_quantize(open_checkpoint(directory / "model"), QuantizeOptions()), directory / "q", overlap=False)
    assert verify(describe(directory / "q"))["findings"] == []  # what diff compares is a checkpoint engines load
    result = subprocess.run([sys.executable, "-c", PROBE, str(directory / "model"), str(directory / "q")], capture_output=True, text=True, check=True)
    compared, growth = map(int, result.stdout.split())
    assert compared == count
    return growth


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for resident memory")
def test_diff_memory_grows_with_one_tensor_not_the_model(tmp_path):
    small, large = diff_growth(tmp_path / "small", 4), diff_growth(tmp_path / "large", 24)
    assert large < small + 4 * TENSOR_BYTES, (small, large)  # 20 more tensors: no more memory (allocator noise aside)
    # one pair: the bf16 tensor, its decoded float32 partner and the decode's int32 index, with
    # the float64 work in cache-sized buffers; measured 6-8 tensors on this machine, where
    # 4 Mi-element float64 chunks took 32 and a decode through int64 codes 14-16.5
    assert large < 11 * TENSOR_BYTES, large / TENSOR_BYTES


def test_diff_device_option(tmp_path):
    """--device cpu is the default's comparison; cuda without a GPU is a one-line usage error."""
    from cli_runner import SAMPLE, nvfp4

    run(plan_quantize(open_checkpoint(SAMPLE), QuantizeOptions()), tmp_path / "q", overlap=False)
    default, on_cpu = (nvfp4("diff", SAMPLE, tmp_path / "q", "--json", *extra) for extra in ((), ("--device", "cpu")))
    assert default.exit_code == on_cpu.exit_code == 0 and json.loads(default.stdout) == json.loads(on_cpu.stdout)
    if not torch.cuda.is_available():
        refused = nvfp4("diff", SAMPLE, tmp_path / "q", "--device", "cuda")
        assert refused.exit_code == 2 and refused.stderr.strip().count("\n") == 0 and "no CUDA GPU" in refused.stderr
