"""Make sample_ckpts/tiny-llama: a small, deterministic Llama-style HF model directory (bf16,
two shards and an index) for the demo and the tests. Run from the repository root:

    .venv/bin/python sample_ckpts/make_sample.py

Weights are seeded random normals (std 0.02, norms 1.0), so the output is the same bytes on
every run; the config is a valid LlamaConfig, so transformers can build the model from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent / "tiny-llama"
SEED = 20240601
VOCAB, HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 1024, 256, 704, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": INTERMEDIATE,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """Llama parameter names and shapes, in the order HF shards them."""
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.input_layernorm.weight": (HIDDEN,),
            f"{prefix}.self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            f"{prefix}.self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            f"{prefix}.self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            f"{prefix}.self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            f"{prefix}.post_attention_layernorm.weight": (HIDDEN,),
            f"{prefix}.mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            f"{prefix}.mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            f"{prefix}.mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        }
    shapes |= {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    return shapes


def make_weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    weights = {}
    for name, shape in weight_shapes().items():
        if len(shape) == 1:  # norms: ones with a little noise, as after training
            tensor = 1.0 + 0.05 * torch.randn(shape, generator=generator)
        else:
            tensor = 0.02 * torch.randn(shape, generator=generator)
        weights[name] = tensor.to(torch.bfloat16)
    return weights


def tokenizer() -> dict:
    """A word-level tokenizer.json that the `tokenizers` library loads."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab |= {f"w{index}": index for index in range(len(SPECIAL_TOKENS), VOCAB)}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": index, "content": token, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for index, token in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    weights = make_weights()
    names = list(weights)
    # Two shards split after layer 0's attention, so a fused gate/up pair shares a shard but the
    # layers span both: the sharded reading path gets exercised.
    split = names.index("model.layers.0.post_attention_layernorm.weight")
    shards = {"model-00001-of-00002.safetensors": names[:split], "model-00002-of-00002.safetensors": names[split:]}
    weight_map = {}
    for file_name, shard_names in shards.items():
        save_file({name: weights[name] for name in shard_names}, OUT / file_name, metadata={"format": "pt"})
        weight_map |= {name: file_name for name in shard_names}
    total = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    write_json(OUT / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json(OUT / "config.json", CONFIG)
    write_json(OUT / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    write_json(OUT / "tokenizer.json", tokenizer())
    write_json(OUT / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})


if __name__ == "__main__":
    main()
