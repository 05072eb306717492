"""Error metrics between a reference tensor and a test tensor, in float64, shared by bench and diff.

ErrorStats accumulates the sums every metric needs, chunk by chunk, so a large tensor never
needs a float64 copy of itself, and stats of several tensors merge into energy-weighted totals:

    stats = ErrorStats.of(reference, test)
    stats.sqnr_db  # 10 * log10(sum ref^2 / sum (ref - test)^2); None when the tensors are equal
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .format import unpack_codes

CHUNK_ELEMENTS = 2**22  # float64 temporaries of one chunk stay near 100 MB


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


@dataclass(frozen=True)
class ErrorStats:
    """Sums over the elements of (ref, test) pairs; every metric derives from them."""

    count: int = 0
    ref_energy: float = 0.0  # sum ref^2
    test_energy: float = 0.0  # sum test^2
    noise_energy: float = 0.0  # sum (ref - test)^2
    dot: float = 0.0  # sum ref * test
    abs_err_sum: float = 0.0
    max_abs_err: float = 0.0

    @classmethod
    def of(cls, ref: torch.Tensor, test: torch.Tensor) -> ErrorStats:
        """Stats of two tensors of the same shape, computed in float64."""
        if ref.shape != test.shape:
            raise ValueError(f"cannot compare tensors of shapes {tuple(ref.shape)} and {tuple(test.shape)}")
        ref_flat, test_flat = ref.reshape(-1), test.reshape(-1)
        stats = cls()
        for start in range(0, ref_flat.numel(), CHUNK_ELEMENTS):
            a = ref_flat[start : start + CHUNK_ELEMENTS].to(torch.float64)
            b = test_flat[start : start + CHUNK_ELEMENTS].to(a.device, torch.float64)
            err = a - b
            abs_err = err.abs()
            stats = stats.merge(
                cls(
                    count=a.numel(),
                    ref_energy=float(a.square().sum()),
                    test_energy=float(b.square().sum()),
                    noise_energy=float(err.square().sum()),
                    dot=float((a * b).sum()),
                    abs_err_sum=float(abs_err.sum()),
                    max_abs_err=float(abs_err.max()),
                )
            )
        return stats

    def merge(self, other: ErrorStats) -> ErrorStats:
        """Stats of the union of both element sets (energy-weighted when turned into SQNR)."""
        return ErrorStats(
            count=self.count + other.count,
            ref_energy=self.ref_energy + other.ref_energy,
            test_energy=self.test_energy + other.test_energy,
            noise_energy=self.noise_energy + other.noise_energy,
            dot=self.dot + other.dot,
            abs_err_sum=self.abs_err_sum + other.abs_err_sum,
            max_abs_err=max(self.max_abs_err, other.max_abs_err),
        )

    @property
    def identical(self) -> bool:
        """Every test element equals its reference element (+0.0 and -0.0 count as equal)."""
        return self.noise_energy == 0.0

    @property
    def sqnr_db(self) -> float | None:
        """10 * log10(sum ref^2 / sum (ref - test)^2); None when identical, -inf for a zero ref or
        an infinite error (Inf in test only), NaN where NaN, or Inf in ref, leaves it undefined."""
        if self.identical:
            return None
        ratio = self.ref_energy / self.noise_energy
        return -math.inf if ratio == 0.0 else 10.0 * math.log10(ratio)

    @property
    def mean_abs_err(self) -> float | None:
        return _ratio(self.abs_err_sum, self.count)

    @property
    def rel_fro_err(self) -> float | None:
        """||ref - test||_F / ||ref||_F; None for a zero reference."""
        ratio = _ratio(self.noise_energy, self.ref_energy)
        return None if ratio is None else math.sqrt(ratio)

    @property
    def cosine(self) -> float | None:
        """Cosine similarity of the flattened tensors; None when either is all zeros."""
        return _ratio(self.dot, math.sqrt(self.ref_energy * self.test_energy))


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float | None:
    """SQNR of test against ref in dB, float64; None when they are equal."""
    return ErrorStats.of(ref, test).sqnr_db


def _fraction_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> float | None:
    if a.shape != b.shape:
        raise ValueError(f"cannot compare {what} of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    equal = a == b.to(a.device)
    return _ratio(int(equal.sum()), equal.numel())


def code_agreement(packed_a: torch.Tensor, packed_b: torch.Tensor) -> float | None:
    """Fraction of equal 4-bit codes in two packed NVFP4 tensors (None if empty)."""
    return _fraction_equal(unpack_codes(packed_a), unpack_codes(packed_b), "4-bit codes")


def scale_agreement(scales_a: torch.Tensor, scales_b: torch.Tensor) -> float | None:
    """Fraction of bit-equal E4M3 block scales in two scale tensors (None if empty)."""
    return _fraction_equal(scales_a.view(torch.uint8), scales_b.view(torch.uint8), "block scales")
