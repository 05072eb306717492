"""metrics.py against plain-Python float sums (math.fsum) and codes counted by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from nvfp4cli import metrics
from nvfp4cli.metrics import ErrorStats, code_agreement, scale_agreement, sqnr_db


def _python_metrics(ref: list[float], test: list[float]) -> dict[str, float]:
    """Every metric from exact-sum Python floats, independent of torch."""
    signal = math.fsum(a * a for a in ref)
    noise = math.fsum((a - b) ** 2 for a, b in zip(ref, test))
    test_energy = math.fsum(b * b for b in test)
    errors = [abs(a - b) for a, b in zip(ref, test)]
    return {
        "sqnr_db": 10 * math.log10(signal / noise),
        "max_abs_err": max(errors),
        "mean_abs_err": math.fsum(errors) / len(errors),
        "rel_fro_err": math.sqrt(noise / signal),
        "cosine": math.fsum(a * b for a, b in zip(ref, test)) / math.sqrt(signal * test_energy),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_metrics_match_exact_python_sums(dtype):
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(37, 48, generator=gen).to(dtype)
    test = (ref.float() + 0.05 * torch.randn(37, 48, generator=gen)).to(dtype)
    expected = _python_metrics(ref.flatten().tolist(), test.flatten().tolist())
    stats = ErrorStats.of(ref, test)
    for name, value in expected.items():
        assert getattr(stats, name) == pytest.approx(value, rel=1e-12), name
    assert stats.identical is False
    assert sqnr_db(ref, test) == pytest.approx(expected["sqnr_db"], rel=1e-12)


def test_sqnr_is_float64_where_float32_would_lose_it():
    # An error of 2^-40 relative to 1.0 vanishes in float32 arithmetic (1 - 2^-40 rounds to 1),
    # so only a float64 computation sees it: SQNR = 10 log10(n / (n 2^-80)) = 800 log10(2).
    ref = torch.ones(64, dtype=torch.float64)
    test = ref - 2.0**-40
    assert sqnr_db(ref, test) == pytest.approx(800 * math.log10(2), rel=1e-12)


def test_chunked_sums_equal_one_pass(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(1000, generator=gen)
    test = ref + torch.randn(1000, generator=gen) * 0.1
    whole = ErrorStats.of(ref, test)
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 7)
    chunked = ErrorStats.of(ref, test)
    assert chunked.count == whole.count == 1000
    assert chunked.max_abs_err == whole.max_abs_err
    for name in ("sqnr_db", "mean_abs_err", "rel_fro_err", "cosine"):
        assert getattr(chunked, name) == pytest.approx(getattr(whole, name), rel=1e-12), name


def test_merge_is_energy_weighted():
    # A loud tensor with small error and a quiet one with large relative error: the overall SQNR
    # is that of the concatenation, not the mean of the two dB values.
    loud_ref, loud_test = torch.full((16,), 100.0), torch.full((16,), 99.0)
    quiet_ref, quiet_test = torch.full((16,), 0.01), torch.zeros(16)
    merged = ErrorStats.of(loud_ref, loud_test).merge(ErrorStats.of(quiet_ref, quiet_test))
    expected = _python_metrics(
        torch.cat([loud_ref, quiet_ref]).tolist(), torch.cat([loud_test, quiet_test]).tolist()
    )
    assert merged.sqnr_db == pytest.approx(expected["sqnr_db"], rel=1e-12)
    assert merged.max_abs_err == pytest.approx(1.0)


def test_identical_and_degenerate_inputs():
    x = torch.randn(8, 16)
    same = ErrorStats.of(x, x.clone())
    assert same.identical and same.sqnr_db is None and same.rel_fro_err == 0.0
    assert same.cosine == pytest.approx(1.0, rel=1e-12)
    signed_zeros = ErrorStats.of(torch.zeros(4), -torch.zeros(4))
    assert signed_zeros.identical and signed_zeros.cosine is None
    from_zero = ErrorStats.of(torch.zeros(4), torch.ones(4))
    assert from_zero.sqnr_db == -math.inf and from_zero.rel_fro_err is None
    with pytest.raises(ValueError, match="shapes"):
        ErrorStats.of(torch.zeros(4), torch.zeros(5))


def test_non_finite_inputs_give_defined_or_nan_sqnr_never_an_error():
    x = torch.randn(4, 16)
    inf_in_test = x.clone()
    inf_in_test[1, 3] = math.inf
    assert ErrorStats.of(x, inf_in_test).sqnr_db == -math.inf  # the error energy is infinite
    assert math.isnan(ErrorStats.of(inf_in_test, x).sqnr_db)  # Inf / Inf: undefined
    nan_in_test = x.clone()
    nan_in_test[0, 0] = math.nan
    assert math.isnan(ErrorStats.of(x, nan_in_test).sqnr_db)


def test_code_agreement_counts_changed_nibbles():
    rng = random.Random(3)
    codes = [rng.randrange(16) for _ in range(256)]
    changed = set(rng.sample(range(256), 37))
    other = [(c + 1) % 16 if i in changed else c for i, c in enumerate(codes)]

    def pack(values):  # element 2i in the low nibble (docs/format.md §1), written out independently
        return torch.tensor(
            [values[i] | (values[i + 1] << 4) for i in range(0, len(values), 2)], dtype=torch.uint8
        ).reshape(8, 16)

    assert code_agreement(pack(codes), pack(other)) == pytest.approx(1 - 37 / 256, abs=0)
    assert code_agreement(pack(codes), pack(codes)) == 1.0


def test_scale_agreement_compares_bits():
    values = np.array([1.0, 2.0, 448.0, 0.015625, 3.5, 6.0], dtype=np.float32)
    a = torch.from_numpy(values).to(torch.float8_e4m3fn)
    b = a.clone()
    b[2] = torch.tensor(416.0).to(torch.float8_e4m3fn)
    assert scale_agreement(a, b) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="block scales"):
        scale_agreement(a, b[:3])
