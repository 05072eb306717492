"""Reference backend against the naive second implementation in spec_oracle.py (RN and RS)."""

import numpy as np
import pytest
import torch

import nvfp4cli
import spec_oracle
from nvfp4cli.format import unpack_codes


def ours(x: torch.Tensor, **kwargs):
    q = nvfp4cli.quantize(x, backend="reference", **kwargs)
    return unpack_codes(q.packed).numpy(), q.scales.view(torch.uint8).numpy(), float(q.per_tensor_scale)


def adversarial_input(rows: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g) * 3
    x[0, :16] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.0, 0.0, 1e-38, -1e-38, 4.0, 2.0, 1.0, 0.5])
    x[1] *= 1e-7
    return x


@pytest.mark.parametrize("mode,seed,offset", [("rn", 0, 0), ("rs", 7, 0), ("rs", 2**40 + 12345, 2**33 - 3), ("rs", 2**63 - 1, 2**62)])
def test_matches_oracle(mode, seed, offset):
    x = adversarial_input(4, 64, seed=seed % 1000)
    kwargs = {"mode": mode, "seed": seed, "offset": offset} if mode == "rs" else {}
    codes, scales, pts = ours(x, **kwargs)
    ref_codes, ref_scales, ref_pts = spec_oracle.quantize(x.numpy(), mode=mode, seed=seed, offset=offset)
    assert pts == float(ref_pts)
    np.testing.assert_array_equal(scales, ref_scales)
    np.testing.assert_array_equal(codes, ref_codes)


def test_rs_3d_uses_flat_block_index():
    x = adversarial_input(6, 32, seed=5).reshape(2, 3, 32)
    codes, _, _ = ours(x, mode="rs", seed=11, offset=100)
    ref_codes, _, _ = spec_oracle.quantize(x.reshape(6, 32).numpy(), mode="rs", seed=11, offset=100)
    np.testing.assert_array_equal(codes.reshape(6, 32), ref_codes)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_widened_exactly(dtype):
    x = adversarial_input(2, 32, seed=9).to(dtype)
    codes, scales, _ = ours(x)
    ref_codes, ref_scales, _ = spec_oracle.quantize(x.float().numpy())
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scales, ref_scales)


def test_rs_on_each_elements_own_threshold():
    """Every element on, or one ulp either side of, the threshold of its own random byte, in
    every step region (tiny ones too, where only an exact comparison gets it right)."""
    from triton_cases import own_threshold_blocks

    x = own_threshold_blocks(seed=99, offset=5, rows=4, blocks_a_row=12)
    codes, scales, pts = ours(x, mode="rs", seed=99, offset=5)
    ref_codes, ref_scales, ref_pts = spec_oracle.quantize(x.numpy(), mode="rs", seed=99, offset=5)
    assert pts == float(ref_pts) == 1.0
    np.testing.assert_array_equal(scales, ref_scales)
    np.testing.assert_array_equal(codes, ref_codes)
