"""Checks of the Triton backend under TRITON_INTERPRET=1 (CPU, small shapes): bit-identical to the
reference backend and to the independent scalar oracles, for RN and RS, every input dtype, every
block scale rule (max, 4over6, mse), adversarial values, 64-bit seeds and offsets, tensor seeds, the
swizzled scale layout, and the torch.library ops under torch.compile(fullgraph=True).

Triton picks the interpreter when it is first imported, and other test modules import it
compiled, so tests/test_triton_backend.py runs this file in a fresh Python with
TRITON_INTERPRET=1. Alone: TRITON_INTERPRET=1 python -m pytest tests/triton_interpreter_checks.py
"""

import os

import numpy as np
import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 before triton is imported", allow_module_level=True)

import nvfp4cli  # noqa: E402
import spec_oracle  # noqa: E402
from nvfp4cli.format import Mode, per_tensor_scale_from_amax, swizzle_scales, unpack_codes  # noqa: E402
from nvfp4cli.kernels import reference, triton_backend  # noqa: E402
from scale_rule_cases import order_sensitive_blocks  # noqa: E402
from triton_cases import adversarial_cases, flagged, own_threshold_blocks  # noqa: E402

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
MODES = [Mode.RN, Mode.RS]
RULES = ["4over6", "mse"]  # the searching rules; max is every other test's default
SEED, OFFSET = 2**40 + 3, 2**33 + 5  # both halves of key and counter non-zero


def assert_backends_agree(x, pts, mode, seed=SEED, offset=OFFSET, scale_rule="max"):
    got_packed, got_scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=seed, offset=offset, scale_rule=scale_rule)
    want_packed, want_scales = reference.quantize(x, per_tensor_scale=pts, mode=mode, seed=seed, offset=offset, scale_rule=scale_rule)
    assert got_packed.shape == want_packed.shape and got_scales.shape == want_scales.shape
    assert got_scales.dtype == torch.float8_e4m3fn
    assert torch.equal(got_scales.view(torch.uint8), want_scales.view(torch.uint8))
    assert torch.equal(got_packed, want_packed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 16), (3, 48), (37, 80), (2, 3, 64), (300, 32)], ids=str)
def test_random_tensors_match_reference(shape, dtype, mode):
    gen = torch.Generator().manual_seed(shape[0] * 1000 + shape[-1] + DTYPES.index(dtype))
    x = (torch.randn(shape, generator=gen) * 10 ** torch.empty(shape).uniform_(-3, 3, generator=gen)).to(dtype)
    assert torch.equal(triton_backend.amax(x), reference.amax(x))
    assert_backends_agree(x, per_tensor_scale_from_amax(reference.amax(x)), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adversarial_values_match_reference(dtype, mode):
    for name, x, pts in adversarial_cases(dtype):
        amax = triton_backend.amax(x)
        assert torch.equal(amax, reference.amax(x)), name
        assert_backends_agree(x, per_tensor_scale_from_amax(amax) if pts is None else pts.float(), mode)


@pytest.mark.parametrize("rule", ["max"] + RULES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_several_tiles_a_program_match_reference(monkeypatch, dtype, mode, rule):
    # Large inputs run several tiles a program, each loading the next tile ahead; here with tiny
    # tiles, and a tile count that does not divide evenly, so the last program runs past the end.
    monkeypatch.setitem(triton_backend.QUANTIZE_CONFIGS, (mode, False), (16, 1, 3))
    monkeypatch.setattr(triton_backend, "MIN_PROGRAMS", 1)
    monkeypatch.setattr(triton_backend, "AMAX_WORDS", 32)
    monkeypatch.setattr(triton_backend, "AMAX_TILES", 3)
    x = torch.randn(7, 16 * 17, generator=torch.Generator().manual_seed(5)).to(dtype)  # 119 blocks
    assert torch.equal(triton_backend.amax(x), reference.amax(x))
    assert_backends_agree(x, per_tensor_scale_from_amax(reference.amax(x)), mode, scale_rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 16), (37, 80), (2, 3, 64)], ids=str)
def test_rules_on_random_tensors_match_reference(shape, dtype, mode, rule):
    gen = torch.Generator().manual_seed(shape[0] * 1000 + shape[-1] + 10 * DTYPES.index(dtype) + RULES.index(rule))
    x = (torch.randn(shape, generator=gen) * 10 ** torch.empty(shape).uniform_(-3, 3, generator=gen)).to(dtype)
    assert_backends_agree(x, per_tensor_scale_from_amax(reference.amax(x)), mode, scale_rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_on_adversarial_values_match_reference(dtype, mode, rule):
    # Ties between candidates (zeros, exact grids), scales clamped at 2^-6 or 448 (candidates
    # that clamp to the same byte), subnormals and the dtype's extremes.
    for name, x, pts in adversarial_cases(dtype, seed=2):
        pts = per_tensor_scale_from_amax(reference.amax(x)) if pts is None else pts.float()
        assert_backends_agree(x, pts, mode, scale_rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_add_errors_in_the_documented_order(dtype, rule):
    # Blocks whose choice another summation order (or a fused first level) would change.
    x, pts = order_sensitive_blocks(rule)
    assert x.shape[0] >= 5
    for mode in MODES:
        assert_backends_agree(x.to(dtype), pts, mode, scale_rule=rule)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rules_match_the_scalar_oracle(dtype, rule):
    # test_scale_rules.oracle: plain numpy float32 scalars, one block at a time, no shared code.
    from test_scale_rules import mixed_input, oracle  # here: that module imports the CLI layer
    x = (mixed_input(3) * 40).to(dtype)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    packed, scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, scale_rule=rule)
    codes, scale_bytes, positions = oracle(x.float().numpy(), rule, pts=np.float32(pts))
    assert np.array_equal(scales.view(torch.uint8).numpy(), scale_bytes)
    assert np.array_equal(unpack_codes(packed).numpy(), codes)
    assert (positions == 0).any() and (positions != 0).any()  # the search really chooses


@pytest.mark.parametrize("rule", RULES)
def test_rule_scales_ignore_the_random_bits(rule):
    x = torch.randn(16, 128, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    _, rn_scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, scale_rule=rule)
    _, max_scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)
    assert not torch.equal(rn_scales.view(torch.uint8), max_scales.view(torch.uint8))
    for seed, offset in [(1, 0), (SEED, OFFSET)]:
        _, rs_scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=seed, offset=offset, scale_rule=rule)
        assert torch.equal(rs_scales.view(torch.uint8), rn_scales.view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rs_on_thresholds_matches_the_scalar_oracle(dtype):
    # spec_oracle shares no code with nvfp4cli; its Philox is plain Python integers
    # (tests/test_rng.py checks it against tl.randint4x).
    (_, x, _), = [case for case in adversarial_cases(dtype) if case[0] == "rs-thresholds"]
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    packed, scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET)
    codes, scale_bytes, _ = spec_oracle.quantize(x.float().numpy(), "rs", SEED, OFFSET, float(pts))
    assert np.array_equal(unpack_codes(packed).numpy(), codes)
    assert np.array_equal(scales.view(torch.uint8).numpy(), scale_bytes)


def test_rs_on_each_elements_own_threshold_matches_the_scalar_oracle():
    x = own_threshold_blocks(SEED, OFFSET, rows=6, blocks_a_row=10)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    assert float(pts) == 1.0
    packed, scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET)
    codes, scale_bytes, _ = spec_oracle.quantize(x.numpy(), "rs", SEED, OFFSET, 1.0)
    assert np.array_equal(unpack_codes(packed).numpy(), codes)
    assert np.array_equal(scales.view(torch.uint8).numpy(), scale_bytes)
    assert_backends_agree(x, pts, Mode.RS)


@pytest.mark.parametrize(
    "seed,offset", [(0, 0), (1, 1), (2**32 - 1, 2**32 - 3), (2**63 - 1, 2**63 - 1000), (7, 2**62 + 11)]
)
def test_seed_and_offset_edges_match_reference(seed, offset):
    x = torch.randn(12, 64, generator=torch.Generator().manual_seed(seed % 1000))
    assert_backends_agree(x, per_tensor_scale_from_amax(x.abs().max()), Mode.RS, seed, offset)


def test_seed_and_offset_tensors_equal_ints():
    x = torch.randn(9, 96, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    want = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET)
    got = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=torch.tensor(SEED), offset=torch.tensor(OFFSET))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1].view(torch.uint8), want[1].view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_amax_propagates_nan_and_inf(dtype):
    x = torch.randn(4, 32).to(dtype)
    x[2, 5] = float("inf")
    assert triton_backend.amax(x) == float("inf")
    x[1, 7] = float("nan")
    assert torch.isnan(triton_backend.amax(x))


def test_misaligned_input_view_is_copied_and_matches():
    # A view starting at an odd element cannot be read as int32 words in place.
    base = torch.randn(1, 16 * 9 + 1).to(torch.bfloat16)
    x = base[0, 1:].reshape(9, 16)
    assert x.storage_offset() == 1
    assert_backends_agree(x, per_tensor_scale_from_amax(reference.amax(x)), Mode.RN)


@pytest.mark.parametrize("rule", ["max", "mse"])
@pytest.mark.parametrize("shape", [(1, 16), (130, 48), (128, 64), (5, 256)], ids=str)
def test_swizzled_scales_equal_the_format_reference(shape, rule):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0]))
    pts = per_tensor_scale_from_amax(x.abs().max())
    _, row_major = reference.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, scale_rule=rule)
    _, swizzled = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, swizzle=True, scale_rule=rule)
    assert torch.equal(swizzled.view(torch.uint8), swizzle_scales(row_major).view(torch.uint8))


@pytest.mark.parametrize("rule", ["max"] + RULES)
@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_public_api_backends_agree(mode, rule):
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    got = nvfp4cli.quantize(x, mode=mode, seed=11, offset=5, backend="triton", scale_rule=rule)
    want = nvfp4cli.quantize(x, mode=mode, seed=11, offset=5, backend="reference", scale_rule=rule)
    assert torch.equal(got.packed, want.packed) and torch.equal(got.per_tensor_scale, want.per_tensor_scale)
    assert torch.equal(got.scales.view(torch.uint8), want.scales.view(torch.uint8))


def test_ops_pass_torch_library_opcheck():
    x = torch.randn(4, 64).to(torch.bfloat16)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    torch.library.opcheck(torch.ops.nvfp4.amax.default, (x,))
    torch.library.opcheck(torch.ops.nvfp4.quantize.default, (x, pts, True, torch.tensor(5), torch.tensor(9), False))
    torch.library.opcheck(torch.ops.nvfp4.quantize.default, (x, pts, False, None, None, True))
    torch.library.opcheck(torch.ops.nvfp4.quantize.default, (x, pts, True, torch.tensor(5), None, False, "mse"))


@pytest.mark.parametrize("rule", RULES)
def test_quantize_op_takes_the_scale_rule(rule):
    x = torch.randn(6, 96, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    got = torch.ops.nvfp4.quantize(x, pts, True, torch.tensor(SEED), torch.tensor(OFFSET), False, rule)
    want = reference.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET, scale_rule=rule)
    max_rule = reference.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=SEED, offset=OFFSET)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1].view(torch.uint8), want[1].view(torch.uint8))
    assert not torch.equal(got[1].view(torch.uint8), max_rule[1].view(torch.uint8))  # the rule took effect


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: torch.ops.nvfp4.amax(torch.zeros(4, 20)), r"multiple of 16, got torch.float32 of shape \(4, 20\)"),
        (lambda: torch.ops.nvfp4.amax(torch.zeros(4, 16, dtype=torch.float64)), r"got torch.float64"),
        (lambda: torch.ops.nvfp4.quantize(torch.zeros(2, 16), torch.tensor(1.0), True, None, None), r"needs a seed tensor"),
        (lambda: torch.ops.nvfp4.quantize(torch.zeros(2, 16), torch.tensor(1.0), False, None, None, False, "min"), r"scale_rule must be one of max, 4over6, mse, got 'min'"),
    ],
)
def test_ops_reject_bad_input_with_a_clear_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_empty_leading_dims_give_empty_outputs():
    packed, scales = triton_backend.quantize(torch.empty(0, 3, 32), per_tensor_scale=torch.tensor(1.0), mode=Mode.RS, seed=1, offset=0)
    assert packed.shape == (0, 3, 16) and scales.shape == (0, 3, 2)
    assert triton_backend.amax(torch.empty(0, 16)) == 0


def test_ops_trace_under_torch_compile_fullgraph():
    def amax_then_quantize(x, seed, offset):
        pts = torch.clamp(torch.ops.nvfp4.amax(x) / 2688, min=2.0**-120)
        return torch.ops.nvfp4.quantize(x, pts, True, seed, offset)

    x = torch.randn(8, 128).to(torch.bfloat16)
    seed, offset = torch.tensor(SEED), torch.tensor(OFFSET)
    compiled = torch.compile(amax_then_quantize, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, seed, offset), amax_then_quantize(x, seed, offset)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1].view(torch.uint8), want[1].view(torch.uint8))
    want_reference = reference.quantize(x, per_tensor_scale=per_tensor_scale_from_amax(reference.amax(x)), mode=Mode.RS, seed=SEED, offset=OFFSET)
    assert torch.equal(got[0], want_reference[0])


# ---------------------------------------------------------------- training primitives (docs/format.md §9)

TRAINING_SHAPES = [(16, 16), (48, 80), (32, 272)]  # odd block and tile counts both ways
# 2 block columns a 2-D tile; RS runs two tiles a program (an odd count: the last one past the end)
SMALL_TILES = {(Mode.RN, True): (32, 1, 1), (Mode.RS, True): (32, 1, 2)}
# rowcol's, (blocks, warps, tiles, patch): column patches 4 and 8 wide, fewer of them than threads
SMALL_ROWCOL_TILES = {Mode.RN: (32, 1, 1, 4), Mode.RS: (32, 1, 2, 8)}
SMALL_TILE_SHAPE = (48, 80)  # 3 x 3 of those tiles, the last one half outside


def use_small_tiles(monkeypatch):
    """Tiny 2-D tiles (and RHT-amax tiles), several a program: many tiles, partial ones at the edges."""
    for key, config in SMALL_TILES.items():
        monkeypatch.setitem(triton_backend.QUANTIZE_CONFIGS, key, config)
    for mode, config in SMALL_ROWCOL_TILES.items():
        monkeypatch.setitem(triton_backend.ROWCOL_CONFIGS, mode, config)
    monkeypatch.setattr(triton_backend, "MIN_PROGRAMS", 1)
    monkeypatch.setattr(triton_backend, "AMAX_BLOCKS_CONFIG", (32, 1))
    monkeypatch.setattr(triton_backend, "AMAX_ROWCOL_CONFIG", SMALL_ROWCOL_TILES[Mode.RS])


def training_input(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 10 ** torch.empty(shape).uniform_(-3, 3, generator=gen)
    return x.to(dtype)


def assert_same_bytes(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert torch.equal(g.reshape(-1).view(torch.uint8), w.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 16), (3, 5, 48), (40, 80)], ids=str)
def test_rht_matches_reference(shape, dtype):
    x = training_input(shape, dtype, seed=shape[-1])
    for signs in (nvfp4cli.kernels.HADAMARD_SIGNS, tuple(-s for s in nvfp4cli.kernels.HADAMARD_SIGNS)):
        for inverse in (False, True):
            assert torch.equal(triton_backend.rht(x, signs=signs, inverse=inverse), reference.rht(x, signs=signs, inverse=inverse))
    assert torch.equal(triton_backend.amax(x, hadamard=True), reference.amax(x, hadamard=True))


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("variant", ["hadamard", "block_2d", "both"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hadamard_and_2d_quantize_match_reference(monkeypatch, dtype, mode, variant, tiles):
    if tiles == "small":
        use_small_tiles(monkeypatch)
        monkeypatch.setitem(triton_backend.QUANTIZE_CONFIGS, (mode, False), (16, 1, 3))
    flags = {"hadamard": variant != "block_2d", "block_2d": variant != "hadamard"}
    for shape in TRAINING_SHAPES if tiles == "default" else [SMALL_TILE_SHAPE]:
        x = training_input(shape, dtype, seed=shape[1] + DTYPES.index(dtype))
        pts = per_tensor_scale_from_amax(reference.amax(x, hadamard=flags["hadamard"]))
        got = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, **flags)
        want = reference.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, **flags)
        assert_same_bytes(got, want)


@pytest.mark.parametrize("rule", RULES)
def test_hadamard_with_a_scale_rule_matches_reference(rule):
    x = training_input((6, 96), torch.bfloat16, seed=3)
    pts = per_tensor_scale_from_amax(reference.amax(x, hadamard=True))
    for mode in MODES:
        got = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, scale_rule=rule, hadamard=True)
        want = reference.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, scale_rule=rule, hadamard=True)
        assert_same_bytes(got, want)


def assert_rowcol_matches_reference(x, mode, block_2d, col_hadamard):
    """amax_rowcol and quantize_rowcol (per-tensor scales from those amaxes) equal the reference's, byte for byte."""
    amaxes = triton_backend.amax_rowcol(x, col_hadamard=col_hadamard)
    assert_same_bytes(amaxes, reference.amax_rowcol(x, col_hadamard=col_hadamard))
    pts, col_pts = (per_tensor_scale_from_amax(a) for a in amaxes)
    kwargs = dict(per_tensor_scale=pts, col_per_tensor_scale=col_pts, mode=mode, seed=SEED, offset=OFFSET, block_2d=block_2d, col_hadamard=col_hadamard)
    assert_same_bytes(triton_backend.quantize_rowcol(x, **kwargs), reference.quantize_rowcol(x, **kwargs))


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("flags", ["plain", "block_2d", "col_hadamard", "both"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rowcol_matches_reference(monkeypatch, dtype, mode, flags, tiles):
    if tiles == "small":
        use_small_tiles(monkeypatch)
    block_2d, col_hadamard = flags in ("block_2d", "both"), flags in ("col_hadamard", "both")
    for shape in TRAINING_SHAPES if tiles == "default" else [SMALL_TILE_SHAPE]:
        assert_rowcol_matches_reference(training_input(shape, dtype, seed=shape[0] + DTYPES.index(dtype)), mode, block_2d, col_hadamard)


# (blocks, warps, tiles, patch): a program's tiles past x's bottom (odd row-group counts), patches
# 2, 4 and 8 wide that fill the threads exactly, more patches than threads, one-block-column tiles
ROWCOL_TILINGS = [(32, 1, 4, 4), (32, 1, 2, 2), (32, 1, 8, 8), (64, 2, 8, 8), (16, 1, 16, 4)]


@pytest.mark.parametrize("tiling", ROWCOL_TILINGS, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rowcol_tilings_match_reference(monkeypatch, dtype, mode, tiling):
    monkeypatch.setitem(triton_backend.ROWCOL_CONFIGS, Mode(mode), tiling)
    monkeypatch.setattr(triton_backend, "AMAX_ROWCOL_CONFIG", tiling)
    monkeypatch.setattr(triton_backend, "MIN_PROGRAMS", 1)
    for shape, block_2d, col_hadamard in (((80, 48), True, False), ((48, 272), False, True), ((112, 32), True, True)):
        assert_rowcol_matches_reference(training_input(shape, dtype, seed=shape[0] + DTYPES.index(dtype)), mode, block_2d, col_hadamard)


QUANTIZE_CHECKS = [dict(mode=Mode.RN), dict(mode=Mode.RS, block_2d=True), dict(mode=Mode.RN, hadamard=True)]


# (index, value): x's first element; one in a program's second tile; x's last element
@pytest.mark.parametrize("where,bad", [((0, 0), float("nan")), ((20, 5), float("-inf")), ((63, 255), float("nan"))], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_flags_the_nan_or_inf_it_quantizes(monkeypatch, dtype, where, bad):
    # The finiteness check of a call given its per-tensor scale, from the quantize pass itself:
    # 64x256 is 4 tiles of 256 blocks, two a program here.
    monkeypatch.setattr(triton_backend, "MIN_PROGRAMS", 1)
    x = training_input((64, 256), dtype, seed=DTYPES.index(dtype))
    pts = per_tensor_scale_from_amax(x.float().abs().amax())
    for options in QUANTIZE_CHECKS:
        options = dict(per_tensor_scale=pts, seed=SEED, offset=OFFSET, **options)
        outputs, was_flagged = flagged(triton_backend.quantize, x, **options)
        assert not was_flagged
        assert_same_bytes(outputs, triton_backend.quantize(x, **options))  # the check changes no byte
    x[where] = bad
    for options in QUANTIZE_CHECKS:
        options = dict(per_tensor_scale=pts, seed=SEED, offset=OFFSET, **options)
        assert flagged(triton_backend.quantize, x, **options)[1], options
        assert flagged(reference.quantize, x, **options)[1], options


def test_quantize_flags_a_hadamard_transform_that_overflows():
    x = torch.full((2, 32), 3e38)  # finite, but the transform of a block sums 16 of them
    pts = torch.tensor(1.0)
    assert not flagged(triton_backend.quantize, x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0)[1]
    for backend in (triton_backend, reference):
        assert flagged(backend.quantize, x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, hadamard=True)[1]


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("-inf"), float("nan")])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, under the interpreter, on the bad scale's arithmetic
def test_quantize_and_rowcol_flag_a_scale_that_is_not_positive_and_finite(scale):
    # The caller's scale is checked inside the quantize pass too, so that the call reads nothing
    # before its launch: a finite x with a bad scale (either of rowcol's two) is flagged, by both backends.
    x = training_input((32, 64), torch.bfloat16, seed=1)
    good, bad = per_tensor_scale_from_amax(x.float().abs().amax()), torch.tensor(scale)
    options = dict(mode=Mode.RS, seed=SEED, offset=OFFSET)
    for backend in (triton_backend, reference):
        assert not flagged(backend.quantize, x, per_tensor_scale=good, **options)[1]
        assert flagged(backend.quantize, x, per_tensor_scale=bad, **options)[1]
        assert not flagged(backend.quantize_rowcol, x, per_tensor_scale=good, col_per_tensor_scale=good, **options)[1]
        assert flagged(backend.quantize_rowcol, x, per_tensor_scale=bad, col_per_tensor_scale=good, **options)[1]
        assert flagged(backend.quantize_rowcol, x, per_tensor_scale=good, col_per_tensor_scale=bad, **options)[1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rowcol_flags_nan_or_inf_and_columns_that_overflow(monkeypatch, dtype, mode):
    use_small_tiles(monkeypatch)  # several tiles a program, partial ones at the edges
    x = training_input(SMALL_TILE_SHAPE, dtype, seed=3)
    pts = per_tensor_scale_from_amax(x.float().abs().amax())
    options = dict(per_tensor_scale=pts, col_per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, block_2d=True, col_hadamard=True)
    outputs, was_flagged = flagged(triton_backend.quantize_rowcol, x, **options)
    assert not was_flagged
    assert_same_bytes(outputs, triton_backend.quantize_rowcol(x, **options))
    x[47, 79] = float("inf")  # the last element, in the last (half-outside) tile
    assert flagged(triton_backend.quantize_rowcol, x, **options)[1]
    assert flagged(reference.quantize_rowcol, x, **options)[1]
    if dtype == torch.float32:  # finite rows whose columns' transform overflows
        huge = torch.full((32, 32), 3e38)
        assert not flagged(triton_backend.quantize_rowcol, huge, **{**options, "col_hadamard": False})[1]
        for backend in (triton_backend, reference):
            assert flagged(backend.quantize_rowcol, huge, **options)[1]


@pytest.mark.parametrize("mode", ["rn", "rs"])
def test_training_api_backends_agree_and_match_the_scalar_oracle(mode):
    x = training_input((32, 48), torch.bfloat16, seed=9)
    got = nvfp4cli.quantize_rowcol(x, mode, 5, 7, block_2d=True, col_hadamard=True, backend="triton")
    want = nvfp4cli.quantize_rowcol(x, mode, 5, 7, block_2d=True, col_hadamard=True, backend="reference")
    oracle = spec_oracle.quantize_rowcol(x.float().numpy(), mode, 5, 7, True, True)
    for g, w, o in zip(got, want, oracle):
        assert_same_bytes((g.packed, g.scales, g.per_tensor_scale), (w.packed, w.scales, w.per_tensor_scale))
        assert np.array_equal(unpack_codes(g.packed).numpy(), o[0]) and np.array_equal(g.scales.view(torch.uint8).numpy(), o[1])
    assert torch.equal(nvfp4cli.rht(x, backend="triton"), torch.from_numpy(spec_oracle.rht(x.float().numpy())))


@pytest.mark.parametrize("shape", [(0, 64), (0, 3, 32)], ids=str)
def test_empty_tensors_through_the_api(shape):
    x = torch.empty(shape)
    for backend in ("triton", "reference"):
        for kwargs in ({}, {"hadamard": True}, {"mode": "rs", "seed": 1}):
            q = nvfp4cli.quantize(x, backend=backend, **kwargs)
            assert q.packed.shape == (*shape[:-1], shape[-1] // 2) and q.scales.shape == (*shape[:-1], shape[-1] // 16)
            assert float(q.per_tensor_scale) == 2.0**-120
            assert nvfp4cli.dequantize(q).shape == shape
    rows, cols = nvfp4cli.quantize_rowcol(torch.empty(0, 32), backend="triton", col_hadamard=True)
    assert rows.packed.shape == (0, 16) and cols.packed.shape == (32, 0) and cols.scales.shape == (32, 0)


def test_training_ops_pass_opcheck_and_trace_under_torch_compile():
    x = training_input((32, 64), torch.bfloat16, seed=11)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    seed, offset = torch.tensor(SEED), torch.tensor(OFFSET)
    torch.library.opcheck(torch.ops.nvfp4.rht.default, (x, True, [1] * 16))
    torch.library.opcheck(torch.ops.nvfp4.amax.default, (x, True))
    torch.library.opcheck(torch.ops.nvfp4.amax_rowcol.default, (x, True))
    torch.library.opcheck(torch.ops.nvfp4.quantize.default, (x, pts, True, seed, offset, False, "max", True, True))
    torch.library.opcheck(torch.ops.nvfp4.quantize_rowcol.default, (x, pts, pts, True, seed, offset, True, True))

    def step(x, seed, offset):
        row_amax, col_amax = torch.ops.nvfp4.amax_rowcol(x, True)
        pts = torch.clamp(row_amax / 2688, min=2.0**-120)
        col_pts = torch.clamp(col_amax / 2688, min=2.0**-120)
        return torch.ops.nvfp4.quantize_rowcol(x, pts, col_pts, True, seed, offset, True, True)

    got = torch.compile(step, fullgraph=True, backend="aot_eager")(x, seed, offset)
    want = nvfp4cli.quantize_rowcol(x, "rs", SEED, OFFSET, block_2d=True, col_hadamard=True, backend="reference")
    assert_same_bytes(got, (want[0].packed, want[0].scales, want[1].packed, want[1].scales))


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: torch.ops.nvfp4.quantize_rowcol(torch.zeros(8, 32), torch.tensor(1.0), torch.tensor(1.0), False, None, None), r"2-D tensor whose dims are multiples of 16, got shape \(8, 32\)"),
        (lambda: torch.ops.nvfp4.quantize_rowcol(torch.zeros(16, 32), torch.tensor(1.0), torch.tensor(1.0), True, None, None), r"needs a seed tensor"),
        (lambda: torch.ops.nvfp4.rht(torch.zeros(2, 16), False, [1] * 8), r"signs must be 16 values"),
        (lambda: torch.ops.nvfp4.quantize(torch.zeros(2, 3, 16), torch.tensor(1.0), False, None, None, False, "max", False, True), r"got shape \(2, 3, 16\)"),
    ],
)
def test_training_ops_reject_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def assert_amax_quantize_agrees(x, mode, hadamard=False, block_2d=False, scale_rule="max"):
    """The one-launch amax + scale + quantize equals the reference's amax, scale and quantize."""
    options = dict(mode=mode, seed=SEED, offset=OFFSET, scale_rule=scale_rule, hadamard=hadamard, block_2d=block_2d)
    packed, scales, pts, amax = triton_backend.quantize_amax(x, **options)
    want_amax = reference.amax(x, hadamard=hadamard)
    assert torch.equal(amax, want_amax) or (amax.isnan() and want_amax.isnan())
    want_pts = per_tensor_scale_from_amax(want_amax)
    assert torch.equal(pts, want_pts) or (pts.isnan() and want_pts.isnan())
    if want_amax.isfinite():
        want_packed, want_scales = reference.quantize(x, per_tensor_scale=want_pts, **options)
        assert torch.equal(scales.view(torch.uint8), want_scales.view(torch.uint8))
        assert torch.equal(packed, want_packed)


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "tickets"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 16), (37, 80), (2, 3, 64), (256, 256)], ids=str)
def test_one_launch_amax_quantize_matches_reference(monkeypatch, shape, dtype, mode, resident):
    # (256x256 runs resident as one program of 4 tiles: the interpreter counts as one SM.)
    monkeypatch.setattr(triton_backend, "RESIDENT_LAUNCH", resident)
    gen = torch.Generator().manual_seed(shape[0] + shape[-1] + DTYPES.index(dtype))
    x = (torch.randn(shape, generator=gen) * 10 ** torch.empty(shape).uniform_(-3, 3, generator=gen)).to(dtype)
    assert_amax_quantize_agrees(x, mode)


RESIDENT_OPTIONS = [{}, dict(hadamard=True), dict(block_2d=True), dict(hadamard=True, block_2d=True, scale_rule="mse")]


def assert_resident_and_ticketed_agree(monkeypatch, x, mode, options, resident, tiles):
    """The one-launch amax+quantize of x, resident in `tiles` tiles a program or (resident False)
    ticketed, equals the reference, before and after a NaN; only ticketed launches take tickets."""
    monkeypatch.setattr(triton_backend, "RESIDENT_LAUNCH", resident)
    counters = triton_backend._LaunchCounters(torch.device("cpu"))
    monkeypatch.setattr(triton_backend._amax_quantize_state, "get", lambda device: counters)
    tiling = triton_backend._resident_tiling(x, options.get("block_2d", False))
    assert (tiling is not None) == resident and (not resident or tiling[2] == tiles)
    x[9, -56] = -float(torch.finfo(x.dtype).max) / 8
    assert_amax_quantize_agrees(x, mode, **options)
    assert (counters.tickets == 0) == resident and counters.chunks >= 1
    x[2, 3] = float("nan")
    assert_amax_quantize_agrees(x, mode, **options)


# The interpreter runs one program at a time, so it counts as one SM, and runs a resident launch
# as one program: of one tile, quantized from registers (16x256), or of 4 tiles of 1024 blocks,
# quantized backwards from the last, the others read again (64x1024, bf16). With RESIDENT_LAUNCH
# off both are ticketed.
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "tickets"])
@pytest.mark.parametrize("options", RESIDENT_OPTIONS, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.filterwarnings("ignore:All-NaN slice")
def test_one_launch_resident_and_ticketed_agree(monkeypatch, dtype, mode, options, resident):
    x = (torch.randn(16, 256, generator=torch.Generator().manual_seed(DTYPES.index(dtype))) * 3).to(dtype)
    assert_resident_and_ticketed_agree(monkeypatch, x, mode, options, resident, tiles=1)


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "tickets"])
@pytest.mark.parametrize("options", RESIDENT_OPTIONS, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.filterwarnings("ignore:All-NaN slice")
def test_one_launch_resident_tiles_and_ticketed_agree(monkeypatch, mode, options, resident):
    x = (torch.randn(64, 1024, generator=torch.Generator().manual_seed(2)) * 3).to(torch.bfloat16)
    assert_resident_and_ticketed_agree(monkeypatch, x, mode, options, resident, tiles=4)


# The last tile is partial (61 rows: 3.8 tiles of 1024 blocks); the largest magnitude sits in the
# first tile (quantized last), a middle one or the last (quantized first, from registers).
@pytest.mark.parametrize("where", [5, 1900, -1])
@pytest.mark.parametrize("mode", MODES)
def test_one_launch_resident_partial_tiles_agree(monkeypatch, mode, where):
    x = (torch.randn(61, 1024, generator=torch.Generator().manual_seed(3)) * 3).to(torch.bfloat16)
    x.view(-1, 16)[where] = -1000.0
    assert_resident_and_ticketed_agree(monkeypatch, x, mode, {}, True, tiles=4)


def test_one_launch_several_resident_tiles_only_for_16_bit_elements():
    # 4 tiles of 1024 blocks hold 128 KiB of fp32 a program, twice 16-bit's: fp32 takes tickets,
    # unless x fits one tile a program.
    x = torch.zeros(64, 1024, dtype=torch.bfloat16)
    assert triton_backend._resident_tiling(x, False)[2] == 4
    assert triton_backend._resident_tiling(x.half(), True)[2] == 4
    assert triton_backend._resident_tiling(x.float(), False) is None
    assert triton_backend._resident_tiling(x[:32].float(), False)[2] == 1


def test_one_launch_amax_chunks_fill_a_wave_before_they_grow():
    # (256x256 bf16 above: 16 tiles, so chunks of 4 tiles here, where a wave is 4 programs.)
    # Two tiles at least: a program's second window keeps two loads in flight.
    cpu, wave, most = torch.device("cpu"), triton_backend._programs_a_wave(torch.device("cpu")), triton_backend.AMAX_CHUNK_TILES
    for n_tiles in range(1, 3 * most * wave):
        chunk = triton_backend._chunk_tiles(n_tiles, cpu)
        assert chunk in (2, 4, 8, 16) and chunk <= most
        assert chunk == 2 or n_tiles >= chunk * wave  # no chunk larger than one that leaves SMs idle, from 2 on
        assert chunk == most or n_tiles < 2 * chunk * wave  # and none smaller than needed


@pytest.mark.parametrize("kept_fraction", [0.1, 0.75, 1.0])
@pytest.mark.parametrize("where", [0, 40000, -1])
def test_one_launch_amax_with_steps_kept_in_l2_sees_every_element(monkeypatch, kept_fraction, where):
    # The amax windows' last steps load with another cache policy, in a loop of their own: the
    # largest magnitude counts wherever it sits (first window, middle, x's last element).
    monkeypatch.setattr(triton_backend, "AMAX_KEPT_FRACTION", kept_fraction)
    monkeypatch.setattr(triton_backend, "RESIDENT_LAUNCH", False)
    assert 0 <= triton_backend._kept_steps(8) < 8
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(where)).to(torch.bfloat16)
    x.view(-1)[where] = -1000.0
    assert_amax_quantize_agrees(x, Mode.RN)


@pytest.mark.parametrize(
    "hadamard, block_2d, mode, rule",
    [(True, False, Mode.RS, "max"), (False, True, Mode.RN, "max"), (True, True, Mode.RS, "max"), (False, False, Mode.RN, "mse")],
)
def test_one_launch_amax_quantize_with_hadamard_2d_and_rules(hadamard, block_2d, mode, rule):
    x = (torch.randn(64, 160, generator=torch.Generator().manual_seed(5)) * 4).to(torch.bfloat16)
    assert_amax_quantize_agrees(x, mode, hadamard=hadamard, block_2d=block_2d, scale_rule=rule)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_launch_amax_quantize_on_adversarial_values(dtype):
    for _name, x, _pts in adversarial_cases(dtype):
        assert_amax_quantize_agrees(x, Mode.RS)


def test_one_launch_amax_quantize_propagates_nan():
    x = torch.randn(8, 64)
    x[3, 5] = float("inf")
    assert_amax_quantize_agrees(x, Mode.RN)
    x[1, 2] = float("nan")
    assert_amax_quantize_agrees(x, Mode.RN)


def test_one_launch_amax_quantize_state_carries_over_launches_through_int32_wrap(monkeypatch):
    # On a GPU a stream's state is reused and never reset: each launch starts from the counts the
    # launches before it left. Start just below int32's largest value, so the counters overflow
    # (and wrap to negative values) in the first launch.
    monkeypatch.setattr(triton_backend, "RESIDENT_LAUNCH", False)
    counters = triton_backend._LaunchCounters(torch.device("cpu"))
    counters.tickets = counters.chunks = 2**31 - 3
    counters.state[int(triton_backend.TICKETS.value)] = counters.state[int(triton_backend.CHUNKS_DONE.value)] = 2**31 - 3
    monkeypatch.setattr(triton_backend._amax_quantize_state, "get", lambda device: counters)
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16)
    for scale in (1, 2, 0.5):  # three launches: each amax word used, zeroed and used again
        assert_amax_quantize_agrees(x * scale, Mode.RS)
    assert counters.launches == 3 and counters.state[int(triton_backend.TICKETS.value)] < 0


def test_one_launch_that_raises_counts_nothing(monkeypatch):
    # A launch that fails on the host (say, its compile) must not advance the host's counts, or
    # every later launch on that stream would wait for tickets that never come.
    counters = triton_backend._LaunchCounters(torch.device("cpu"))
    monkeypatch.setattr(triton_backend._amax_quantize_state, "get", lambda device: counters)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))

    class FailingLaunch:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                raise RuntimeError("compile failed")

            return launch

    with monkeypatch.context() as patch:
        patch.setattr(triton_backend, "_amax_quantize_kernel", FailingLaunch())
        with pytest.raises(RuntimeError, match="compile failed"):
            triton_backend.quantize_amax(x, mode=Mode.RN, seed=None, offset=0)
    assert (counters.tickets, counters.chunks, counters.launches) == (0, 0, 0)
    assert_amax_quantize_agrees(x, Mode.RN)
    assert counters.launches == 1 and counters.tickets == int(counters.state[int(triton_backend.TICKETS.value)])


@pytest.mark.parametrize("kept_fraction", [0, 0.5, 0.75])
@pytest.mark.parametrize("dtype", DTYPES)
def test_amax_windows_over_several_programs_and_tiles(monkeypatch, dtype, kept_fraction):
    # 64-word tiles, 4 a program: 19 (16-bit) or 37 (fp32) programs sweep windows of tiles from the end;
    # the largest value sits in each place of a window in turn. The windows kept in L2 are
    # read by a loop of their own: none, 2 or 3 of the 4.
    monkeypatch.setattr(triton_backend, "AMAX_WORDS", 64)
    monkeypatch.setattr(triton_backend, "AMAX_TILES", 4)
    monkeypatch.setattr(triton_backend, "AMAX_KEPT_FRACTION", kept_fraction)
    x = torch.randn(9400, generator=torch.Generator().manual_seed(4)).to(dtype)
    for index in (0, 63, 64 * 37, 9400 - 1, 5000):
        y = x.clone()
        y[index] = 1e4
        assert torch.equal(triton_backend.amax(y), reference.amax(y))
