"""Packing, the E2M1 table and the swizzled scale layout against the formulas of docs/format.md."""

import pytest
import torch

from nvfp4cli.format import e2m1_values, pack_codes, swizzle_scales, unpack_codes, unswizzle_scales


def test_pack_puts_even_elements_in_low_nibble():
    codes = torch.tensor([[1, 2, 15, 8]], dtype=torch.uint8)
    packed = pack_codes(codes)
    assert packed.tolist() == [[1 | (2 << 4), 15 | (8 << 4)]]
    assert torch.equal(unpack_codes(packed), codes)


def test_e2m1_table():
    values = e2m1_values()
    assert values[:8].tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert torch.equal(values[8:], -values[:8])
    assert torch.signbit(values[8])


@pytest.mark.parametrize("rows,cols", [(1, 1), (128, 4), (130, 7), (300, 16)])
def test_swizzle_matches_spec_formula(rows, cols):
    raw = torch.randint(1, 127, (rows, cols), dtype=torch.uint8, generator=torch.Generator().manual_seed(rows))
    scales = raw.view(torch.float8_e4m3fn)
    swizzled = swizzle_scales(scales).view(torch.uint8)
    padded_cols = -(-cols // 4) * 4
    tiles_per_row = padded_cols // 4
    assert swizzled.numel() == -(-rows // 128) * 128 * padded_cols
    for r in range(rows):
        for c in range(cols):
            tile = (r // 128) * tiles_per_row + c // 4
            i, j = (r % 128) // 32, r % 32
            assert swizzled[tile * 512 + 16 * j + 4 * i + c % 4] == raw[r, c]
    assert torch.equal(unswizzle_scales(swizzle_scales(scales), rows, cols).view(torch.uint8), raw)
