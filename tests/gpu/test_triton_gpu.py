"""The compiled Triton kernels on a CUDA GPU, bit for bit against the reference backend run on the
CPU (and torchao's nvfp4_quantize, also on the CPU, where installed): many shapes including M=1,
K=16, odd sizes and 3-D, every input dtype, adversarial values, RN and RS with 32- and 64-bit
seeds and offsets, more than 2^31 elements, CUDA-graph replay with a new offset tensor,
torch.compile(fullgraph=True) around the torch.library ops, and the block scale rules 4over6 and
mse (compiled without FP contraction: blocks whose choice a fused multiply-add or another
summation order would change are among the cases). Skips without CUDA.

The oracles run on the CPU because PyTorch on CUDA divides by a Python scalar as a multiplication
by its reciprocal (one bit less exact than SPEC.md's division), which changes about one block
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
from nvfp4cli.kernels import reference, triton_backend  # noqa: E402
from scale_rule_cases import order_sensitive_blocks  # noqa: E402
from triton_cases import adversarial_cases, own_threshold_blocks  # noqa: E402

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
    monkeypatch.setattr(triton_backend, "QUANTIZE_CONFIGS", {mode: (64, 2, tiles)})
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
