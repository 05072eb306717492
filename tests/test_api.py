"""Public API behaviour: zeros, dequantize, shapes, and every documented error."""

import pytest
import torch

import nvfp4cli
from nvfp4cli.errors import DataError, UsageError


@pytest.mark.parametrize("mode", ["rn", "rs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_zero_tensors_dequantize_to_exact_zeros(mode, dtype):
    q = nvfp4cli.quantize(torch.zeros(4, 32, dtype=dtype), mode=mode, seed=1)
    assert torch.isfinite(q.per_tensor_scale) and q.per_tensor_scale > 0
    assert torch.isfinite(q.scales.float()).all()
    assert torch.equal(nvfp4cli.dequantize(q), torch.zeros(4, 32))


@pytest.mark.parametrize("mode", ["rn", "rs"])
@pytest.mark.parametrize(
    "x",
    [
        torch.full((3, 64), 1e-40),  # float32 subnormal: 1/(amax/2688) would overflow
        torch.linspace(-1e-36, 1e-36, 128).reshape(2, 64),  # amax/2688 below the floor
        torch.full((2, 32), 1e-39, dtype=torch.bfloat16),
    ],
    ids=["subnormal", "below-floor", "bf16-subnormal"],
)
def test_near_zero_tensors_stay_finite_and_close(mode, x):
    # torchao yields NaN or garbage here; the 2^-120 floor keeps every step finite.
    q = nvfp4cli.quantize(x, mode=mode, seed=1)
    x_hat = nvfp4cli.dequantize(q)
    assert torch.isfinite(x_hat).all()
    unit = (q.scales.float() * q.per_tensor_scale).repeat_interleave(16, dim=-1)
    error = (x_hat - x.float()).abs()
    assert (error <= x.float().abs() + (0 if mode == "rn" else 0.5 * unit)).all()
    if mode == "rn" and x.float().abs().max() < 1e-38:
        assert torch.equal(x_hat.abs(), torch.zeros_like(x_hat))


def test_dequantize_error_is_bounded_by_half_a_step():
    x = torch.randn(128, 256, generator=torch.Generator().manual_seed(0))
    q = nvfp4cli.quantize(x)
    assert q.shape == x.shape
    x_hat = nvfp4cli.dequantize(q, dtype=torch.bfloat16)
    assert x_hat.dtype == torch.bfloat16 and x_hat.shape == x.shape
    block_scale = (q.scales.float() * q.per_tensor_scale).repeat_interleave(16, dim=-1)
    # The largest E2M1 gap is 2 (between 4 and 6): RN error is at most 1 scale unit, plus the
    # E4M3 rounding of the scale that can push a block max slightly beyond 6 units.
    err = (nvfp4cli.dequantize(q) - x).abs() / block_scale
    assert err.max() <= 1.0 + 6 * 2**-4
    assert torch.allclose(q.global_scale, 1 / q.per_tensor_scale)


def test_philox_counters():
    assert nvfp4cli.philox_counters(torch.empty(3, 5, 32)) == 30
    assert nvfp4cli.philox_counters((4, 16)) == 4


def test_modes_accept_enum_and_string():
    x = torch.randn(2, 32)
    assert torch.equal(nvfp4cli.quantize(x, mode=nvfp4cli.Mode.RN).packed, nvfp4cli.quantize(x, mode="rn").packed)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"x": torch.randn(3, 20)}, DataError, r"last dim of shape \(3, 20\)"),
        ({"x": torch.randn(4, 16, dtype=torch.float64)}, DataError, r"unsupported dtype torch.float64"),
        ({"x": torch.randint(0, 5, (4, 16))}, DataError, r"unsupported dtype torch.int64"),
        ({"x": torch.randn(2, 32), "mode": "rz"}, UsageError, r"unknown mode 'rz'; valid: rn, rs"),
        ({"x": torch.randn(2, 32), "backend": "cuda-magic"}, UsageError, r"unknown backend 'cuda-magic'; valid: auto, reference, triton"),
        ({"x": torch.randn(2, 32), "mode": "rs"}, UsageError, r"mode 'rs' needs a seed"),
        ({"x": torch.randn(2, 32), "mode": "rs", "seed": -1}, UsageError, r"seed must be in \[0, 2\^63\), got -1"),
        ({"x": torch.randn(2, 32), "mode": "rs", "seed": 2**63}, UsageError, r"seed must be in \[0, 2\^63\)"),
        ({"x": torch.randn(2, 32), "mode": "rs", "seed": 1, "offset": -5}, UsageError, r"offset must be in \[0, 2\^63\), got -5"),
        ({"x": torch.randn(2, 32), "mode": "rs", "seed": 1, "offset": 2**63 - 2}, UsageError, r"exceeds 2\^63"),
        ({"x": torch.randn(2, 32), "mode": "rs", "seed": 1.5}, UsageError, r"seed must be an int"),
        ({"x": torch.randn(2, 32), "per_tensor_scale": torch.ones(2)}, UsageError, r"per_tensor_scale must be a 0-d"),
        ({"x": torch.randn(2, 32), "per_tensor_scale": torch.tensor(0.0)}, UsageError, r"positive and finite, got 0.0"),
        ({"x": torch.randn(2, 32), "per_tensor_scale": torch.tensor(float("inf"))}, UsageError, r"positive and finite"),
        ({"x": torch.randn(2, 32), "per_tensor_scale": torch.tensor(1)}, UsageError, r"must be floating point"),
    ],
)
def test_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        nvfp4cli.quantize(**kwargs)
    assert issubclass(error, ValueError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_is_reported_with_count_and_first_index(bad):
    x = torch.randn(4, 32)
    x[2, 5] = bad
    x[3, 0] = bad
    with pytest.raises(DataError, match=r"2 non-finite value\(s\).*first at index \(2, 5\)"):
        nvfp4cli.quantize(x)


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(UsageError, match="backend 'triton' needs a CUDA tensor"):
        nvfp4cli.quantize(torch.randn(2, 32), backend="triton")


def test_check_finite_false_skips_host_reads_but_gives_the_same_bytes():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(5))
    pts = nvfp4cli.quantize(x).per_tensor_scale
    checked = nvfp4cli.quantize(x, mode="rs", seed=3, per_tensor_scale=pts)
    unchecked = nvfp4cli.quantize(x, mode="rs", seed=3, per_tensor_scale=pts, check_finite=False)
    assert torch.equal(checked.packed, unchecked.packed) and torch.equal(checked.scales, unchecked.scales)
    x[0, 0] = float("nan")
    with pytest.raises(DataError):
        nvfp4cli.quantize(x, per_tensor_scale=pts)
    nvfp4cli.quantize(x, per_tensor_scale=pts, check_finite=False)  # the caller answers for it
