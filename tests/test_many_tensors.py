"""Checkpoints of many small tensors: runs of small, alike weights are quantized as one batch
(execute.execute_all), with the same bytes and the same errors as one tensor at a time."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from cli_runner import nvfp4
from nvfp4cli import execute
from nvfp4cli.io import open_checkpoint
from nvfp4cli.plan import QuantizeOptions, plan_quantize


def many_small(path, nan_at: str | None = None) -> None:
    g = torch.Generator().manual_seed(3)
    tensors = {}
    for expert in range(40):
        for part in ("gate_proj", "up_proj", "down_proj"):  # gate/up of an expert share a scale
            scale = 10.0 ** torch.randint(-3, 3, (), generator=g).item()
            tensors[f"model.layers.0.mlp.experts.{expert}.{part}.weight"] = (torch.randn(32, 64, generator=g) * scale).to(torch.bfloat16)
    tensors |= {f"model.layers.1.mlp.experts.{e}.down_proj.weight": torch.randn(48, 32, generator=g) for e in range(10)}  # fp32, another shape
    tensors["model.layers.2.self_attn.o_proj.weight"] = torch.zeros(16, 16)  # all zero: the pts floor
    if nan_at is not None:
        tensors[nan_at][3, 5] = float("nan")
    save_file(tensors, path)


def test_batched_small_units_give_the_bytes_of_one_at_a_time(tmp_path):
    many_small(tmp_path / "m.safetensors")
    checkpoint = open_checkpoint(tmp_path / "m.safetensors")
    plan = plan_quantize(checkpoint, QuantizeOptions())
    together = list(execute.execute_all(plan, checkpoint, plan.units))
    assert [unit for unit, _ in together] == plan.units
    batched = sum(1 for unit in plan.units if execute._batchable(plan, unit))
    assert batched == len(plan.units) >= 90  # every unit here is small and float: batches, not the one-unit path
    for unit, tensors in together:
        alone = execute.execute(plan, checkpoint, unit)
        assert tensors.keys() == alone.keys()
        for name, tensor in tensors.items():
            assert torch.equal(tensor.view(torch.uint8), alone[name].view(torch.uint8)), name


def test_a_nan_in_a_batch_is_reported_like_any_other(tmp_path):
    name = "model.layers.0.mlp.experts.7.up_proj.weight"
    many_small(tmp_path / "m.safetensors", nan_at=name)
    result = nvfp4("quantize", tmp_path / "m.safetensors", "-o", tmp_path / "o.safetensors")
    assert result.exit_code == 1 and f"tensor {name!r}: 1 non-finite value(s)" in result.stderr and "(3, 5)" in result.stderr
    assert not (tmp_path / "o.safetensors").exists()
