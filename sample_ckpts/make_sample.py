"""Make the sample checkpoints in sample_ckpts/: small, deterministic HF model directories with the
real tensor names, dtypes and layouts of the models people convert, for the demo and the tests.
Run from the repository root (what a `make samples` target would run; it rewrites every directory
below, and tests/test_samples.py checks that the committed bytes are exactly its output):

    .venv/bin/python sample_ckpts/make_sample.py

- tiny-llama: a Llama in bf16, two shards and an index, with a word-level tokenizer.
- deepseek-v3-fp8: a DeepSeek-V3-like MoE with MLA, a dense first layer, then MoE layers with a
  router, e_score_correction_bias, routed and shared experts; every Linear F8_E4M3 with an fp32
  `weight_scale_inv` per 128x128 block (several shapes not multiples of 128, so edge blocks are
  partial), config `quant_method: fp8` as DeepSeek ships it.
- gpt-oss-mxfp4: a gpt-oss-like MoE: bf16 attention with biases and sinks, a router with a bias,
  experts as MXFP4 `*_blocks`/`*_scales` [E, out, in/32, (16)] with bf16 `*_bias`, config
  `quant_method: mxfp4`. Layer 0's gate_up_proj has block exponents 18-25 below the tensor's
  largest and one all-zero block (not re-encodable losslessly); layer 1's span at most 12.
- qwen3-moe: a Qwen3-MoE in bf16 with per-expert `experts.N.{gate,up,down}_proj`, with a tokenizer.
- llama-fp8-ct: a compressed-tensors `float-quantized` FP8 Llama: F8_E4M3 weights with fp32
  `weight_scale` per channel [N, 1], one (layers.1 o_proj) per tensor [1]; lm_head in bf16.

Every tensor comes from one seeded torch.Generator per directory, so re-running writes the same
bytes; each config is one that transformers' AutoConfig loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
SEED = 20240601
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP8_BLOCK = 128  # DeepSeek's weight_block_size, both dims
MX_BLOCK = 32
E2M1_MAGNITUDES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])

# ---------------------------------------------------------------------------------------------
# tiny-llama (its bytes are fixed: other tests and the demo compare against them)

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


def tokenizer(vocab_size: int = VOCAB) -> dict:
    """A word-level tokenizer.json that the `tokenizers` library loads."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab |= {f"w{index}": index for index in range(len(SPECIAL_TOKENS), vocab_size)}
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


TOKENIZER_CONFIG = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_model_dir(out: Path, shards: dict[str, dict[str, torch.Tensor]], config: dict, with_tokenizer: bool = False) -> None:
    """Write an HF model directory: the shards, an index when there is more than one, the config."""
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.safetensors"):
        if stale.name not in shards:
            stale.unlink()
    weight_map = {}
    for file_name, tensors in shards.items():
        save_file(tensors, out / file_name, metadata={"format": "pt"})
        weight_map |= {name: file_name for name in tensors}
    index = out / "model.safetensors.index.json"
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for tensors in shards.values() for t in tensors.values())
        write_json(index, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    else:
        index.unlink(missing_ok=True)
    write_json(out / "config.json", config)
    if with_tokenizer:
        write_json(out / "tokenizer.json", tokenizer(config["vocab_size"]))
        write_json(out / "tokenizer_config.json", TOKENIZER_CONFIG)


def split_shards(tensors: dict[str, torch.Tensor], first_of_second: str, stem: str = "model") -> dict[str, dict[str, torch.Tensor]]:
    """Two shards, the second starting at `first_of_second` (HF's model-0000k-of-00002 names)."""
    names = list(tensors)
    cut = names.index(first_of_second)
    parts = (names[:cut], names[cut:])
    return {f"{stem}-{k + 1:05d}-of-00002.safetensors": {n: tensors[n] for n in part} for k, part in enumerate(parts)}


def make_tiny_llama() -> None:
    weights = make_weights()
    # Two shards split after layer 0's attention, so a fused gate/up pair shares a shard but the
    # layers span both: the sharded reading path gets exercised.
    shards = split_shards(weights, "model.layers.0.post_attention_layernorm.weight")
    out = HERE / "tiny-llama"
    write_model_dir(out, shards, CONFIG, with_tokenizer=True)
    write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})


# ---------------------------------------------------------------------------------------------
# Shared helpers for the quantized and MoE samples


class Maker:
    """Seeded tensors, recorded in insertion order (the order the shards list them)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors: dict[str, torch.Tensor] = {}

    def normal(self, *shape: int, std: float = 0.02) -> torch.Tensor:
        return std * torch.randn(shape, generator=self.generator)

    def bf16(self, name: str, *shape: int, std: float = 0.02) -> None:
        self.tensors[name] = self.normal(*shape, std=std).to(torch.bfloat16)

    def norm(self, name: str, size: int) -> None:
        self.tensors[name] = (1.0 + 0.05 * torch.randn(size, generator=self.generator)).to(torch.bfloat16)

    def fp8_block(self, module: str, rows: int, cols: int) -> None:
        """`module.weight` F8_E4M3 + fp32 `module.weight_scale_inv` per 128x128 block. Each block
        gets its own magnitude, so the block scales differ as in trained weights."""
        weight = self.normal(rows, cols)
        grid = (-(-rows // FP8_BLOCK), -(-cols // FP8_BLOCK))
        gain = torch.exp2(torch.randn(grid, generator=self.generator))
        weight *= gain.repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:rows, :cols]
        padded = torch.zeros(grid[0] * FP8_BLOCK, grid[1] * FP8_BLOCK)
        padded[:rows, :cols] = weight
        amax = padded.abs().reshape(grid[0], FP8_BLOCK, grid[1], FP8_BLOCK).amax(dim=(1, 3))
        scale_inv = amax / FP8_MAX
        full_scale = scale_inv.repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:rows, :cols]
        self.tensors[f"{module}.weight"] = (weight / full_scale).to(torch.float8_e4m3fn)
        self.tensors[f"{module}.weight_scale_inv"] = scale_inv

    def fp8_channel(self, module: str, rows: int, cols: int, per_tensor: bool = False) -> None:
        """compressed-tensors FP8: `module.weight` F8_E4M3 + fp32 `module.weight_scale`, [N, 1]
        per output channel or [1] per tensor."""
        weight = self.normal(rows, cols)
        amax = weight.abs().amax().reshape(1) if per_tensor else weight.abs().amax(dim=1, keepdim=True)
        scale = amax / FP8_MAX
        self.tensors[f"{module}.weight"] = (weight / scale).to(torch.float8_e4m3fn)
        self.tensors[f"{module}.weight_scale"] = scale

    def mxfp4(self, name: str, weight: torch.Tensor) -> None:
        """`name_blocks` uint8 [..., out, in/32, 16] (element 2j in the low nibble of byte j) and
        `name_scales` uint8 [..., out, in/32] (E8M0, bias 127), quantized as the OCP MX spec
        does: shared exponent floor(log2(amax)) - 2, elements rounded to the nearest E2M1."""
        blocks = weight.reshape(*weight.shape[:-1], -1, MX_BLOCK)
        amax = blocks.abs().amax(dim=-1)
        # An all-zero block gets the smallest exponent, byte 0, as torchao's MX cast writes it.
        exponent = torch.where(amax > 0, torch.floor(torch.log2(amax)) - 2, torch.full_like(amax, -127)).clamp(-127, 127)
        scaled = (blocks / torch.exp2(exponent)[..., None]).clamp(-6.0, 6.0)
        midpoints = (E2M1_MAGNITUDES[1:] + E2M1_MAGNITUDES[:-1]) / 2
        codes = torch.bucketize(scaled.abs(), midpoints) | torch.where(scaled < 0, 8, 0)
        codes = codes.to(torch.uint8).reshape(*codes.shape[:-1], MX_BLOCK // 2, 2)
        self.tensors[f"{name}_blocks"] = codes[..., 0] | (codes[..., 1] << 4)
        self.tensors[f"{name}_scales"] = (exponent + 127).to(torch.uint8)

    def layer_prefixes(self, c: dict):
        """(index, name prefix) of each decoder layer, its input_layernorm written first."""
        for layer in range(c["layers"]):
            prefix = f"model.layers.{layer}"
            self.norm(f"{prefix}.input_layernorm.weight", c["hidden"])
            yield layer, prefix

    def embedding(self, c: dict) -> None:
        self.bf16("model.embed_tokens.weight", c["vocab"], c["hidden"])

    def final_norm_and_head(self, c: dict) -> None:
        self.norm("model.norm.weight", c["hidden"])
        self.bf16("lm_head.weight", c["vocab"], c["hidden"])

    def spread_exponents(self, weight: torch.Tensor, max_shift: int) -> torch.Tensor:
        """Scale each block of 32 by 2^-k, k in 0..max_shift (mostly small): block exponents then
        span about max_shift + 2, as in trained MXFP4 experts."""
        shape = (*weight.shape[:-1], weight.shape[-1] // MX_BLOCK)
        shift = torch.randint(0, max_shift + 1, shape, generator=self.generator)
        shift = torch.minimum(shift, torch.randint(0, max_shift + 1, shape, generator=self.generator))
        return weight * torch.exp2(-shift.float()).repeat_interleave(MX_BLOCK, dim=-1)


def attention_projections(c: dict) -> tuple[tuple[str, int, int], ...]:
    """(name, out, in) of a GQA attention's q/k/v/o projections."""
    q_out, kv_out = c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"]
    return (("q_proj", q_out, c["hidden"]), ("k_proj", kv_out, c["hidden"]), ("v_proj", kv_out, c["hidden"]), ("o_proj", c["hidden"], q_out))


# ---------------------------------------------------------------------------------------------
# deepseek-v3-fp8: DeepSeek-V3's published config, shrunk (hidden 192 = 1.5 blocks of 128)

DSV3 = dict(vocab=512, hidden=192, intermediate=272, moe_intermediate=64, layers=3, heads=4, q_lora_rank=144, kv_lora_rank=112,
            qk_nope=32, qk_rope=16, v_head=32, experts=8, shared=1)  # fmt: skip
DSV3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": DSV3["hidden"],
    "initializer_range": 0.02,
    "intermediate_size": DSV3["intermediate"],
    "kv_lora_rank": DSV3["kv_lora_rank"],
    "max_position_embeddings": 4096,
    "moe_intermediate_size": DSV3["moe_intermediate"],
    "moe_layer_freq": 1,
    "n_group": 2,
    "n_routed_experts": DSV3["experts"],
    "n_shared_experts": DSV3["shared"],
    "norm_topk_prob": True,
    "num_attention_heads": DSV3["heads"],
    "num_experts_per_tok": 2,
    "num_hidden_layers": DSV3["layers"],
    "num_key_value_heads": DSV3["heads"],
    "num_nextn_predict_layers": 0,  # DeepSeek ships one MTP layer; the sample leaves it out
    "pretraining_tp": 1,
    "q_lora_rank": DSV3["q_lora_rank"],
    "qk_nope_head_dim": DSV3["qk_nope"],
    "qk_rope_head_dim": DSV3["qk_rope"],
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},  # fmt: skip
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": DSV3["v_head"],
    "vocab_size": DSV3["vocab"],
}


def make_deepseek_v3_fp8() -> None:
    c = DSV3
    m = Maker(SEED + 1)
    hidden, heads = c["hidden"], c["heads"]
    m.embedding(c)
    for layer, p in m.layer_prefixes(c):
        m.fp8_block(f"{p}.self_attn.q_a_proj", c["q_lora_rank"], hidden)
        m.norm(f"{p}.self_attn.q_a_layernorm.weight", c["q_lora_rank"])
        m.fp8_block(f"{p}.self_attn.q_b_proj", heads * (c["qk_nope"] + c["qk_rope"]), c["q_lora_rank"])
        m.fp8_block(f"{p}.self_attn.kv_a_proj_with_mqa", c["kv_lora_rank"] + c["qk_rope"], hidden)
        m.norm(f"{p}.self_attn.kv_a_layernorm.weight", c["kv_lora_rank"])
        m.fp8_block(f"{p}.self_attn.kv_b_proj", heads * (c["qk_nope"] + c["v_head"]), c["kv_lora_rank"])
        m.fp8_block(f"{p}.self_attn.o_proj", hidden, heads * c["v_head"])
        m.norm(f"{p}.post_attention_layernorm.weight", hidden)
        if layer < DSV3_CONFIG["first_k_dense_replace"]:
            mlps = {f"{p}.mlp": c["intermediate"]}
        else:
            m.bf16(f"{p}.mlp.gate.weight", c["experts"], hidden)  # the router: bf16, as DeepSeek ships it
            m.tensors[f"{p}.mlp.gate.e_score_correction_bias"] = m.normal(c["experts"], std=0.01)  # fp32
            mlps = {f"{p}.mlp.experts.{e}": c["moe_intermediate"] for e in range(c["experts"])}
            mlps[f"{p}.mlp.shared_experts"] = c["moe_intermediate"] * c["shared"]
        for mlp, inter in mlps.items():
            m.fp8_block(f"{mlp}.gate_proj", inter, hidden)
            m.fp8_block(f"{mlp}.up_proj", inter, hidden)
            m.fp8_block(f"{mlp}.down_proj", hidden, inter)
    m.final_norm_and_head(c)
    write_model_dir(HERE / "deepseek-v3-fp8", split_shards(m.tensors, "model.layers.1.input_layernorm.weight"), DSV3_CONFIG)


# ---------------------------------------------------------------------------------------------
# gpt-oss-mxfp4: gpt-oss-20b's published config, shrunk

GPTOSS = dict(vocab=1024, hidden=128, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=32, experts=4)
GPTOSS_CONFIG = {
    "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss",
    "attention_bias": True,
    "attention_dropout": 0.0,
    "eos_token_id": 2,
    "experts_per_token": 2,
    "head_dim": GPTOSS["head_dim"],
    "hidden_act": "silu",
    "hidden_size": GPTOSS["hidden"],
    "initial_context_length": 4096,
    "initializer_range": 0.02,
    "intermediate_size": GPTOSS["intermediate"],
    "layer_types": ["sliding_attention", "full_attention"],
    "max_position_embeddings": 131072,
    "num_attention_heads": GPTOSS["heads"],
    "num_experts_per_tok": 2,
    "num_hidden_layers": GPTOSS["layers"],
    "num_key_value_heads": GPTOSS["kv_heads"],
    "num_local_experts": GPTOSS["experts"],
    "output_router_logits": False,
    "pad_token_id": 0,
    "quantization_config": {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4",
    },
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},  # fmt: skip
    "rope_theta": 150000,
    "router_aux_loss_coef": 0.9,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": GPTOSS["vocab"],
}


def make_gpt_oss_mxfp4() -> None:
    c = GPTOSS
    m = Maker(SEED + 2)
    hidden, inter, experts = c["hidden"], c["intermediate"], c["experts"]
    m.embedding(c)
    for layer, p in m.layer_prefixes(c):
        for proj, rows, cols in attention_projections(c):
            m.bf16(f"{p}.self_attn.{proj}.weight", rows, cols)
            m.bf16(f"{p}.self_attn.{proj}.bias", rows)
        m.bf16(f"{p}.self_attn.sinks", c["heads"], std=1.0)
        m.norm(f"{p}.post_attention_layernorm.weight", hidden)
        m.bf16(f"{p}.mlp.router.weight", experts, hidden)
        m.bf16(f"{p}.mlp.router.bias", experts)
        # On disk [E, out, in]: gate_up's out rows interleave gate (even) and up (odd).
        gate_up = m.normal(experts, 2 * inter, hidden)
        down = m.normal(experts, hidden, inter)
        if layer == 0:
            gate_up = m.spread_exponents(gate_up, 10)
            # Three blocks far below the largest (beyond the 17-exponent lossless span) and one all-zero block.
            for (e, row, block), shift in zip(((0, 3, 1), (1, 100, 0), (3, 255, 3)), (18, 21, 25)):
                gate_up[e, row, block * MX_BLOCK : (block + 1) * MX_BLOCK] *= 2.0**-shift
            gate_up[2, 7, 2 * MX_BLOCK : 3 * MX_BLOCK] = 0.0
            down = m.spread_exponents(down, 6)
        else:
            gate_up, down = m.spread_exponents(gate_up, 10), m.spread_exponents(down, 10)
        m.mxfp4(f"{p}.mlp.experts.gate_up_proj", gate_up)
        m.bf16(f"{p}.mlp.experts.gate_up_proj_bias", experts, 2 * inter)
        m.mxfp4(f"{p}.mlp.experts.down_proj", down)
        m.bf16(f"{p}.mlp.experts.down_proj_bias", experts, hidden)
    m.final_norm_and_head(c)
    write_model_dir(HERE / "gpt-oss-mxfp4", split_shards(m.tensors, "model.layers.1.input_layernorm.weight"), GPTOSS_CONFIG)


# ---------------------------------------------------------------------------------------------
# qwen3-moe: Qwen3-30B-A3B's published config, shrunk

QWEN3 = dict(vocab=VOCAB, hidden=128, moe_intermediate=48, layers=2, heads=4, kv_heads=2, head_dim=32, experts=8)
QWEN3_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "decoder_sparse_step": 1,
    "eos_token_id": 2,
    "head_dim": QWEN3["head_dim"],
    "hidden_act": "silu",
    "hidden_size": QWEN3["hidden"],
    "initializer_range": 0.02,
    "intermediate_size": 3 * QWEN3["hidden"],
    "max_position_embeddings": 4096,
    "max_window_layers": QWEN3["layers"],
    "mlp_only_layers": [],
    "moe_intermediate_size": QWEN3["moe_intermediate"],
    "norm_topk_prob": True,
    "num_attention_heads": QWEN3["heads"],
    "num_experts": QWEN3["experts"],
    "num_experts_per_tok": 2,
    "num_hidden_layers": QWEN3["layers"],
    "num_key_value_heads": QWEN3["kv_heads"],
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": QWEN3["vocab"],
}


def make_qwen3_moe() -> None:
    c = QWEN3
    m = Maker(SEED + 3)
    hidden, inter = c["hidden"], c["moe_intermediate"]
    m.embedding(c)
    for _, p in m.layer_prefixes(c):
        for proj, rows, cols in attention_projections(c):
            m.bf16(f"{p}.self_attn.{proj}.weight", rows, cols)
        m.norm(f"{p}.self_attn.q_norm.weight", c["head_dim"])
        m.norm(f"{p}.self_attn.k_norm.weight", c["head_dim"])
        m.norm(f"{p}.post_attention_layernorm.weight", hidden)
        m.bf16(f"{p}.mlp.gate.weight", c["experts"], hidden)
        for e in range(c["experts"]):
            m.bf16(f"{p}.mlp.experts.{e}.gate_proj.weight", inter, hidden)
            m.bf16(f"{p}.mlp.experts.{e}.up_proj.weight", inter, hidden)
            m.bf16(f"{p}.mlp.experts.{e}.down_proj.weight", hidden, inter)
    m.final_norm_and_head(c)
    write_model_dir(HERE / "qwen3-moe", {"model.safetensors": m.tensors}, QWEN3_CONFIG, with_tokenizer=True)


# ---------------------------------------------------------------------------------------------
# llama-fp8-ct: a Llama as llm-compressor's FP8_DYNAMIC scheme saves it (compressed-tensors 0.20)

CT_LLAMA = dict(vocab=VOCAB, hidden=128, intermediate=352, layers=2, heads=4, kv_heads=2, head_dim=32)
CT_PER_TENSOR = "model.layers.1.self_attn.o_proj"
CT_WEIGHTS = {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "dynamic": False, "actorder": None,
              "block_structure": None, "observer": "minmax", "observer_kwargs": {}}  # fmt: skip
CT_ACTIVATIONS = {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "strategy": "token", "dynamic": True,
                  "actorder": None, "block_structure": None, "observer": None, "observer_kwargs": {}}  # fmt: skip
CT_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": CT_LLAMA["head_dim"],
    "hidden_act": "silu",
    "hidden_size": CT_LLAMA["hidden"],
    "intermediate_size": CT_LLAMA["intermediate"],
    "max_position_embeddings": 256,
    "num_attention_heads": CT_LLAMA["heads"],
    "num_hidden_layers": CT_LLAMA["layers"],
    "num_key_value_heads": CT_LLAMA["kv_heads"],
    # As compressed-tensors' ModelCompressor.update_config writes it (sorted keys). An exact module
    # name outranks a class target wherever it is listed; listing it first also spares the
    # "could not match" warning of compressed-tensors' first-target-wins module scan.
    "quantization_config": {
        "config_groups": {
            "group_0": {"format": "float-quantized", "input_activations": CT_ACTIVATIONS, "output_activations": None, "targets": [CT_PER_TENSOR],
                        "weights": CT_WEIGHTS | {"strategy": "tensor"}},
            "group_1": {"format": "float-quantized", "input_activations": CT_ACTIVATIONS, "output_activations": None, "targets": ["Linear"],
                        "weights": CT_WEIGHTS | {"strategy": "channel"}},
        },
        "format": "float-quantized",
        "global_compression_ratio": None,
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": "0.20.0",
    },  # fmt: skip
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": CT_LLAMA["vocab"],
}


def make_llama_fp8_ct() -> None:
    c = CT_LLAMA
    m = Maker(SEED + 4)
    hidden, inter = c["hidden"], c["intermediate"]
    m.embedding(c)
    for _, p in m.layer_prefixes(c):
        for proj, rows, cols in attention_projections(c):
            m.fp8_channel(f"{p}.self_attn.{proj}", rows, cols, per_tensor=f"{p}.self_attn.{proj}" == CT_PER_TENSOR)
        m.norm(f"{p}.post_attention_layernorm.weight", hidden)
        for proj, rows, cols in (("gate_proj", inter, hidden), ("up_proj", inter, hidden), ("down_proj", hidden, inter)):
            m.fp8_channel(f"{p}.mlp.{proj}", rows, cols)
    m.final_norm_and_head(c)
    write_model_dir(HERE / "llama-fp8-ct", {"model.safetensors": m.tensors}, CT_LLAMA_CONFIG, with_tokenizer=True)


def main() -> None:
    make_tiny_llama()
    make_deepseek_v3_fp8()
    make_gpt_oss_mxfp4()
    make_qwen3_moe()
    make_llama_fp8_ct()


if __name__ == "__main__":
    main()
