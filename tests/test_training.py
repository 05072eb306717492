"""FP4 training primitives (docs/format.md §9) on the reference backend: the random Hadamard transform,
2-D scaling and rowwise + columnwise quantization against tests/spec_oracle.py (plain Python loops,
no shared code), the transpose property of 2-D scaling, the inverse transform, RS unbiasedness
after the transform, empty tensors and every documented error. Triton == reference for the same
cases: tests/triton_interpreter_checks.py (CPU) and tests/gpu/test_triton_gpu.py."""

import numpy as np
import pytest
import torch

import nvfp4cli
import spec_oracle
from nvfp4cli.errors import DataError, UsageError
from nvfp4cli.format import unpack_codes
from nvfp4cli.kernels import HADAMARD_SIGNS

RS = {"mode": "rs", "seed": 2**40 + 3, "offset": 2**33 + 5}


def sample(rows: int, k: int, seed: int) -> torch.Tensor:
    """Normal values over six decades, a row of E2M1 ties, signed zeros and a tiny block."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=gen) * 10 ** torch.empty(rows, k).uniform_(-3, 3, generator=gen)
    x[0, :16] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.0, 0.0, 1e-38, -1e-38, 4.0, 2.0, 1.0, 0.5])
    x[1, 16:32] *= 1e-6
    return x


def parts(q) -> tuple[np.ndarray, np.ndarray, float]:
    return unpack_codes(q.packed).numpy(), q.scales.view(torch.uint8).numpy(), float(q.per_tensor_scale)


def assert_oracle(q, want) -> None:
    codes, scales, pts = parts(q)
    assert pts == float(want[2])
    np.testing.assert_array_equal(scales, want[1])
    np.testing.assert_array_equal(codes, want[0])


def test_te_signs_are_the_backends_signs():
    assert tuple(spec_oracle.TE_SIGNS) == HADAMARD_SIGNS


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rht_matches_the_scalar_butterfly(dtype):
    x = sample(6, 48, seed=1).to(dtype)
    flipped = tuple(-s for s in HADAMARD_SIGNS)
    for signs in (None, flipped):
        for inverse in (False, True):
            got = nvfp4cli.rht(x, inverse=inverse, signs=signs, backend="reference")
            want = spec_oracle.rht(x.float().numpy(), signs or spec_oracle.TE_SIGNS, inverse)
            assert got.dtype == torch.float32 and got.shape == x.shape
            np.testing.assert_array_equal(got.numpy(), want)


def test_rht_is_orthonormal_and_the_inverse_recovers_x_to_fp32_rounding():
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(2), dtype=torch.float64).float()
    y = nvfp4cli.rht(x)
    blocks, y_blocks = x.double().reshape(-1, 16), y.double().reshape(-1, 16)
    # 0.25 * H16 is orthonormal: the transform keeps each block's norm (up to fp32 rounding).
    torch.testing.assert_close(y_blocks.norm(dim=1), blocks.norm(dim=1), rtol=1e-6, atol=0)
    back = nvfp4cli.rht(y, inverse=True)
    # 8 roundings each way on values up to the block's norm: a few fp32 ulps of that norm.
    bound = 16 * torch.finfo(torch.float32).eps * blocks.abs().amax(dim=1, keepdim=True) * 4
    assert ((back.double().reshape(-1, 16) - blocks).abs() <= bound).all()


@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_hadamard_quantize_is_quantize_of_rht_and_matches_the_oracle(mode):
    x = sample(5, 64, seed=3)
    kwargs = RS if mode == "rs" else {}
    q = nvfp4cli.quantize(x, hadamard=True, backend="reference", **kwargs)
    assert q.hadamard
    direct = nvfp4cli.quantize(nvfp4cli.rht(x), backend="reference", **kwargs)
    assert torch.equal(q.packed, direct.packed) and torch.equal(q.scales.view(torch.uint8), direct.scales.view(torch.uint8))
    assert torch.equal(q.per_tensor_scale, direct.per_tensor_scale)
    assert_oracle(q, spec_oracle.quantize(spec_oracle.rht(x.numpy()), mode, kwargs.get("seed", 0), kwargs.get("offset", 0)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_block_2d_matches_the_oracle(mode, dtype):
    x = sample(48, 80, seed=4).to(dtype)  # 3 x 5 tiles: odd counts both ways
    kwargs = RS if mode == "rs" else {}
    q = nvfp4cli.quantize(x, block_2d=True, backend="reference", **kwargs)
    assert_oracle(q, spec_oracle.quantize_2d(x.float().numpy(), mode, kwargs.get("seed", 0), kwargs.get("offset", 0)))
    scales = q.scales.view(torch.uint8).reshape(3, 16, 5)
    assert (scales == scales[:, :1]).all()  # 16 equal rows a tile


@pytest.mark.parametrize("block_2d,col_hadamard", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_rowcol_matches_the_oracle(mode, block_2d, col_hadamard):
    x = sample(32, 48, seed=5)
    kwargs = RS if mode == "rs" else {}
    rows, cols = nvfp4cli.quantize_rowcol(x, block_2d=block_2d, col_hadamard=col_hadamard, backend="reference", **kwargs)
    want_rows, want_cols = spec_oracle.quantize_rowcol(
        x.numpy(), mode, kwargs.get("seed", 0), kwargs.get("offset", 0), block_2d, col_hadamard
    )
    assert_oracle(rows, want_rows)
    assert_oracle(cols, want_cols)
    assert cols.shape == (48, 32) and cols.hadamard == col_hadamard and not rows.hadamard


def test_rowcol_columnwise_stream_continues_the_rowwise_one():
    x = sample(16, 64, seed=6)
    rows, cols = nvfp4cli.quantize_rowcol(x, **RS)
    alone = nvfp4cli.quantize(x.T.contiguous(), mode="rs", seed=RS["seed"], offset=RS["offset"] + nvfp4cli.philox_counters(x))
    assert torch.equal(cols.packed, alone.packed)
    assert torch.equal(rows.packed, nvfp4cli.quantize(x, **RS).packed)


@pytest.mark.parametrize("shape", [(16, 16), (48, 80), (64, 32)])
def test_2d_rn_dequantizes_the_transpose_to_the_transpose(shape):
    w = sample(*shape, seed=7)
    w[5, 3] = 1e4  # one large value: its tile's scale differs from its neighbours'
    forward = nvfp4cli.dequantize(nvfp4cli.quantize(w, block_2d=True, backend="reference"))
    transposed = nvfp4cli.dequantize(nvfp4cli.quantize(w.T.contiguous(), block_2d=True, backend="reference"))
    assert torch.equal(forward.T, transposed)
    one_d = nvfp4cli.dequantize(nvfp4cli.quantize(w.T.contiguous(), backend="reference"))
    assert not torch.equal(forward.T, one_d)  # 1-D scaling lacks the property


def test_rs_after_the_transform_is_unbiased():
    # Every row holds the same block: each gets its own Philox counter, so the rows are
    # independent RS draws of rht(block) with the same scale.
    copies = 20000
    block = torch.tensor([0.3, -1.1, 2.6, 0.05, 1.7, -0.8, 3.3, 0.9, -2.2, 0.4, 1.25, -0.6, 0.15, 2.9, -1.9, 0.7])
    x = block.repeat(copies, 1)
    q = nvfp4cli.quantize(x, hadamard=True, mode="rs", seed=9, backend="reference")
    target = nvfp4cli.rht(block[None])[0]
    scale = q.scales[0, 0].float() * q.per_tensor_scale
    assert (q.scales.view(torch.uint8) == q.scales.view(torch.uint8)[0, 0]).all()
    expected = target.clamp(-6 * scale, 6 * scale)  # values beyond the block's range clip there
    samples = nvfp4cli.dequantize(q)
    standard_error = samples.std(dim=0) / copies**0.5
    assert (standard_error > 0).sum() >= 12  # most values lie between grid points
    assert ((samples.mean(dim=0) - expected).abs() <= 5 * standard_error + 1e-6 * expected.abs()).all()
    rn = nvfp4cli.dequantize(nvfp4cli.quantize(x[:1], hadamard=True, per_tensor_scale=q.per_tensor_scale))[0]
    assert (rn - expected).abs().max() > 10 * standard_error.max()  # RN's bias is far above the tolerance


@pytest.mark.parametrize("shape", [(0, 64), (0, 3, 32)])
@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_empty_tensors_quantize_to_empty_outputs(shape, mode):
    x = torch.empty(shape)
    for kwargs in ({}, {"hadamard": True}):
        q = nvfp4cli.quantize(x, mode=mode, seed=1, backend="reference", **kwargs)
        assert q.packed.shape == (*shape[:-1], shape[-1] // 2) and q.scales.shape == (*shape[:-1], shape[-1] // 16)
        assert float(q.per_tensor_scale) == 2.0**-120  # amax 0 -> the floor
        assert nvfp4cli.dequantize(q).shape == shape
    assert nvfp4cli.rht(x).shape == shape


@pytest.mark.parametrize(
    "call,error,pattern",
    [
        (lambda: nvfp4cli.quantize(torch.ones(2, 16, 16), block_2d=True), DataError, r"block_2d needs a 2-D tensor with both dims multiples of 16, got shape \(2, 16, 16\)"),
        (lambda: nvfp4cli.quantize(torch.ones(24, 16), block_2d=True), DataError, r"got shape \(24, 16\)"),
        (lambda: nvfp4cli.quantize(torch.ones(16, 16), block_2d=True, scale_rule="mse"), UsageError, r"block_2d takes scale rule 'max' only"),
        (lambda: nvfp4cli.quantize_rowcol(torch.ones(8, 32)), DataError, r"quantize_rowcol needs a 2-D tensor .* got shape \(8, 32\)"),
        (lambda: nvfp4cli.quantize_rowcol(torch.ones(16, 32), "rs"), UsageError, r"mode 'rs' needs a seed"),
        (lambda: nvfp4cli.quantize_rowcol(torch.ones(16, 32), "rs", 1, 2**63 - 3), UsageError, r"exceeds 2\^63"),
        (lambda: nvfp4cli.rht(torch.ones(2, 20)), DataError, r"last dim of shape \(2, 20\)"),
        (lambda: nvfp4cli.rht(torch.ones(2, 16), signs=[1] * 15), UsageError, r"signs must be 16 values, each 1 or -1"),
        (lambda: nvfp4cli.rht(torch.ones(2, 16), signs=[2] * 16), UsageError, r"signs must be 16 values"),
    ],
)
def test_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_non_finite_input_names_count_and_index_with_hadamard_and_rowcol():
    x = torch.randn(16, 32)
    x[3, 7] = float("nan")
    with pytest.raises(DataError, match=r"1 non-finite value\(s\).*first at index \(3, 7\)"):
        nvfp4cli.quantize(x, hadamard=True)
    with pytest.raises(DataError, match=r"first at index \(3, 7\)"):
        nvfp4cli.quantize_rowcol(x, col_hadamard=True)
    huge = torch.full((1, 16), 3e38)
    with pytest.raises(DataError, match=r"Hadamard transform of tensor of shape \(1, 16\) overflows float32"):
        nvfp4cli.quantize(huge, hadamard=True)


def test_non_finite_input_is_caught_when_the_scales_are_given():
    # Given its per-tensor scales a call runs no amax: the quantize pass itself flags NaN/Inf.
    x = torch.randn(16, 32)
    pts = torch.tensor(0.01)
    x[3, 7] = float("-inf")
    with pytest.raises(DataError, match=r"1 non-finite value\(s\).*first at index \(3, 7\)"):
        nvfp4cli.quantize(x, per_tensor_scale=pts, hadamard=True)
    with pytest.raises(DataError, match=r"first at index \(3, 7\)"):
        nvfp4cli.quantize_rowcol(x, per_tensor_scale=pts, col_per_tensor_scale=pts)
    huge = torch.full((16, 16), 3e38)
    nvfp4cli.quantize_rowcol(huge, per_tensor_scale=pts, col_per_tensor_scale=pts)  # finite, nothing transformed
    with pytest.raises(DataError, match=r"Hadamard transform of tensor of shape \(16, 16\) overflows float32"):
        nvfp4cli.quantize_rowcol(huge, per_tensor_scale=pts, col_per_tensor_scale=pts, col_hadamard=True)
    with pytest.raises(DataError, match="overflows float32"):
        nvfp4cli.quantize(huge, per_tensor_scale=pts, hadamard=True)
    # a bad scale is reported as before, after the launch now (no device read ahead of it)
    with pytest.raises(UsageError, match=r"per_tensor_scale must be positive and finite, got nan"):
        nvfp4cli.quantize_rowcol(torch.randn(16, 32), per_tensor_scale=pts, col_per_tensor_scale=torch.tensor(float("nan")))
    with pytest.raises(UsageError, match=r"positive and finite, got -0.5"):
        nvfp4cli.quantize(torch.randn(16, 32), per_tensor_scale=torch.tensor(-0.5), hadamard=True)
