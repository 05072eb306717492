"""Checks of an NVFP4 checkpoint from any producer: its tensors, its fused layers, its config, and
what a serving engine will load (docs/verify.md lists every check and its source).

    report = verify(describe("model_dir"), target="vllm")
    report["findings"]  # [{"tensor", "check", "message"}, ...]; empty when clean

The checks are pure functions of a CheckpointView: names, dtypes and shapes from the headers, a
reader for the few small tensors looked at (block scales and global scales, never the packed
codes), config.json and hf_quant_config.json. describe() builds one from a path. Nothing here prints.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import DataError
from .format import BLOCK_SIZE
from .formats import compressed_tensors, modelopt
from .io import CONFIG_NAME, Checkpoint, open_checkpoint, read_json
from .modules import default_skip_reason, fused_group_key
from .names import VERIFY_TARGETS as TARGETS
CHECKS = ("format", "tensors", "fused", "config", "target")
COMPRESSED_TENSORS_FORMAT, MODELOPT_FORMAT = compressed_tensors.NAME, modelopt.NAME
CT_FORMAT_NAME = compressed_tensors.FORMAT_NAME
HF_QUANT_CONFIG_NAME = modelopt.HF_QUANT_CONFIG_NAME
FLOAT_DTYPE_NAMES = ("BF16", "F16", "F32", "F64")
MODELOPT_ALGOS = {"W4A16_NVFP4": False, "NVFP4": True}  # quant_algo -> activations quantized (W4A4)
VLLM_MODELOPT_REQUIRED = ("group_size", "kv_cache_quant_algo", "exclude_modules")  # vLLM raises without them

# Stored names of an NVFP4 module M, per format: M.<suffix>.
ROLES = ("packed", "scales", "global", "input")
SUFFIXES = {
    COMPRESSED_TENSORS_FORMAT: {"packed": "weight_packed", "scales": "weight_scale", "global": "weight_global_scale", "input": "input_global_scale"},
    MODELOPT_FORMAT: {"packed": "weight", "scales": "weight_scale", "global": "weight_scale_2", "input": "input_scale"},
}  # fmt: skip
# Other tensors a quantized module may carry that the engines' loaders map (bias, KV-cache scales).
EXTRA_SUFFIXES = ("bias", "k_scale", "v_scale")
EXPERT = re.compile(r"^(?P<experts>.*\.experts)\.\d+\.(?P<projection>[^.]+)$")

Dtypes = Mapping[str, tuple[str, tuple[int, ...]]]  # stored name -> (safetensors dtype name, shape)


def section(payload: object, key: str) -> dict:
    """payload[key] when both are JSON objects, else {}: configs from other tools may hold anything."""
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, dict) else {}


class Unreadable(DataError):
    """The checkpoint cannot be read at all: verify's 'trouble' (exit 2), not a finding."""

    exit_code = 2


@dataclass(frozen=True)
class Finding:
    tensor: str
    check: str
    message: str


@dataclass(frozen=True)
class CheckpointView:
    """What verify looks at. tensors: every stored tensor's dtype name and shape; read: loads one
    stored tensor; config / hf_quant_config: the JSON files (None when absent); has_directory:
    False for a lone .safetensors file, which carries no config to check."""

    path: str
    tensors: Dtypes
    read: Callable[[str], torch.Tensor] = field(repr=False)
    config: dict | None = None
    hf_quant_config: dict | None = None
    has_directory: bool = True


@dataclass
class Module:
    """A module with NVFP4 tensors: its format and the stored name of each part present."""

    name: str
    fmt: str
    parts: dict[str, str]

    @property
    def weight(self) -> str:
        return f"{self.name}.weight"

    def expected(self, role: str) -> str:
        return f"{self.name}.{SUFFIXES[self.fmt][role]}"


# ---- reading a checkpoint ---------------------------------------------------------------------


def view_of(checkpoint: Checkpoint) -> CheckpointView:
    """The CheckpointView of an open checkpoint (headers only; the JSON files are read here)."""

    def read(name: str) -> torch.Tensor:
        try:
            return checkpoint.read(name)
        except DataError as exc:
            raise Unreadable(str(exc)) from None

    def side_file(name: str) -> dict | None:
        path = checkpoint.directory / name
        try:
            return read_json(path) if path.is_file() else None
        except DataError as exc:
            raise Unreadable(str(exc)) from None

    directory = checkpoint.directory
    return CheckpointView(
        path=str(checkpoint.path),
        tensors={name: (spec.dtype, spec.shape) for name, spec in checkpoint.specs.items()},
        read=read,
        config=side_file(CONFIG_NAME) if directory is not None else None,
        hf_quant_config=side_file(HF_QUANT_CONFIG_NAME) if directory is not None else None,
        has_directory=directory is not None,
    )


def describe(path: str | Path) -> CheckpointView:
    """A CheckpointView of a .safetensors file, an index or a model directory; Unreadable
    (exit 2) when it cannot be opened."""
    try:
        return view_of(open_checkpoint(path))
    except DataError as exc:
        raise Unreadable(str(exc)) from None


# ---- which tensors form which NVFP4 weights --------------------------------------------------


def _declared_format(view: CheckpointView) -> str | None:
    method = str(section(view.config, "quantization_config").get("quant_method", "")).lower()
    if method == "compressed-tensors":
        return COMPRESSED_TENSORS_FORMAT
    if method.startswith("modelopt") or view.hf_quant_config is not None:
        return MODELOPT_FORMAT
    return None


def _module_format(module: str, tensors: Dtypes) -> str | None:
    """The format a module's own names say, or None when they say nothing NVFP4."""
    if f"{module}.weight_packed" in tensors or f"{module}.weight_global_scale" in tensors:
        return COMPRESSED_TENSORS_FORMAT
    if f"{module}.weight_scale_2" in tensors or tensors.get(f"{module}.weight", ("",))[0] == "U8":
        return MODELOPT_FORMAT
    if tensors.get(f"{module}.weight_scale", ("",))[0] == "F8_E4M3":
        return ""  # block scales alone: the checkpoint's format decides
    return None


def find_modules(view: CheckpointView) -> tuple[str | None, dict[str, Module]]:
    """(the checkpoint's format, its NVFP4 modules by name). The format comes from the config,
    else from the names most modules use; None when nothing is NVFP4."""
    formats: dict[str, str] = {}
    for name in view.tensors:
        module = name.rpartition(".")[0]
        if module not in formats:
            fmt = _module_format(module, view.tensors)
            if fmt is not None:
                formats[module] = fmt
    declared = _declared_format(view)
    named = [fmt for fmt in formats.values() if fmt]
    fmt = declared or (max(set(named), key=named.count) if named else COMPRESSED_TENSORS_FORMAT if formats else None)
    modules = {}
    for module, own in formats.items():
        own = own or fmt
        parts = {role: f"{module}.{suffix}" for role, suffix in SUFFIXES[own].items() if f"{module}.{suffix}" in view.tensors}
        modules[module] = Module(module, own, parts)
    return fmt, modules


def float_weights(view: CheckpointView, modules: Mapping[str, Module]) -> list[str]:
    """Stored float `*.weight` tensors of 2 or more dims (the Linear-like ones of a module
    that is not NVFP4); FP8 or integer weights belong to another quantization scheme."""
    return [
        name
        for name, (dtype, shape) in view.tensors.items()
        if name.endswith(".weight") and len(shape) >= 2 and name.removesuffix(".weight") not in modules and dtype in FLOAT_DTYPE_NAMES
    ]


# ---- the checks ------------------------------------------------------------------------------


def _e4m3_problems(scales: torch.Tensor) -> str:
    raw = scales.view(torch.uint8)
    nans = int(((raw & 0x7F) == 0x7F).sum())  # E4M3FN's only NaN encodings
    negative = int(((raw & 0x80) != 0).logical_and((raw & 0x7F) != 0).sum())
    problems = [f"{nans} NaN"] if nans else []
    problems += [f"{negative} negative"] if negative else []
    return " and ".join(problems)


def _global_value(module: Module, read: Callable[[str], torch.Tensor]) -> float:
    return float(read(module.parts["global"]).reshape(-1)[0])


def check_tensors(view: CheckpointView, fmt: str | None, modules: Mapping[str, Module]) -> Iterator[Finding]:
    """Each NVFP4 weight: all parts present, right dtypes and shapes, block scales finite and
    non-negative, one finite positive global scale whose reciprocal is finite too."""
    for module in modules.values():
        if fmt is not None and module.fmt != fmt:
            yield Finding(module.weight, "tensors", f"stored with {module.fmt} names in a {fmt} checkpoint")
        missing = [module.expected(role) for role in ("packed", "scales", "global") if role not in module.parts]
        if missing:
            yield Finding(module.weight, "tensors", f"NVFP4 weight without {' and '.join(missing)}")
            continue
        if module.fmt == COMPRESSED_TENSORS_FORMAT and module.weight in view.tensors:
            yield Finding(module.weight, "tensors", f"stored both in float ({module.weight}) and as NVFP4")
        yield from _check_layout(view, module)


def _check_layout(view: CheckpointView, module: Module) -> Iterator[Finding]:
    (packed_dtype, packed), (scales_dtype, scales), (global_dtype, global_shape) = (view.tensors[module.parts[role]] for role in ("packed", "scales", "global"))
    wanted = {"packed": ("U8", packed_dtype), "scales": ("F8_E4M3", scales_dtype), "global": ("F32", global_dtype)}
    wrong = [f"{module.parts[role]} is {got}, not {want}" for role, (want, got) in wanted.items() if got != want]
    if "input" in module.parts and view.tensors[module.parts["input"]][0] != "F32":
        wrong.append(f"{module.parts['input']} is {view.tensors[module.parts['input']][0]}, not F32")
    if wrong:
        yield Finding(module.weight, "tensors", "; ".join(wrong))
        return
    if not packed or len(packed) != len(scales) or packed[:-1] != scales[:-1] or packed[-1] * 2 != scales[-1] * BLOCK_SIZE:
        yield Finding(module.parts["packed"], "tensors", f"packed shape {list(packed)} does not match block scales {list(scales)}: want [..., K/2] codes and [..., K/16] scales")
        return
    if math.prod(global_shape) != 1:
        yield Finding(module.parts["global"], "tensors", f"global scale has shape {list(global_shape)}; want one value")
        return
    problems = _e4m3_problems(view.read(module.parts["scales"]))
    if problems:
        yield Finding(module.parts["scales"], "tensors", f"{problems} block scale(s); block scales must be finite and non-negative")
    for role in ("global", "input"):
        if role in module.parts:
            value = float(view.read(module.parts[role]).reshape(-1)[0])
            if not (math.isfinite(value) and value > 0 and math.isfinite(1.0 / value)):
                yield Finding(module.parts[role], "tensors", f"holds {value}; a {'global' if role == 'global' else 'input'} scale must be finite and positive, with a finite reciprocal")


def _healthy_global(view: CheckpointView, module: Module) -> float | None:
    """The stored global scale when the module's parts are all there and it is usable."""
    if any(role not in module.parts for role in ("packed", "scales", "global")) or view.tensors[module.parts["global"]][0] != "F32":
        return None
    if math.prod(view.tensors[module.parts["global"]][1]) != 1:
        return None
    value = _global_value(module, view.read)
    return value if math.isfinite(value) and value > 0 and math.isfinite(1.0 / value) else None


def fused_groups(weights: list[str]) -> dict[str, list[str]]:
    """Logical weight names by fused group (modules.fused_group_key), groups of 2 or more."""
    groups: dict[str, list[str]] = {}
    for name in weights:
        key = fused_group_key(name)
        if key is not None:
            groups.setdefault(key, []).append(name)
    return {key: names for key, names in groups.items() if len(names) > 1}


def _leaf(name: str) -> str:
    return name.removesuffix(".weight").rpartition(".")[2]


def _input_width(view: CheckpointView, module: Module | None, name: str) -> int | None:
    """A weight's input width K (packed codes hold K/2 a row); None when its layout is broken."""
    if module is None:
        return view.tensors[name][1][-1]
    if "packed" not in module.parts or not view.tensors[module.parts["packed"]][1]:
        return None
    return view.tensors[module.parts["packed"]][1][-1] * 2


def check_fused(view: CheckpointView, modules: Mapping[str, Module], floats: list[str]) -> Iterator[Finding]:
    """Members of one fused matmul (q/k/v, gate/up, w1/w3 per expert and shared expert, MLA
    q_a/kv_a): all NVFP4 or none, and one global scale for all."""
    quantized = {module.weight: module for module in modules.values()}
    for key, members in fused_groups([*quantized, *floats]).items():
        widths = {name: _input_width(view, quantized.get(name), name) for name in members}
        if len({width for width in widths.values() if width is not None}) > 1:
            listed = ", ".join(f"{_leaf(name)} {width}" for name, width in widths.items() if width is not None)
            yield Finding(key, "fused", f"members take inputs of different widths ({listed}); a fused matmul has one input")
            continue
        in_float = [name for name in members if name not in quantized]
        if in_float and len(in_float) < len(members):
            nvfp4 = ", ".join(_leaf(name) for name in members if name in quantized)
            for name in in_float:
                yield Finding(name, "fused", f"stored in float while {nvfp4} of the same fused layer {key} are NVFP4; engines run the group as one matmul with one scheme (nvfp4 convert --fix quantizes it with the group's scale)")
            continue
        values = {name: _healthy_global(view, quantized[name]) for name in members if name in quantized}
        known = {name: value for name, value in values.items() if value is not None}
        if len(set(known.values())) > 1:
            listed = ", ".join(f"{_leaf(name)} {value:.9g}" for name, value in known.items())
            spread = max(known.values()) / min(known.values())
            yield Finding(key, "fused", f"members have different global scales ({listed}; {spread:.3g}x apart); engines use one scale for the fused matmul and mis-scale the others (nvfp4 convert --fix repairs this)")
        inputs = {name: float(view.read(quantized[name].parts["input"]).reshape(-1)[0]) for name in members if name in quantized and "input" in quantized[name].parts}
        if len(set(inputs.values())) > 1:
            listed = ", ".join(f"{_leaf(name)} {value:.9g}" for name, value in inputs.items())
            yield Finding(key, "fused", f"members have different activation scales ({listed}); the fused matmul quantizes its one input with one scale (vLLM takes the largest; nvfp4 convert --fix repairs this)")


def _bad_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return True
    return False


def _matches_ct(module: str, entries: list) -> bool:
    """compressed-tensors' rule (vLLM's check_equal_or_regex_match): equal, or re.match for 're:'
    (an invalid regex matches nothing; it is reported on its own)."""
    return any(isinstance(entry, str) and (not _bad_regex(entry[3:]) and re.match(entry[3:], module) is not None if entry.startswith("re:") else entry == module) for entry in entries)


def _matches_modelopt(module: str, entries: list) -> bool:
    """ModelOpt's exclude_modules: equal or an fnmatch wildcard (vLLM's is_layer_excluded)."""
    return any(isinstance(entry, str) and (entry == module or fnmatch.fnmatchcase(module, entry)) for entry in entries)


def _ct_targets_module(module: str, targets: list) -> bool:
    """Whether a config group's targets match a module: the class name Linear (any Linear-like
    weight; an embedding is an Embedding), a 're:' regex or the exact name."""
    for target in targets:
        if not isinstance(target, str):
            continue
        if target == "Linear" and default_skip_reason(f"{module}.weight") != "embedding":
            return True
        if (target.startswith("re:") and not _bad_regex(target[3:]) and re.match(target[3:], module)) or target == module:
            return True
    return False


def _check_ignore(modules: Mapping[str, Module], floats: list[str], entries: list, matches: Callable[[str, list], bool], key: str, quantized_by_default: Callable[[str], bool]) -> Iterator[Finding]:
    for module in modules:
        if matches(module, entries):
            yield Finding(f"{module}.weight", "config", f"listed in {key} but stored as NVFP4; loaders build it unquantized and have no parameter for its NVFP4 tensors")
    for name in floats:
        module = name.removesuffix(".weight")
        if default_skip_reason(name) == "embedding" or matches(module, entries) or not quantized_by_default(module):
            continue
        yield Finding(name, "config", f"stored in float but not in {key}; loaders expect NVFP4 tensors for {module}")


def _weight_args_problems(group: str, weights: dict) -> list[str]:
    wanted = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": BLOCK_SIZE, "symmetric": True}
    return [f"{group}: weights {key} is {weights.get(key)!r}, NVFP4 needs {value!r}" for key, value in wanted.items() if weights.get(key) != value]


def _is_fp4_args(args: object) -> bool:
    return isinstance(args, dict) and args.get("num_bits") == 4 and args.get("type") == "float"


def _input_scales_needed(modules: Mapping[str, Module], reason: str) -> Iterator[Finding]:
    for module in modules.values():
        if "input" not in module.parts:
            yield Finding(module.weight, "config", f"{reason}, but {module.expected('input')} is missing")


def check_config_ct(view: CheckpointView, modules: Mapping[str, Module], floats: list[str]) -> Iterator[Finding]:
    config = view.config
    if config is None:
        yield Finding("config.json", "config", "no config.json beside the weights: loaders cannot tell they are NVFP4")
        return
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        yield Finding("config.json", "config", "no quantization_config: loaders read the NVFP4 tensors as float weights")
        return
    if qc.get("quant_method") != "compressed-tensors":
        yield Finding("config.json", "config", f"quant_method is {qc.get('quant_method')!r}; compressed-tensors names need 'compressed-tensors'")
    if qc.get("quantization_status", "compressed") != "compressed":
        yield Finding("config.json", "config", f"quantization_status is {qc.get('quantization_status')!r}; stored NVFP4 tensors need 'compressed'")
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        yield Finding("config.json", "config", "quantization_config has no config_groups: no layer is declared NVFP4")
        return
    targets: list = []
    w4a4 = False
    for group_name, group in groups.items():
        if not isinstance(group, dict) or not _is_fp4_args(group.get("weights")):
            continue
        group_format = group.get("format") or qc.get("format")
        if group_format != CT_FORMAT_NAME:
            yield Finding("config.json", "config", f"{group_name}: format is {group_format!r}; NVFP4 weights need {CT_FORMAT_NAME!r}")
        for problem in _weight_args_problems(group_name, group["weights"]):
            yield Finding("config.json", "config", problem)
        group_targets = group.get("targets") or []
        targets += group_targets if isinstance(group_targets, list) else [group_targets]
        w4a4 = w4a4 or _is_fp4_args(group.get("input_activations"))
    if not targets:
        yield Finding("config.json", "config", "no config group quantizes weights to NVFP4 (num_bits 4, type float)")
        return
    entries = qc.get("ignore") or []
    if not isinstance(entries, list):
        yield Finding("config.json", "config", f"ignore is {entries!r}, not a list of module names")
        entries = []
    for entry in entries:
        if isinstance(entry, str) and entry.startswith("re:") and _bad_regex(entry[3:]):
            yield Finding("config.json", "config", f"ignore entry {entry!r} is not a valid regular expression (loaders fail on it)")
    yield from _check_ignore(modules, floats, entries, _matches_ct, "ignore", lambda module: _ct_targets_module(module, targets))
    for module in modules.values():
        if not _ct_targets_module(module.name, targets) and not _matches_ct(module.name, entries):
            yield Finding(module.weight, "config", f"NVFP4 but no config group targets it (targets {targets}); loaders leave {module.name} unquantized and have no parameter for its NVFP4 tensors")
    if w4a4:
        yield from _input_scales_needed(modules, "config quantizes input activations to NVFP4 (W4A4)")
    else:
        for module in modules.values():
            if "input" in module.parts:
                yield Finding(module.parts["input"], "config", "input scale stored but no config group quantizes input activations")


def check_config_modelopt(view: CheckpointView, modules: Mapping[str, Module], floats: list[str]) -> Iterator[Finding]:
    hf = view.hf_quant_config
    qc = section(view.config, "quantization_config") or None
    if hf is None and qc is None:
        yield Finding(HF_QUANT_CONFIG_NAME, "config", "neither hf_quant_config.json nor config.json's quantization_config: loaders cannot tell the weights are NVFP4")
        return
    sources = []
    if hf is not None:
        quantization = section(hf, "quantization")
        if not quantization:
            yield Finding(HF_QUANT_CONFIG_NAME, "config", "no 'quantization' section")
        else:
            missing = [key for key in VLLM_MODELOPT_REQUIRED if key not in quantization]
            if missing:
                yield Finding(HF_QUANT_CONFIG_NAME, "config", f"quantization lacks {', '.join(missing)} (vLLM refuses NVFP4 without them)")
            sources.append((HF_QUANT_CONFIG_NAME, quantization, "exclude_modules"))
    if qc is not None:
        if not str(qc.get("quant_method", "")).lower().startswith("modelopt"):
            yield Finding("config.json", "config", f"quantization_config's quant_method is {qc.get('quant_method')!r}; ModelOpt names need 'modelopt'")
        sources.append(("config.json", qc, "ignore"))
    algos = set()
    for file, values, _ in sources:
        algo = str(values.get("quant_algo", "")).upper()
        algos.add(algo)
        if algo not in MODELOPT_ALGOS:
            yield Finding(file, "config", f"quant_algo is {values.get('quant_algo')!r}; NVFP4 weights need one of {', '.join(MODELOPT_ALGOS)}")
        if values.get("group_size", BLOCK_SIZE) != BLOCK_SIZE:
            yield Finding(file, "config", f"group_size is {values.get('group_size')!r}; NVFP4 needs {BLOCK_SIZE}")
    if len(algos) > 1:
        yield Finding("config.json", "config", f"hf_quant_config.json and config.json disagree on quant_algo ({', '.join(sorted(algos))})")
    # vLLM reads hf_quant_config.json first; its exclude list is the one that counts.
    if not sources:
        return
    file, values, list_key = sources[0]
    entries = values.get(list_key) or []
    if not isinstance(entries, list):
        yield Finding(file, "config", f"{list_key} is not a list")
        entries = []
    yield from _check_ignore(modules, floats, entries, _matches_modelopt, list_key, lambda module: True)
    if any(MODELOPT_ALGOS.get(algo) for algo in algos):
        yield from _input_scales_needed(modules, "quant_algo NVFP4 quantizes input activations (W4A4)")


def check_config(view: CheckpointView, fmt: str, modules: Mapping[str, Module], floats: list[str]) -> Iterator[Finding]:
    """config.json / hf_quant_config.json: format names, group size 16, the ignore / exclude
    list agreeing with which weights are NVFP4, input scales for W4A4. A lone file has no
    config and is not checked."""
    if not view.has_directory:
        return
    declared, named = _declared_format(view), sorted({module.fmt for module in modules.values()})
    if declared is not None and declared not in named:
        yield Finding("config.json", "config", f"the config declares {declared} but the tensors use {', '.join(named)} names")
        return
    yield from (check_config_ct if fmt == COMPRESSED_TENSORS_FORMAT else check_config_modelopt)(view, modules, floats)


def check_target(view: CheckpointView, fmt: str, modules: Mapping[str, Module], target: str) -> Iterator[Finding]:
    """What the target engine's loader does with these names (docs/verify.md has the sources)."""
    if target == "transformers" and fmt == MODELOPT_FORMAT:
        yield Finding("config.json", "target", "transformers does not load ModelOpt NVFP4 checkpoints (it ignores the config); convert to compressed-tensors")
    elif target == "transformers":
        yield from _check_expert_scales_for_transformers(view, modules)
    if target == "trtllm":
        if fmt == COMPRESSED_TENSORS_FORMAT:
            yield Finding("config.json", "target", "TensorRT-LLM loads ModelOpt checkpoints (hf_quant_config.json); convert to modelopt")
        elif view.has_directory:
            algo = str(section(view.hf_quant_config, "quantization").get("quant_algo") or section(view.config, "quantization_config").get("quant_algo", "")).upper()
            if algo and algo != "NVFP4":
                yield Finding(HF_QUANT_CONFIG_NAME if view.hf_quant_config is not None else "config.json", "target", f"quant_algo {algo} is not one of TensorRT-LLM's QuantAlgo values; it runs NVFP4 as W4A4 (quant_algo NVFP4, with input scales)")
    if target != "vllm":
        return
    nvfp4_embed = bool(section(view.hf_quant_config, "quantization").get("nvfp4_embed"))
    for module in modules.values():
        reason = default_skip_reason(module.weight)
        if reason in ("MoE router", "shared expert gate"):
            yield Finding(module.weight, "target", f"{reason} is NVFP4; vLLM builds it unquantized (e.g. Qwen3-MoE's gate: ReplicatedLinear with quant_config=None) and cannot load {module.parts.get('packed', module.weight)}")
        elif reason == "embedding" and not (fmt == MODELOPT_FORMAT and nvfp4_embed):
            yield Finding(module.weight, "target", "embedding is NVFP4; vLLM quantizes Linear and MoE layers, not embeddings" + (" (ModelOpt: only with nvfp4_embed)" if fmt == MODELOPT_FORMAT else ""))
        elif reason == "lm_head" and fmt == COMPRESSED_TENSORS_FORMAT:
            yield Finding(module.weight, "target", "lm_head is NVFP4; vLLM's compressed-tensors config quantizes LinearBase layers only and ParallelLMHead is not one, so lm_head.weight_packed is not mapped")
        known = {f"{module.name}.{suffix}" for suffix in (*SUFFIXES[module.fmt].values(), *EXTRA_SUFFIXES)}
        for name in view.tensors:
            if name.rpartition(".")[0] == module.name and name not in known:
                yield Finding(name, "target", f"vLLM's {module.fmt} NVFP4 layers have no parameter {name.rpartition('.')[2]!r}; the loader cannot map it")
    yield from _check_experts(view, modules)


def _check_expert_scales_for_transformers(view: CheckpointView, modules: Mapping[str, Module]) -> Iterator[Finding]:
    """transformers 5.x merges per-expert NVFP4 experts into its fused expert tensors and
    dequantizes each without its weight_global_scale (docs/moe.md section 2): only experts whose
    global scale is 1 load right."""
    by_layer: dict[str, list[tuple[str, float]]] = {}
    for module in modules.values():
        match = EXPERT.match(module.name)
        value = _healthy_global(view, module) if match else None
        if value is not None:
            by_layer.setdefault(match["experts"], []).append((module.name, value))
    for experts, scales in by_layer.items():
        off = [(name, value) for name, value in scales if value != 1.0]
        if off:
            yield Finding(experts, "target", f"{len(off)} of {len(scales)} expert projections have a global scale other than 1 (e.g. {off[0][0]}: {off[0][1]:.9g}); transformers 5.x dequantizes per-expert NVFP4 experts without it (docs/moe.md): quantize with --experts-unit-scale, or dequantize")


def _check_experts(view: CheckpointView, modules: Mapping[str, Module]) -> Iterator[Finding]:
    """vLLM stacks a layer's experts into one FusedMoE with one scheme: all NVFP4 or none, and
    each projection of the same shape in every expert."""
    by_layer: dict[str, dict[str, bool]] = {}
    for name, (_, shape) in view.tensors.items():
        module = name.rpartition(".")[0]
        match = EXPERT.match(module)
        if match and (module in modules or (name.endswith(".weight") and len(shape) >= 2)):
            by_layer.setdefault(match["experts"], {})[module] = module in modules
    for experts, quantized in by_layer.items():
        if 0 < sum(quantized.values()) < len(quantized):
            floats = sorted(module for module, is_nvfp4 in quantized.items() if not is_nvfp4)
            yield Finding(experts, "target", f"{len(floats)} of {len(quantized)} expert projections are float (e.g. {floats[0]}); vLLM's FusedMoE takes one scheme for all experts")
            continue
        shapes: dict[str, dict[tuple[int, ...], str]] = {}
        for module in quantized:
            if module in modules and "packed" in modules[module].parts:
                shape = view.tensors[modules[module].parts["packed"]][1]
                shapes.setdefault(EXPERT.match(module)["projection"], {}).setdefault(shape, module)
        for projection, seen in shapes.items():
            if len(seen) > 1:
                listed = ", ".join(f"{module} {list(shape)}" for shape, module in seen.items())
                yield Finding(f"{experts}.*.{projection}", "target", f"experts' {projection} differ in shape ({listed}); vLLM's FusedMoE stacks them into one tensor")


def verify(view: CheckpointView, target: str = "vllm") -> dict:
    """Every check; returns {"path", "format", "target", "findings", "summary"}."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    fmt, modules = find_modules(view)
    floats = float_weights(view, modules)
    findings: list[Finding] = []
    if fmt is None:
        findings.append(Finding(view.path, "format", "no NVFP4 weights (neither compressed-tensors nor ModelOpt names)"))
    elif not modules:
        findings.append(Finding(view.path, "format", f"the config declares {fmt} NVFP4 but no weight is stored as NVFP4"))
    else:
        findings += check_tensors(view, fmt, modules)
        findings += check_fused(view, modules, floats)
        findings += check_config(view, fmt, modules, floats)
        findings += check_target(view, fmt, modules, target)
    by_check = {check: sum(finding.check == check for finding in findings) for check in CHECKS}
    return {
        "path": view.path,
        "format": fmt,
        "target": target,
        "findings": [asdict(finding) for finding in findings],
        "summary": {
            "tensors": len(view.tensors),
            "nvfp4_weights": len(modules),
            "float_weights": len(floats),
            "fused_groups": len(fused_groups([*(module.weight for module in modules.values()), *floats])),
            "config_checked": view.has_directory,
            "findings": len(findings),
            "by_check": {check: count for check, count in by_check.items() if count},
        },
    }
