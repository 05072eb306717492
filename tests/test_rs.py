"""Stochastic rounding: reproducible, composable over offsets, unbiased, in range."""

import pytest
import torch

import nvfp4cli
from nvfp4cli.format import E2M1_GRID, e2m1_values, unpack_codes


def test_same_seed_offset_same_bytes_and_seed_matters():
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    a = nvfp4cli.quantize(x, mode="rs", seed=5, offset=9)
    b = nvfp4cli.quantize(x, mode="rs", seed=5, offset=9)
    c = nvfp4cli.quantize(x, mode="rs", seed=6, offset=9)
    d = nvfp4cli.quantize(x, mode="rs", seed=5, offset=10)
    assert torch.equal(a.packed, b.packed) and torch.equal(a.scales, b.scales)
    assert not torch.equal(a.packed, c.packed)
    assert not torch.equal(a.packed, d.packed)
    assert torch.equal(a.scales, c.scales)  # RS changes element rounding only


@pytest.mark.parametrize("split", [1, 13, 40])
def test_split_rows_with_advanced_offset_equals_whole(split):
    x = torch.randn(64, 96, generator=torch.Generator().manual_seed(1))
    pts = nvfp4cli.quantize(x).per_tensor_scale
    offset = 2**33 + 17
    whole = nvfp4cli.quantize(x, mode="rs", seed=3, offset=offset)
    head = nvfp4cli.quantize(x[:split], mode="rs", seed=3, offset=offset, per_tensor_scale=pts)
    tail_offset = offset + nvfp4cli.philox_counters(x[:split])
    tail = nvfp4cli.quantize(x[split:], mode="rs", seed=3, offset=tail_offset, per_tensor_scale=pts)
    assert torch.equal(torch.cat([head.packed, tail.packed]), whole.packed)


def test_seed_and_offset_as_tensors_equal_ints():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    a = nvfp4cli.quantize(x, mode="rs", seed=2**40 + 1, offset=123)
    b = nvfp4cli.quantize(x, mode="rs", seed=torch.tensor(2**40 + 1), offset=torch.tensor(123))
    assert torch.equal(a.packed, b.packed)


def test_rs_is_unbiased_where_rn_is_not():
    # pts = 1 and a 6.0 at the head of each block fix every block scale at exactly 1, so the
    # other 15 elements are quantized as given: positions strictly between grid points.
    blocks = 20000
    values = torch.tensor([0.1, 0.3, 0.6, 0.9, 1.1, 1.4, 1.6, 1.9, 2.2, 2.75, 3.3, 3.9, 4.5, 5.2, -2.6])
    x = torch.empty(blocks, 16)
    x[:, 0] = 6.0
    x[:, 1:] = values
    pts = torch.tensor(1.0)
    rs = nvfp4cli.dequantize(nvfp4cli.quantize(x, mode="rs", seed=42, per_tensor_scale=pts))[:, 1:]
    rn = nvfp4cli.dequantize(nvfp4cli.quantize(x, mode="rn", per_tensor_scale=pts))[:, 1:]
    standard_error = rs.std(dim=0) / blocks**0.5
    assert (standard_error > 0).all()
    assert ((rs.mean(dim=0) - values).abs() <= 4 * standard_error).all()
    # RN is deterministic: its error is the full distance to the nearest grid point, far
    # beyond the same statistical tolerance.
    assert ((rn.mean(dim=0) - values).abs() > 10 * standard_error).all()


def test_rs_lands_on_the_two_neighbouring_grid_points_and_stays_in_range():
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(3)) * 10
    q = nvfp4cli.quantize(x, mode="rs", seed=1)
    grid = torch.tensor(E2M1_GRID)
    ratio = ((1 / q.per_tensor_scale) / q.scales.float()).repeat_interleave(16, dim=-1)
    v = (x * ratio).abs().clamp(max=6)  # the scaled value as docs/format.md §2 computes it
    lower = grid[(torch.searchsorted(grid, v, right=True) - 1).clamp(min=0)]
    upper = grid[torch.searchsorted(grid, v).clamp(max=7)]
    got = e2m1_values()[unpack_codes(q.packed).long()]
    assert (got.abs() <= 6).all()
    assert ((got.abs() == lower) | (got.abs() == upper)).all()
    assert (torch.signbit(got) == torch.signbit(x)).all()
