"""Blocks whose scale choice under 4over6 or mse depends on how the 16 squared errors are added:
the documented tree (docs/format.md §4) picks another candidate than a left-to-right
sum, a tree over another element order (e.g. even elements first), or a fused multiply-add in the
first level would. Shared by the Triton backend tests (CPU interpreter and GPU), which check that
the kernel chooses as the reference does on exactly these blocks.

Such blocks are rare (about one in 20 000 of small-integer blocks), so they are searched for here
with the reference's own candidate scales and RN values; only the summation varies.
"""

from __future__ import annotations

import torch

from nvfp4cli.format import e2m1_values
from nvfp4cli.kernels import reference

EVEN_FIRST = [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]  # a 16-bit word layout's trap


def _candidates(blocks: torch.Tensor, pts: torch.Tensor, rule: str) -> list[torch.Tensor]:
    block_amax = blocks.abs().amax(dim=-1)
    max_to_six = reference._e4m3_scales(block_amax, 6.0, pts)
    if rule == "4over6":
        return [max_to_six, reference._e4m3_scales(block_amax, reference.FOUR_OVER_SIX_TARGET, pts)]
    return [reference._e4m3_step(max_to_six, steps) for steps in reference.MSE_SCALE_STEPS]


def _differences(blocks: torch.Tensor, pts: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """d_j = |x_j| / pts - q_j * s per element, float32, as the documented error."""
    scale = scales.to(torch.float32).unsqueeze(-1)
    magnitudes = blocks.abs()
    a = (magnitudes * ((1.0 / pts) / scale)).clamp(max=6.0)
    values = e2m1_values(blocks.device)[reference._rn_codes(a).long()]
    return magnitudes / pts - values * scale


def _left_to_right(squares: torch.Tensor) -> torch.Tensor:
    total = squares[:, 0]
    for j in range(1, squares.shape[1]):
        total = total + squares[:, j]
    return total


def _fused_first_level(d: torch.Tensor) -> torch.Tensor:
    # fma(d_2i, d_2i, d_2i+1^2): the product unrounded (exact in float64), one rounding at the end.
    pairs = (d[:, 0::2].double().square() + d[:, 1::2].square().double()).float()
    return reference._pairwise_sum(pairs)


def _choices(errors: list[torch.Tensor]) -> torch.Tensor:
    """Index of the first candidate with the strictly lowest error, per block."""
    best, best_error = torch.zeros_like(errors[0], dtype=torch.long), errors[0]
    for index, error in enumerate(errors[1:], start=1):
        lower = error < best_error
        best, best_error = torch.where(lower, index, best), torch.where(lower, error, best_error)
    return best


def order_sensitive_blocks(rule: str, blocks: int = 200_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [M, 16] float32 of small integers, exact in bf16 and fp16, per-tensor scale) where the
    documented sum chooses differently from at least one other summation."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-48, 49, (blocks, 16), generator=gen).float()
    x[blocks // 2 :] = torch.randint(-12, 13, (blocks - blocks // 2, 16), generator=gen).float()
    pts = torch.tensor(48 / 2688, dtype=torch.float32)
    differences = [_differences(x, pts, scales) for scales in _candidates(x, pts, rule)]
    documented = _choices([reference._pairwise_sum(d.square()) for d in differences])
    sensitive = torch.zeros(blocks, dtype=torch.bool)
    for summed in (
        lambda d: _left_to_right(d.square()),
        lambda d: reference._pairwise_sum(d[:, EVEN_FIRST].square()),
        _fused_first_level,
    ):
        sensitive |= _choices([summed(d) for d in differences]) != documented
    return x[sensitive], pts
