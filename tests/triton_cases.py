"""Adversarial inputs shared by the Triton backend tests (CPU interpreter and GPU): exact E2M1
ties and their neighbours, values exactly on a stochastic-rounding threshold, subnormals, tensors
below the per-tensor-scale floor, values near the dtype's maximum, signed zeros, magnitudes over
many decades, and per-tensor scales that saturate the block scales at either end; and the
call of a quantize with its nonfinite flag."""

from __future__ import annotations

import torch

E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def _next_up_down(values: torch.Tensor) -> torch.Tensor:
    """The dtype's neighbours of positive values, one ulp up and down."""
    bits = values.view(_INT_VIEW[values.dtype])
    return torch.cat([(bits + 1).view(values.dtype), (bits - 1).view(values.dtype)])


def _unit_scale_blocks(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rows whose first block holds 2688 (so amax = 2688 and pts = 1) and whose other blocks each
    start with 6.0 (so their scale is exactly 1 and v = x): `values` are quantized as given."""
    per_block = 15
    values = values.to(dtype)
    pad = (-values.numel()) % per_block
    values = torch.cat([values, torch.zeros(pad, dtype=dtype)]).reshape(-1, per_block)
    blocks = torch.cat([torch.full((values.shape[0], 1), 6.0, dtype=dtype), values], dim=1)
    head = torch.zeros(1, 16, dtype=dtype)
    head[0, 0] = 2688.0
    return torch.cat([head, blocks]).reshape(1, -1)


def adversarial_cases(dtype: torch.dtype, seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(name, x on CPU, per_tensor_scale or None for the one from amax) for one input dtype."""
    gen = torch.Generator().manual_seed(seed)
    finfo = torch.finfo(dtype)
    cases = []

    ties = torch.tensor(E2M1_MIDPOINTS + (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), dtype=dtype)
    ties = torch.cat([ties, _next_up_down(ties)])
    cases.append(("ties", _unit_scale_blocks(torch.cat([ties, -ties, torch.tensor([-0.0, 0.0])]), dtype), None))

    # a = (lo + (2b + 1) / 512) * step: on a threshold u = (b + 0.5) / 256 for one byte b in 256,
    # in each step region; float32 holds them exactly, narrower types round them near one.
    steps = torch.tensor([0.5] * 4 + [1.0] * 2 + [2.0])
    lows = torch.tensor([0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 2.0])
    fractions = (2 * torch.arange(256, dtype=torch.float64) + 1) / 512
    levels = ((lows[:, None] + fractions[None, :]) * steps[:, None]).flatten().repeat(4)
    cases.append(("rs-thresholds", _unit_scale_blocks(levels, dtype), None))

    smallest = finfo.smallest_normal
    subnormals = torch.rand(8, 64, generator=gen, dtype=torch.float64) * smallest
    subnormals[0, :16] = torch.randn(16, generator=gen, dtype=torch.float64)  # one normal block sets pts
    cases.append(("subnormal", subnormals.to(dtype), None))
    cases.append(("all-subnormal", (subnormals[1:] * torch.sign(torch.randn(7, 64, generator=gen, dtype=torch.float64))).to(dtype), None))

    tiny = max(1e-36, smallest * 4)  # amax / 2688 below 2^-120 where the dtype allows
    cases.append(("below-floor", (torch.randn(4, 32, generator=gen, dtype=torch.float64) * tiny).to(dtype), None))

    huge = torch.randn(4, 48, generator=gen, dtype=torch.float64).clamp(-1, 1) * finfo.max
    cases.append(("near-max", huge.to(dtype), None))

    zeros = torch.zeros(3, 32, dtype=dtype)
    zeros[1, ::3] = -0.0
    cases.append(("signed-zeros", zeros, None))

    decades = torch.randn(16, 64, generator=gen, dtype=torch.float64)
    exponent = torch.randint(-40, 40, (16, 4, 1), generator=gen).to(torch.float64)
    decades = (decades.reshape(16, 4, 16) * 2.0**exponent).reshape(16, 64)
    cases.append(("decades", decades.clamp(-finfo.max, finfo.max).to(dtype), None))

    normal = torch.randn(8, 64, generator=gen, dtype=torch.float64).to(dtype)
    amax = normal.float().abs().max()
    cases.append(("saturated-high-scales", normal, amax / 2688 / 1000))
    cases.append(("saturated-low-scales", normal, amax / 2688 * 1e6))
    return cases


def own_threshold_blocks(seed: int, offset: int, rows: int, blocks_a_row: int) -> torch.Tensor:
    """float32 [rows, 16 * blocks_a_row] whose elements sit on, or one ulp either side of, the
    stochastic-rounding threshold of their own random byte (spec_oracle's Philox for this seed and
    offset), in every step region, with either sign. Block (0, 0) starts with 2688 (pts = 1), every
    other block with 6.0 (block scale 1), so a = |x|. Below 1/4 a + 1 drops the ulp: only a
    rounding that keeps it exact (docs/format.md §3) tells the three apart."""
    from spec_oracle import philox_randint4x  # tests/: shares no code with nvfp4cli

    steps = (0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 2.0)
    lows = (0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 2.0)
    x = torch.empty(rows, blocks_a_row, 16, dtype=torch.float32)
    x[:, :, 0] = 6.0
    for block in range(rows * blocks_a_row):
        words = philox_randint4x(seed, offset + block)
        for j in range(1, 16):
            byte = (words[j // 4] >> (8 * (j % 4))) & 0xFF
            k = block * 15 + j
            region = k % 7 if k % 3 else 0  # a third of them below 1/2, where only rounding up is exact
            a = torch.tensor((lows[region] + (2 * byte + 1) / 512) * steps[region], dtype=torch.float32)
            ulps = (k // 7) % 3 - 1  # -1, 0, +1
            a = (a.view(torch.int32) + ulps).view(torch.float32)
            x[block // blocks_a_row, block % blocks_a_row, j] = -a if k % 2 else a
    x[0, 0, 0] = 2688.0
    return x.reshape(rows, 16 * blocks_a_row)


def flagged(quantize, x: torch.Tensor, **options):
    """quantize(x, nonfinite=flag, **options): (its outputs, whether it flagged NaN/Inf)."""
    flag = torch.zeros(1, device=x.device)
    outputs = quantize(x, nonfinite=flag, **options)
    assert flag.isnan().item() or torch.equal(flag, torch.zeros(1, device=x.device))  # NaN or left alone
    return outputs, flag.isnan().item()
