"""What tensor names say about a model's structure: which projections serving engines fuse into
one matmul (and so must share one global scale), and which weights stay in high precision by
default. quantize, calibrate and verify all take these rules from here.
"""

from __future__ import annotations

import re

# Projections that serving engines fuse into one matmul, by leaf module name -> the fused name.
# The group is keyed by the parent module and the fused name, so per-expert members
# (experts.7.gate_proj, experts.7.up_proj) and shared experts form groups of their own.
# DeepSeek's MLA q_a_proj and kv_a_proj_with_mqa are one matmul in vLLM (fused_qkv_a_proj).
FUSED_PROJECTIONS = {
    "q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
    "query": "query_key_value", "key": "query_key_value", "value": "query_key_value",
    "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj",
    "w1": "w13", "w3": "w13",
    "q_a_proj": "fused_qkv_a_proj", "kv_a_proj_with_mqa": "fused_qkv_a_proj",
}  # fmt: skip

# Weights left in high precision by default (--include overrides), with the reason reported:
# quality-critical, tiny, or not run as a Linear by the engines (routers, gates of shared experts).
DEFAULT_SKIPS = (
    ("embedding", re.compile(r"embed|(^|\.)(wte|wpe)\.")),
    ("lm_head", re.compile(r"(^|\.)lm_head\.")),
    ("norm", re.compile(r"norm|(^|\.)ln_", re.IGNORECASE)),
    ("MoE router", re.compile(r"(^|\.)(gate|router)\.weight$")),
    ("shared expert gate", re.compile(r"(^|\.)shared_expert_gate\.weight$")),
)


_EXPERT = re.compile(r"\.experts\.\d+\.")


def is_expert(name: str) -> bool:
    """A routed MoE expert's weight ('...mlp.experts.7.up_proj.weight'); shared experts are not."""
    return _EXPERT.search(name) is not None


def module_name(name: str) -> str:
    """'model.layers.0.mlp.up_proj.weight' -> 'model.layers.0.mlp.up_proj'."""
    return name.removesuffix(".weight")


def fused_group_key(name: str) -> str | None:
    """'model.layers.0.self_attn.k_proj.weight' -> 'model.layers.0.self_attn.qkv_proj'; None
    for a weight that no engine fuses with another."""
    parent, _, leaf = module_name(name).rpartition(".")
    fused = FUSED_PROJECTIONS.get(leaf)
    return None if fused is None else f"{parent}.{fused}" if parent else fused


def default_skip_reason(name: str) -> str:
    """Why a weight stays in high precision unless --include names it; "" when it is quantized."""
    for reason, pattern in DEFAULT_SKIPS:
        if pattern.search(name):
            return reason
    return ""


# 3-D expert tensors (gpt-oss, Llama-4: all experts of a layer in one tensor [E, ...]) and the
# per-expert Linear weights engines load instead (docs/moe.md): gate_up_proj holds gate and up.
FUSED_EXPERT_TENSORS = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}
_FUSED_EXPERT_TENSOR = re.compile(r"(?P<prefix>.*\.experts)\.(?P<fused>gate_up_proj|down_proj)(\.weight)?$")
# Models whose gate_up_proj rows alternate gate, up (gpt-oss); others (Llama-4) hold gate then up.
INTERLEAVED_GATE_UP = ("gpt_oss",)


def expert_tensor_parts(name: str) -> tuple[str, tuple[str, ...]] | None:
    """'model.layers.0.mlp.experts.gate_up_proj' -> ('model.layers.0.mlp.experts', ('gate_proj',
    'up_proj')): the experts' prefix and the projections the tensor holds; None for other names."""
    match = _FUSED_EXPERT_TENSOR.fullmatch(name)
    return None if match is None else (match["prefix"], FUSED_EXPERT_TENSORS[match["fused"]])
