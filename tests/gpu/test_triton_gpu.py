"""The compiled Triton kernels on a CUDA GPU, bit for bit against the reference backend run on the
CPU (and torchao's nvfp4_quantize, also on the CPU, where installed): many shapes including M=1,
K=16, odd sizes and 3-D, every input dtype, adversarial values, RN and RS with 32- and 64-bit
seeds and offsets, more than 2^31 elements, CUDA-graph replay with a new offset tensor,
torch.compile(fullgraph=True) around the torch.library ops, and the block scale rules 4over6 and
mse (compiled without FP contraction: blocks whose choice a fused multiply-add or another
summation order would change are among the cases). Skips without CUDA.

The oracles run on the CPU because PyTorch on CUDA divides by a Python scalar as a multiplication
by its reciprocal (one bit less exact than docs/format.md's division), which changes about one block
scale in a million for float32 input.

Run on the device machine: PYTHONPATH=. python -m pytest -q tests/gpu/test_triton_gpu.py
"""

import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared case generator

import nvfp4cli  # noqa: E402
from nvfp4cli.format import Mode, per_tensor_scale_from_amax, swizzle_scales  # noqa: E402
from nvfp4cli.kernels import HADAMARD_SIGNS, reference, triton_backend  # noqa: E402
from scale_rule_cases import order_sensitive_blocks  # noqa: E402
from triton_cases import adversarial_cases, flagged, own_threshold_blocks  # noqa: E402

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SHAPES = [(1, 16), (1, 8192), (16, 8192), (3, 48), (127, 80), (1000, 16), (513, 1040), (2, 3, 4, 32), (4096, 4096)]
SEEDS_OFFSETS = [(1, 7), (2**32 + 5, 2**32 - 3), (2**63 - 1, 2**62 + 11)]
RULES = ["4over6", "mse"]
RULE_SHAPES = [(1, 16), (3, 48), (127, 80), (513, 1040), (2, 3, 4, 32), (1024, 4096)]


def assert_same(got, want):
    got, want = [t.cpu() for t in got], [t.cpu() for t in want]
    assert got[0].shape == want[0].shape and got[1].shape == want[1].shape
    assert torch.equal(got[1].view(torch.uint8), want[1].view(torch.uint8)), "block scales differ"
    assert torch.equal(got[0], want[0]), f"{(got[0] != want[0]).sum().item()} packed bytes differ"


def reference_on_cpu(x, pts, mode, seed, offset, scale_rule="max"):
    return reference.quantize(x.cpu(), per_tensor_scale=pts.cpu(), mode=mode, seed=seed, offset=offset, scale_rule=scale_rule)


def random_input(shape, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, generator=gen, device="cuda")
    decades = torch.empty(shape, device="cuda").uniform_(-4, 4, generator=gen)
    return (x * 10**decades).to(dtype)


@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_random_tensors_match_reference(shape, dtype, mode):
    x = random_input(shape, dtype, seed=len(shape) * 1000 + shape[-1])
    amax = triton_backend.amax(x)
    assert torch.equal(amax, reference.amax(x))
    pts = per_tensor_scale_from_amax(amax)
    for seed, offset in SEEDS_OFFSETS if mode is Mode.RS else [(None, 0)]:
        assert_same(triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=seed, offset=offset), reference_on_cpu(x, pts, mode, seed, offset))


@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adversarial_values_match_reference(dtype, mode):
    for name, x, pts in adversarial_cases(dtype, seed=1):
        x = x.cuda()
        amax = triton_backend.amax(x)
        assert torch.equal(amax, reference.amax(x)), name
        pts = per_tensor_scale_from_amax(amax) if pts is None else pts.float().cuda()
        assert_same(triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=2**40 + 3, offset=2**33 + 5), reference_on_cpu(x, pts, mode, 2**40 + 3, 2**33 + 5))


@pytest.mark.parametrize("tiles", [2, 3, 5])
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_several_tiles_a_program_match_reference(monkeypatch, dtype, mode, tiles):
    # The tile loop is unrolled by two: odd tile counts run its remainder, and the last program
    # runs past the tensor's end (1031 blocks, 64 a tile).
    monkeypatch.setitem(triton_backend.QUANTIZE_CONFIGS, (mode, False), (64, 2, tiles))
    monkeypatch.setattr(triton_backend, "MIN_PROGRAMS", 1)
    x = random_input((1031, 16), dtype, seed=tiles)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    assert_same(triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=5, offset=2**33), reference_on_cpu(x, pts, mode, 5, 2**33))


@pytest.mark.parametrize("seed,offset", SEEDS_OFFSETS)
def test_rs_on_each_elements_own_threshold_matches_reference(seed, offset):
    # The compiled kernel rounds a + 1 up with add.rp, the interpreter with a plain-Triton twin.
    x = own_threshold_blocks(seed, offset, rows=40, blocks_a_row=50).cuda()
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    assert_same(triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=seed, offset=offset), reference_on_cpu(x, pts, Mode.RS, seed, offset))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", RULE_SHAPES, ids=str)
def test_rules_on_random_tensors_match_reference(shape, dtype, mode, rule):
    x = random_input(shape, dtype, seed=len(shape) * 1000 + shape[-1] + 7)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    got = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=2**40 + 3, offset=2**33 + 5, scale_rule=rule)
    assert_same(got, reference_on_cpu(x, pts, mode, 2**40 + 3, 2**33 + 5, rule))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rules_on_adversarial_values_match_reference(dtype, mode, rule):
    cases = adversarial_cases(dtype, seed=3)
    x, pts = order_sensitive_blocks(rule)
    cases.append(("order-sensitive", x.to(dtype), pts))
    for name, x, pts in cases:
        x = x.cuda()
        pts = per_tensor_scale_from_amax(triton_backend.amax(x)) if pts is None else pts.float().cuda()
        got = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=2**40 + 3, offset=2**33 + 5, scale_rule=rule)
        assert_same(got, reference_on_cpu(x, pts, mode, 2**40 + 3, 2**33 + 5, rule))


@pytest.mark.parametrize("rule", RULES)
def test_rules_with_swizzled_scales_and_through_the_api(rule):
    x = random_input((256, 4096), torch.bfloat16, seed=11)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    _, row_major = reference_on_cpu(x, pts, Mode.RN, None, 0, rule)
    _, swizzled = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, swizzle=True, scale_rule=rule)
    assert torch.equal(swizzled.cpu().view(torch.uint8), swizzle_scales(row_major).view(torch.uint8))
    got = nvfp4cli.quantize(x, mode="rs", seed=3, offset=2**33, scale_rule=rule)
    want = nvfp4cli.quantize(x.cpu(), mode="rs", seed=3, offset=2**33, scale_rule=rule)
    assert_same((got.packed, got.scales), (want.packed, want.scales))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_rn_matches_torchao(dtype):
    nvfp4_tensor = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    x = random_input((512, 2048), dtype, seed=5)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    scales, packed = nvfp4_tensor.nvfp4_quantize(x.cpu(), 16, pts.cpu())
    assert_same(triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0), (packed.view(torch.uint8), scales))


def test_more_than_2_31_elements():
    # 131073 x 16384 bf16: element, word and block offsets past 2^31 need 64-bit indexing.
    rows, k = 131073, 16384
    x = random_input((rows, k), torch.bfloat16, seed=6)
    amax = triton_backend.amax(x)
    assert torch.equal(amax, reference.amax(x))
    pts = per_tensor_scale_from_amax(amax)
    packed, scales = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=9, offset=2**40)
    tail = slice(rows - 64, rows)
    first_tail_block = (rows - 64) * (k // 16)
    assert_same((packed[tail], scales[tail]), reference_on_cpu(x[tail], pts, Mode.RS, 9, 2**40 + first_tail_block))


@pytest.mark.parametrize("shape", [(1, 16), (130, 48), (256, 4096)], ids=str)
def test_swizzled_scales_equal_the_format_reference(shape):
    x = random_input(shape, torch.bfloat16, seed=7)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    _, row_major = reference_on_cpu(x, pts, Mode.RN, None, 0)
    _, swizzled = triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, swizzle=True)
    assert torch.equal(swizzled.cpu().view(torch.uint8), swizzle_scales(row_major).view(torch.uint8))


def test_public_api_picks_triton_on_cuda_and_matches_reference():
    x = random_input((64, 512), torch.bfloat16, seed=8)
    got = nvfp4cli.quantize(x, mode="rs", seed=3, offset=2**33)
    want = nvfp4cli.quantize(x.cpu(), mode="rs", seed=3, offset=2**33)
    assert_same((got.packed, got.scales), (want.packed, want.scales))


def test_cuda_graph_replays_with_a_new_offset():
    x = random_input((256, 1024), torch.bfloat16, seed=9)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    seed = torch.tensor(2**40 + 1, device="cuda")
    offset = torch.tensor(0, device="cuda")
    torch.ops.nvfp4.quantize(x, pts, True, seed, offset)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        packed, scales = torch.ops.nvfp4.quantize(x, pts, True, seed, offset)
    for new_offset in (5, 2**32 + 1, 2**62):
        offset.fill_(new_offset)
        graph.replay()
        assert_same((packed, scales), triton_backend.quantize(x, per_tensor_scale=pts, mode=Mode.RS, seed=2**40 + 1, offset=new_offset))


def test_torch_compile_fullgraph_around_the_ops():
    def amax_then_quantize(x, seed, offset):
        pts = torch.clamp(torch.ops.nvfp4.amax(x) / 2688, min=2.0**-120)
        return torch.ops.nvfp4.quantize(x, pts, True, seed, offset)

    x = random_input((128, 2048), torch.bfloat16, seed=10)
    seed, offset = torch.tensor(11, device="cuda"), torch.tensor(2**35, device="cuda")
    compiled = torch.compile(amax_then_quantize, fullgraph=True)
    got = compiled(x, seed, offset)
    pts = per_tensor_scale_from_amax(reference.amax(x))
    assert_same(got, reference_on_cpu(x, pts, Mode.RS, 11, 2**35))


# ---------------------------------------------------------------- training primitives (docs/format.md §9)

TRAINING_SHAPES = [(16, 16), (48, 80), (272, 1040), (2048, 4096)]  # odd block counts both ways
SIGNS = HADAMARD_SIGNS


def reference_rowcol_on_cpu(x, pts, col_pts, mode, seed, offset, block_2d, col_hadamard):
    return reference.quantize_rowcol(
        x.cpu(), per_tensor_scale=pts.cpu(), col_per_tensor_scale=col_pts.cpu(), mode=mode, seed=seed, offset=offset,
        block_2d=block_2d, col_hadamard=col_hadamard,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 16), (3, 5, 48), (272, 1040)], ids=str)
def test_rht_and_its_inverse_match_reference(shape, dtype):
    x = random_input(shape, dtype, seed=20 + shape[-1])
    flipped = tuple(-s for s in SIGNS)
    for signs in (SIGNS, flipped):
        for inverse in (False, True):
            got = triton_backend.rht(x, signs=signs, inverse=inverse)
            assert torch.equal(got.cpu(), reference.rht(x.cpu(), signs=signs, inverse=inverse))
    assert torch.equal(triton_backend.amax(x, hadamard=True).cpu(), reference.amax(x.cpu(), hadamard=True))


@pytest.mark.parametrize("variant", ["hadamard", "block_2d", "both"])
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", TRAINING_SHAPES, ids=str)
def test_hadamard_and_2d_quantize_match_reference(shape, dtype, mode, variant):
    x = random_input(shape, dtype, seed=30 + shape[-1])
    flags = {"hadamard": variant != "block_2d", "block_2d": variant != "hadamard"}
    pts = per_tensor_scale_from_amax(triton_backend.amax(x, hadamard=flags["hadamard"]))
    got = triton_backend.quantize(x, per_tensor_scale=pts, mode=mode, seed=2**40 + 3, offset=2**33 + 5, **flags)
    want = reference.quantize(x.cpu(), per_tensor_scale=pts.cpu(), mode=mode, seed=2**40 + 3, offset=2**33 + 5, **flags)
    assert_same(got, want)


@pytest.mark.parametrize("col_hadamard", [False, True])
@pytest.mark.parametrize("block_2d", [False, True])
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", TRAINING_SHAPES, ids=str)
def test_rowcol_matches_reference(shape, dtype, mode, block_2d, col_hadamard):
    x = random_input(shape, dtype, seed=40 + shape[-1])
    row_amax, col_amax = triton_backend.amax_rowcol(x, col_hadamard=col_hadamard)
    want_row, want_col = reference.amax_rowcol(x.cpu(), col_hadamard=col_hadamard)
    assert torch.equal(row_amax.cpu(), want_row) and torch.equal(col_amax.cpu(), want_col)
    pts, col_pts = per_tensor_scale_from_amax(row_amax), per_tensor_scale_from_amax(col_amax)
    got = triton_backend.quantize_rowcol(
        x, per_tensor_scale=pts, col_per_tensor_scale=col_pts, mode=mode, seed=7, offset=2**33 + 5,
        block_2d=block_2d, col_hadamard=col_hadamard,
    )
    want = reference_rowcol_on_cpu(x, pts, col_pts, mode, 7, 2**33 + 5, block_2d, col_hadamard)
    assert_same(got[:2], want[:2])
    assert_same(got[2:], want[2:])


def test_rowcol_api_on_cuda_equals_cpu_and_empty_tensors_work():
    x = random_input((256, 512), torch.bfloat16, seed=50)
    got = nvfp4cli.quantize_rowcol(x, "rs", 3, 2**33, block_2d=True, col_hadamard=True)
    want = nvfp4cli.quantize_rowcol(x.cpu(), "rs", 3, 2**33, block_2d=True, col_hadamard=True)
    for g, w in zip(got, want):
        assert_same((g.packed, g.scales), (w.packed, w.scales))
        assert torch.equal(g.per_tensor_scale.cpu(), w.per_tensor_scale)
    empty = nvfp4cli.quantize(torch.empty(0, 64, device="cuda"), mode="rs", seed=1)
    assert empty.packed.shape == (0, 32) and empty.scales.shape == (0, 4) and float(empty.per_tensor_scale) == 2.0**-120


def test_rowcol_op_replays_in_a_cuda_graph_and_compiles_fullgraph():
    x = random_input((256, 1024), torch.bfloat16, seed=51)
    seed, offset = torch.tensor(2**40 + 1, device="cuda"), torch.tensor(0, device="cuda")

    def step(x, seed, offset):
        row_amax, col_amax = torch.ops.nvfp4.amax_rowcol(x, True)
        pts = torch.clamp(row_amax / 2688, min=2.0**-120)
        col_pts = torch.clamp(col_amax / 2688, min=2.0**-120)
        return torch.ops.nvfp4.quantize_rowcol(x, pts, col_pts, True, seed, offset, True, True)

    step(x, seed, offset)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step(x, seed, offset)
    for new_offset in (5, 2**32 + 1):
        offset.fill_(new_offset)
        graph.replay()
        want = nvfp4cli.quantize_rowcol(x, "rs", 2**40 + 1, new_offset, block_2d=True, col_hadamard=True)
        assert_same(outputs[:2], (want[0].packed, want[0].scales))
        assert_same(outputs[2:], (want[1].packed, want[1].scales))
    compiled = torch.compile(step, fullgraph=True)
    offset.fill_(9)
    got = compiled(x, seed, offset)
    want = nvfp4cli.quantize_rowcol(x.cpu(), "rs", 2**40 + 1, 9, block_2d=True, col_hadamard=True)
    assert_same(got[2:], (want[1].packed, want[1].scales))


def assert_amax_quantize_same(x, mode, seed=5, offset=2**33, **options):
    """The one-launch amax + scale + quantize equals the reference's amax, scale and quantize on the CPU."""
    packed, scales, pts, amax = triton_backend.quantize_amax(x, mode=mode, seed=seed, offset=offset, **options)
    want_amax = reference.amax(x.cpu(), hadamard=options.get("hadamard", False))
    assert torch.equal(amax.cpu(), want_amax)
    want_pts = per_tensor_scale_from_amax(want_amax)
    assert torch.equal(pts.cpu(), want_pts)
    want = reference.quantize(x.cpu(), per_tensor_scale=want_pts, mode=mode, seed=seed, offset=offset, **options)
    assert_same((packed, scales), want)


@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_one_launch_amax_quantize_matches_reference(shape, dtype, mode):
    assert_amax_quantize_same(random_input(shape, dtype, seed=shape[-1] + 7), mode)


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "tickets"])
@pytest.mark.parametrize(
    "options", [dict(hadamard=True), dict(block_2d=True), dict(hadamard=True, block_2d=True), dict(scale_rule="mse"), dict(scale_rule="4over6")], ids=str
)
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("shape", [(1024, 2048), (4096, 2048)], ids=str)  # resident: one tile a program, several
def test_one_launch_amax_quantize_options_match_reference(monkeypatch, shape, mode, options, resident):
    monkeypatch.setattr(triton_backend, "RESIDENT_LAUNCH", resident)
    assert_amax_quantize_same(random_input(shape, torch.bfloat16, seed=11), mode, **options)


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "tickets"])
@pytest.mark.parametrize("mode", [Mode.RN, Mode.RS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(16, 8192), (100, 1040), (1024, 1024), (1024, 2048), (2048, 2048), (1000, 4112), (4096, 2048), (3000, 4096)], ids=str)
def test_one_launch_resident_and_ticketed_match_reference(monkeypatch, shape, dtype, mode, resident):
    # Inputs up to 17 M elements run resident (every program at once, each quantizing the tiles it
    # reduced: one, or for 16-bit elements several, 3000x4096 leaving the last program short of
    # tiles); RESIDENT_LAUNCH off, the same inputs take tickets. Both give the reference's bytes.
    monkeypatch.setattr(triton_backend, "RESIDENT_LAUNCH", resident)
    x = random_input(shape, dtype, seed=shape[0] + 3)
    several_tiles = shape[0] >= 3000  # 4-7 tiles of 1024 blocks a program on 114-132 SMs
    want_resident = resident and (not several_tiles or x.element_size() == 2)
    tiling = triton_backend._resident_tiling(x, False)
    assert (tiling is not None) == want_resident and (tiling is None or (tiling[2] > 1) == several_tiles)
    assert_amax_quantize_same(x, mode)


def test_one_launch_amax_quantize_back_to_back_on_two_streams():
    # Each launch counts on in its stream's state from where the launch before left it: many launches of
    # different sizes queued without a host sync, on two streams at once, all stay exact.
    xs = [random_input((rows, 4096), torch.bfloat16, seed=rows) for rows in (1, 16, 1024, 3000, 64)]
    wants = [reference.quantize_amax(x.cpu(), mode=Mode.RS, seed=1, offset=2) for x in xs]
    side = torch.cuda.Stream()
    results = {}
    for repeat in range(20):
        for i, x in enumerate(xs):
            stream = side if (repeat + i) % 2 else torch.cuda.current_stream()
            with torch.cuda.stream(stream):
                x.record_stream(stream)
                results[repeat, i] = triton_backend.quantize_amax(x, mode=Mode.RS, seed=1, offset=2)
    torch.cuda.synchronize()
    for (repeat, i), got in results.items():
        assert_same(got[:2], wants[i][:2])
        assert torch.equal(got[2].cpu(), wants[i][2])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_quantize_and_rowcol_flag_nan_and_inf_from_their_own_pass(dtype):
    x = random_input((512, 1040), dtype, seed=11)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    quantize_options = [dict(mode=Mode.RN, seed=None), dict(mode=Mode.RS, seed=3, block_2d=True), dict(mode=Mode.RN, seed=None, hadamard=True)]
    quantize_options = [dict(per_tensor_scale=pts, offset=5, **options) for options in quantize_options]
    rowcol_options = dict(per_tensor_scale=pts, col_per_tensor_scale=pts, mode=Mode.RS, seed=3, offset=5, col_hadamard=True)
    for options in quantize_options:
        got, bad = flagged(triton_backend.quantize, x, **options)
        assert not bad
        assert_same(got, triton_backend.quantize(x, **options))  # the check changes no byte
    got, bad = flagged(triton_backend.quantize_rowcol, x, **rowcol_options)
    want = triton_backend.quantize_rowcol(x, **rowcol_options)
    assert not bad
    assert_same(got[:2], want[:2])
    assert_same(got[2:], want[2:])
    for where, value in (((0, 0), float("nan")), ((300, 517), float("inf")), ((511, 1039), float("nan"))):
        y = x.clone()
        y[where] = value
        for options in quantize_options:
            assert flagged(triton_backend.quantize, y, **options)[1], (where, options)
        assert flagged(triton_backend.quantize_rowcol, y, **rowcol_options)[1], where
    with pytest.raises(nvfp4cli.DataError, match=r"1 non-finite value\(s\).*first at index \(511, 1039\)"):
        nvfp4cli.quantize(y, per_tensor_scale=pts)


def test_api_given_scales_checks_them_and_x_through_the_host_flag():
    # A call given its scales reads nothing before its launch: the quantize kernel writes NaN
    # into page-locked host memory for NaN/Inf in x or a bad scale, and the call raises after it.
    x = random_input((256, 512), torch.bfloat16, seed=4)
    pts = per_tensor_scale_from_amax(triton_backend.amax(x))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        bad = torch.tensor(bad, device="cuda")
        with pytest.raises(nvfp4cli.UsageError, match="per_tensor_scale must be positive and finite"):
            nvfp4cli.quantize(x, per_tensor_scale=bad)
        with pytest.raises(nvfp4cli.UsageError, match="per_tensor_scale must be positive and finite"):
            nvfp4cli.quantize_rowcol(x, per_tensor_scale=pts, col_per_tensor_scale=bad)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the flag is read once x's own stream has run the kernel
        y = x.clone()
        y[255, 511] = float("inf")
        with pytest.raises(nvfp4cli.DataError, match=r"first at index \(255, 511\)"):
            nvfp4cli.quantize(y, per_tensor_scale=pts)
        got = nvfp4cli.quantize(x, per_tensor_scale=pts, mode="rs", seed=3)
    torch.cuda.synchronize()
    want = reference.quantize(x.cpu(), per_tensor_scale=pts.cpu(), mode=Mode.RS, seed=3, offset=0)
    assert_same((got.packed, got.scales), want)


def test_one_launch_amax_quantize_reports_nan_and_inf():
    x = random_input((256, 256), torch.float32, seed=3)
    x[7, 9] = float("inf")
    assert triton_backend.quantize_amax(x, mode=Mode.RN, seed=None, offset=0)[3].item() == float("inf")
    x[1, 2] = float("nan")
    assert triton_backend.quantize_amax(x, mode=Mode.RN, seed=None, offset=0)[3].isnan().item()
    with pytest.raises(nvfp4cli.DataError, match="non-finite"):
        nvfp4cli.quantize(x)
