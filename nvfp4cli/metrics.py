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
from .process import threads_for

CHUNK_ELEMENTS = 2**16  # two float64 buffers of 512 kB: the passes over a chunk stay in cache
DEVICE_CHUNK_ELEMENTS = 2**24  # on a GPU, chunks large enough to hide the launches


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
        """Stats of two tensors of the same shape, computed in float64 on their device.

        Chunk by chunk, widened into two float64 buffers made once and small enough to stay in
        the CPU's cache, and reduced by dot products, which make no temporaries; equal tensors
        (copied unchanged) need only their energy."""
        if ref.shape != test.shape:
            raise ValueError(f"cannot compare tensors of shapes {tuple(ref.shape)} and {tuple(test.shape)}")
        ref_flat, test_flat = ref.reshape(-1), test.reshape(-1).to(ref.device)
        count = ref_flat.numel()
        if count == 0:
            return cls()
        equal = ref_flat.dtype == test_flat.dtype and torch.equal(ref_flat, test_flat)  # NaN never equals: computed below
        size = min(CHUNK_ELEMENTS if ref.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS, count)
        a = torch.empty(size, dtype=torch.float64, device=ref.device)
        b = torch.empty_like(a)
        stats = cls()
        with threads_for(size, ref.device):  # cache-sized steps: a second thread's barrier costs more than it saves
            for start in range(0, count, size):
                n = min(size, count - start)
                x, y = a[:n].copy_(ref_flat[start : start + n]), b[:n]
                energy = float(torch.dot(x, x)) if equal else math.nan
                if math.isfinite(energy):  # Inf - Inf is NaN: such a chunk takes the full path
                    stats = stats.merge(cls(n, energy, energy, 0.0, energy, 0.0, 0.0))
                    continue
                y.copy_(test_flat[start : start + n])
                ref_energy, test_energy, dot = torch.dot(x, x), torch.dot(y, y), torch.dot(x, y)
                err = torch.sub(x, y, out=y).abs_()  # y is done with: |ref - test| in its place
                values = torch.stack([ref_energy, test_energy, torch.dot(err, err), dot, err.sum(), err.max()]).tolist()  # one device sync a chunk
                stats = stats.merge(cls(n, *values))
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
