"""The overlapped conversion on a CUDA GPU (read-ahead into page-locked memory, Triton kernels,
write-behind) writes the bytes of the plain loop on the CPU, for every sample checkpoint, RN and
RS, both formats, and for a checkpoint of large tensors read in pieces. Skips without CUDA.

Run on the device machine: PYTHONPATH=. python -m pytest -q tests/gpu/test_pipeline_gpu.py
"""

import hashlib
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from safetensors.torch import save_file  # noqa: E402

from nvfp4cli.execute import run  # noqa: E402
from nvfp4cli.format import Mode  # noqa: E402
from nvfp4cli.io import open_checkpoint  # noqa: E402
from nvfp4cli.plan import QuantizeOptions, plan_quantize  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "sample_ckpts"


def digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.suffix == ".safetensors"}


def cuda_and_cpu(source: Path, tmp_path: Path, **options) -> tuple[dict, dict]:
    outputs = []
    for device, overlap in (("cuda", True), ("cpu", False)):
        output = tmp_path / device
        run(plan_quantize(open_checkpoint(source), QuantizeOptions(device=device, **options)), output, overlap=overlap, max_shard_bytes=300_000)
        outputs.append(digests(output))
    return outputs[0], outputs[1]


@pytest.mark.parametrize("sample", ["tiny-llama", "qwen3-moe", "gpt-oss-mxfp4", "deepseek-v3-fp8", "llama-fp8-ct"])
@pytest.mark.parametrize("options", [{}, {"mode": Mode.RS, "seed": 7, "fmt": "modelopt"}], ids=["rn-ct", "rs-modelopt"])
def test_pipelined_cuda_writes_the_cpu_bytes(sample, options, tmp_path):
    cuda, cpu = cuda_and_cpu(SAMPLES / sample, tmp_path, **options)
    assert cuda and cuda == cpu


def test_large_tensors_read_in_pieces_give_the_cpu_bytes(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    g = torch.Generator().manual_seed(0)
    # 48 MB tensors: read in 32 MB pieces by the read-ahead's thread pool
    save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.randn(4096, 6144, generator=g).to(torch.bfloat16) for i in range(3)}, model / "model.safetensors")
    cuda, cpu = cuda_and_cpu(model, tmp_path)
    assert cuda and cuda == cpu


@pytest.mark.parametrize("fmt", ["compressed-tensors", "modelopt"])
def test_dequantize_on_cuda_writes_the_cpu_bytes(fmt, tmp_path):
    from nvfp4cli.plan import plan_dequantize

    quantized = tmp_path / "q"
    run(plan_quantize(open_checkpoint(SAMPLES / "tiny-llama"), QuantizeOptions(fmt=fmt)), quantized, overlap=False)
    outputs = []
    for device, overlap in (("cuda", True), ("cpu", False)):
        output = tmp_path / f"d-{device}"
        run(plan_dequantize(open_checkpoint(quantized), torch.bfloat16, device), output, overlap=overlap)
        outputs.append(digests(output))
    assert outputs[0] and outputs[0] == outputs[1]


def test_diff_on_cuda_gives_the_cpu_metrics(tmp_path):
    from nvfp4cli.compare import compare_checkpoints

    quantized = tmp_path / "q"
    run(plan_quantize(open_checkpoint(SAMPLES / "tiny-llama"), QuantizeOptions()), quantized, overlap=False)
    on_cpu, on_cuda = (compare_checkpoints(SAMPLES / "tiny-llama", quantized, device=device) for device in ("cpu", "cuda"))
    assert [t.name for t in on_cuda.tensors] == [t.name for t in on_cpu.tensors]
    for a, b in zip(on_cpu.tensors, on_cuda.tensors):
        assert a.stats.identical == b.stats.identical and a.code_agreement == b.code_agreement, a.name
        assert b.stats.sqnr_db == pytest.approx(a.stats.sqnr_db, rel=1e-9) if a.stats.sqnr_db is not None else b.stats.sqnr_db is None


def test_a_non_finite_member_of_a_fused_group_fails_as_on_the_cpu(tmp_path):
    """A fused group's amaxes come back to the host in one read: a NaN in its second member is
    refused with the CPU's words, naming that member."""
    from nvfp4cli.errors import DataError

    names = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight")
    g = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(1024, 1024, generator=g).to(torch.bfloat16) for name in names}  # 2 MB each: overlapped
    tensors[names[1]][7, 9] = float("nan")
    model = tmp_path / "model"
    model.mkdir()
    save_file(tensors, model / "model.safetensors")
    errors = []
    for device, overlap in (("cuda", True), ("cpu", False)):
        with pytest.raises(DataError) as caught:
            run(plan_quantize(open_checkpoint(model), QuantizeOptions(device=device)), tmp_path / f"out-{device}", overlap=overlap)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and names[1] in errors[0] and "first at index (7, 9)" in errors[0]


def test_stages_with_the_gpu_waited_for_split_the_make_step(tmp_path):
    from nvfp4cli import pipeline

    pipeline.STAGES = stages = pipeline.Stages(sync_device=True)
    try:
        run(plan_quantize(open_checkpoint(SAMPLES / "tiny-llama"), QuantizeOptions(device="cuda")), tmp_path / "out", overlap=True)
    finally:
        pipeline.STAGES = None
    made = stages.calls["make: make"]
    assert stages.calls["make: H2D"] == stages.calls["make: kernels"] == stages.calls["make: D2H"] <= made
    assert stages.seconds["make: H2D"] + stages.seconds["make: kernels"] + stages.seconds["make: D2H"] <= stages.seconds["make: make"]
