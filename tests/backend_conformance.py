"""The backend contract (nvfp4cli.kernels.Backend) checked on one registered backend: every
Protocol method present with the Protocol's parameters (names, kinds, defaults; extra parameters
only keyword-only with defaults), and its outputs bit-equal to the reference backend's on small
cases: every mode, scale rule, Hadamard, 2-D scaling, rowcol, rht and empty tensors.
tests/test_backend_conformance.py runs it for each backend (Triton under TRITON_INTERPRET=1)."""

from __future__ import annotations

import inspect

import torch

from nvfp4cli.format import SCALE_RULES, Mode, per_tensor_scale_from_amax
from nvfp4cli.kernels import HADAMARD_SIGNS, Backend, get_backend, reference

SEED, OFFSET = 2**40 + 3, 2**33 + 5


def _protocol_methods() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(Backend).items()
        if callable(member) and not name.startswith("_")
    }


def check_signatures(backend) -> None:
    assert isinstance(backend, Backend), f"{backend.__name__} lacks a Protocol method"
    for name, want in _protocol_methods().items():
        got = inspect.signature(getattr(backend, name))
        wanted = [p for p in want.parameters.values() if p.name != "self"]
        params = list(got.parameters.values())
        for w in wanted:
            assert w.name in got.parameters, f"{name}: no parameter {w.name!r}"
            g = got.parameters[w.name]
            assert g.kind == w.kind, f"{name}({w.name}): {g.kind} instead of {w.kind}"
            assert g.default == w.default, f"{name}({w.name}): default {g.default!r} instead of {w.default!r}"
        extra = [p for p in params if p.name not in {w.name for w in wanted}]
        for p in extra:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty, (
                f"{name}: extra parameter {p.name!r} must be keyword-only with a default"
            )


def _same(got, want, what: str) -> None:
    got, want = (got,) if isinstance(got, torch.Tensor) else tuple(got), (want,) if isinstance(want, torch.Tensor) else tuple(want)
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what}: {g.shape} {g.dtype} vs {w.shape} {w.dtype}"
        assert torch.equal(g.reshape(-1).view(torch.uint8), w.reshape(-1).view(torch.uint8)), what


def check_values(backend) -> None:
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = (torch.randn(32, 48, generator=gen) * 10 ** torch.empty(32, 48).uniform_(-2, 2, generator=gen)).to(dtype)
        for hadamard in (False, True):
            _same(backend.amax(x, hadamard=hadamard), reference.amax(x, hadamard=hadamard), f"amax {dtype} hadamard={hadamard}")
        for col_hadamard in (False, True):
            _same(backend.amax_rowcol(x, col_hadamard=col_hadamard), reference.amax_rowcol(x, col_hadamard=col_hadamard), "amax_rowcol")
        for signs in (HADAMARD_SIGNS, (1,) * 16):
            for inverse in (False, True):
                _same(backend.rht(x, signs=signs, inverse=inverse), reference.rht(x, signs=signs, inverse=inverse), "rht")
        pts = per_tensor_scale_from_amax(reference.amax(x))
        for mode in Mode:
            common = {"per_tensor_scale": pts, "mode": mode, "seed": SEED, "offset": OFFSET}
            for rule in SCALE_RULES:
                _same(backend.quantize(x, scale_rule=rule, **common), reference.quantize(x, scale_rule=rule, **common), f"quantize {mode} {rule}")
            for flags in ({"hadamard": True}, {"block_2d": True}, {"hadamard": True, "block_2d": True}):
                _same(backend.quantize(x, **flags, **common), reference.quantize(x, **flags, **common), f"quantize {mode} {flags}")
            for block_2d in (False, True):
                for col_hadamard in (False, True):
                    kwargs = dict(common, col_per_tensor_scale=pts * 3, block_2d=block_2d, col_hadamard=col_hadamard)
                    _same(backend.quantize_rowcol(x, **kwargs), reference.quantize_rowcol(x, **kwargs), f"rowcol {mode} {kwargs}")
    empty = torch.empty(0, 32)
    _same(backend.amax(empty), torch.zeros((), dtype=torch.float32), "amax of an empty tensor")
    common = {"per_tensor_scale": torch.tensor(1.0), "mode": Mode.RS, "seed": 1, "offset": 0}
    _same(backend.quantize(empty, **common), reference.quantize(empty, **common), "quantize of an empty tensor")


def check_backend(name: str) -> None:
    backend = get_backend(name)
    check_signatures(backend)
    check_values(backend)
