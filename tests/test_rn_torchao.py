"""RN must equal torchao's nvfp4_quantize(x, 16, per_tensor_amax_to_scale(amax)) bit for bit."""

import zlib

import pytest
import torch

import nvfp4cli

torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")


def torchao_bytes(x: torch.Tensor, per_tensor_scale: torch.Tensor | None = None):
    """(packed bytes, scale bytes) from torchao; it takes bf16/fp32, so fp16 goes in as fp32."""
    if x.dtype == torch.float16:
        x = x.float()
    if per_tensor_scale is None:
        per_tensor_scale = torchao_nvfp4.per_tensor_amax_to_scale(x.abs().amax().float())
    scales, data = torchao_nvfp4.nvfp4_quantize(x.contiguous(), 16, per_tensor_scale)
    return data.view(torch.uint8).reshape(-1), scales.view(torch.uint8).reshape(-1)


def assert_rn_matches(x: torch.Tensor, per_tensor_scale: torch.Tensor | None = None) -> None:
    q = nvfp4cli.quantize(x, mode="rn", backend="reference", per_tensor_scale=per_tensor_scale)
    packed, scales = torchao_bytes(x, per_tensor_scale)
    assert q.packed.shape == (*x.shape[:-1], x.shape[-1] // 2)
    assert q.scales.shape == (*x.shape[:-1], x.shape[-1] // 16)
    assert torch.equal(q.scales.view(torch.uint8).reshape(-1), scales)
    assert torch.equal(q.packed.reshape(-1), packed)


def log_spread(shape, generator):
    magnitude = 10.0 ** (torch.rand(shape, generator=generator) * 8 - 4)  # 1e-4 .. 1e4
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
    return sign * magnitude


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 16), (7, 48), (128, 256), (3, 5, 64)])
def test_random_normal(dtype, shape):
    # a stable seed per case (Python's hash() of a str is salted per process: other tensors every run)
    g = torch.Generator().manual_seed(zlib.crc32(f"{dtype}{shape}".encode()))
    assert_rn_matches((torch.randn(shape, generator=g) * 2.5).to(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_log_spread(dtype):
    g = torch.Generator().manual_seed(1)
    x = log_spread((64, 512), g)
    if dtype == torch.float16:
        x = x.clamp(-6e4, 6e4)
    assert_rn_matches(x.to(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_tie_heavy(dtype):
    # With pts = 1 and every block's max = 6 * 2^k, the E4M3 scale is exactly 2^k and x * r is
    # exact, so elements placed on midpoints of the E2M1 grid are exact ties.
    g = torch.Generator().manual_seed(2)
    midpoints = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.0, 0.5, 3.0])
    blocks = 4096
    picks = midpoints[torch.randint(0, len(midpoints), (blocks, 16), generator=g)]
    picks[:, 0] = 6.0
    signs = torch.where(torch.rand(blocks, 16, generator=g) < 0.5, -1.0, 1.0)
    powers = 2.0 ** torch.randint(-4, 5, (blocks, 1), generator=g).float()
    x = (picks * signs * powers).reshape(256, 256).to(dtype)
    assert_rn_matches(x, per_tensor_scale=torch.tensor(1.0))


def test_tiny_blocks_next_to_large_ones():
    # Blocks far below the tensor max hit the 2^-6 floor of the E4M3 scale.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 256, generator=g)
    x[::2] *= 1e-6
    x[1::4, :16] *= 1e-30
    assert_rn_matches(x)
    assert_rn_matches(x.to(torch.bfloat16))


def test_negative_zero_and_signs():
    x = torch.tensor([[-0.0, 0.0, -1e-9, 1e-9] * 4, [6.0, -6.0, 0.1, -0.1] * 4])
    assert_rn_matches(x)
    q = nvfp4cli.quantize(x)
    assert int(q.packed[0, 0]) & 0x0F == 8  # -0.0 -> code 8 (sign bit set)


def test_shared_per_tensor_scale():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 64, generator=g)
    assert_rn_matches(x, per_tensor_scale=torch.tensor(0.01))
