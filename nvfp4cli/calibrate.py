"""Activation calibration for W4A4 (docs/format.md §10): each quantized Linear's input amax, measured
on the float model one decoder layer (or encoder block) at a time.

    samples = read_samples("calibration.txt", limit=512)
    result = calibrate("model_dir", samples, seq_len=2048)
    tensors = input_scale_tensors(result.amax, "compressed-tensors")

The model is built from config.json with transformers, its parameters on the meta device (no
memory). The modules before the layers (embeddings) run first and the arguments of every layer's
call are caught; then each layer in turn gets only its own weights from the safetensors files, runs
on the hidden states of all samples, and is emptied again; last the modules after the layers
(final norm, pooler, lm_head) run on the final hidden states. So memory holds one layer's weights
and the hidden states, never the model. Forward pre-hooks on every nn.Linear record max |input|.
Nothing here prints; progress goes to a callback.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import inspect
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .errors import DataError, UsageError, one_line
from .formats.compressed_tensors import NAME as COMPRESSED_TENSORS_FORMAT
from .formats.modelopt import NAME as MODELOPT_FORMAT
from .io import TensorSpec, open_checkpoint
from .modules import fused_group_key, module_name

Progress = Callable[[int, int], None]  # (layers done, layers in all)

FP4_MAX, FP8_MAX = 6.0, 448.0
# The weight rule's floor (docs/format.md §2: pts >= 2**-120) applied to activations: an input that
# is all zeros gets finite scales (2**120) instead of an infinite global scale.
MIN_AMAX = 2688.0 * 2.0**-120


# ---- calibration samples ---------------------------------------------------------------------


def read_samples(path: str | Path, limit: int) -> list[str]:
    """At most `limit` samples from a text file (one per non-empty line) or JSONL (a "text"
    string per line; a .jsonl name, or every non-empty line a JSON object). Empty texts are
    skipped in both."""
    path = Path(path)
    if limit < 1:
        raise UsageError(f"the number of calibration samples must be at least 1, not {limit}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a text or JSONL file") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: no calibration samples (the file is empty)")
    if path.suffix == ".jsonl" or all(_json_object(line) is not None for _, line in numbered):
        texts = (_jsonl_text(path, number, line) for number, line in numbered)
    else:
        texts = (line for _, line in numbered)
    samples = []
    for text in texts:
        if text.strip():
            samples.append(text)
            if len(samples) == limit:
                break
    if not samples:
        raise DataError(f"{path}: no calibration samples (every \"text\" is empty)")
    return samples


def _json_object(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _jsonl_text(path: Path, number: int, line: str) -> str:
    record = _json_object(line)
    if record is None:
        raise DataError(f"{path}:{number}: not a JSON object")
    text = record.get("text")
    if not isinstance(text, str):
        raise DataError(f"{path}:{number}: no \"text\" string field")
    return text


# ---- scales ----------------------------------------------------------------------------------


def _fp32(value: float) -> torch.Tensor:
    return torch.tensor(max(value, MIN_AMAX), dtype=torch.float32)


def activation_global_scale(amax: float) -> torch.Tensor:
    """compressed-tensors' input_global_scale, fp32 0-d: 2688 / amax as one IEEE fp32 division
    (as compressed-tensors' generate_gparam computes it)."""
    return torch.tensor(FP8_MAX * FP4_MAX, dtype=torch.float32) / _fp32(amax)


def activation_input_scale(amax: float) -> torch.Tensor:
    """ModelOpt's input_scale, fp32 0-d: amax / 2688."""
    return _fp32(amax) / torch.tensor(FP8_MAX * FP4_MAX, dtype=torch.float32)


def shared_amax(amax: dict[str, float]) -> dict[str, float]:
    """amax with the members of each fused group (q/k/v, gate/up, MLA q_a/kv_a) set to the
    group's largest: the engines run a fused group as one matmul with one input scale."""
    largest: dict[str, float] = {}
    for name, value in amax.items():
        key = fused_group_key(name)
        if key is not None:
            largest[key] = max(largest.get(key, value), value)
    return {name: largest.get(fused_group_key(name) or "", value) for name, value in amax.items()}


def input_scale_tensors(amax_by_module: dict[str, float], fmt: str) -> dict[str, torch.Tensor]:
    """The tensors to add to a W4A4 output, fused groups sharing their largest amax:
    compressed-tensors `<module>.input_global_scale` fp32 [1] = 2688 / amax, ModelOpt
    `<module>.input_scale` fp32 0-d = amax / 2688."""
    shared = shared_amax(amax_by_module)
    if fmt == COMPRESSED_TENSORS_FORMAT:
        return {f"{name}.input_global_scale": activation_global_scale(value).reshape(1) for name, value in shared.items()}
    if fmt == MODELOPT_FORMAT:
        return {f"{name}.input_scale": activation_input_scale(value) for name, value in shared.items()}
    raise UsageError(f"unknown output format {fmt!r}: expected {COMPRESSED_TENSORS_FORMAT} or {MODELOPT_FORMAT}")


def input_scale_specs(modules: list[str], fmt: str) -> tuple[TensorSpec, ...]:
    """What input_scale_tensors writes for these modules, for a plan made before the values."""
    return tuple(TensorSpec.of(name, tensor.dtype, tuple(tensor.shape)) for name, tensor in input_scale_tensors(dict.fromkeys(modules, 1.0), fmt).items())


# ---- calibration -----------------------------------------------------------------------------


@dataclass
class Calibration:
    """amax: max |input| of each Linear by its module name in the checkpoint (its weight's name
    without ".weight"). unreached_experts: MoE expert modules no calibration token was routed
    to; their amax is their layer's largest of the same projection."""

    amax: dict[str, float]
    samples: int
    tokens: int
    seconds_per_layer: dict[str, float]
    unreached_experts: list[str] = field(default_factory=list)

    def report(self) -> dict:
        """Everything but amax, for --json and the summary."""
        return {key: value for key, value in asdict(self).items() if key != "amax"}


def calibrate(model_dir: str | Path, samples: list[str], *, seq_len: int = 2048, device: str = "cpu", progress: Progress | None = None) -> Calibration:
    """Each Linear's input amax over the samples, each tokenized alone (special tokens added,
    truncated to seq_len) and run alone (no padding), in fp32 on `device`."""
    transformers = _import_transformers()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir}: calibration needs a model directory (config.json, tokenizer, safetensors)")
    if seq_len < 1:
        raise UsageError(f"--seq-len must be at least 1, not {seq_len}")
    device = _check_device(device)
    config, tokenizer = _load_config_and_tokenizer(transformers, model_dir)
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    model = _build_on_meta(transformers, config, architecture, model_dir)
    layers_path, layers = _find_layers(model, config, architecture)
    transforms = _weight_transforms(model)
    experts = _unfuse_experts(model, transforms, architecture)
    weights = _Weights(model_dir, model, architecture, transforms)
    encodings = _tokenize(tokenizer, samples, seq_len, device)
    if not encodings:
        raise DataError(f"{model_dir}: the tokenizer gives no tokens for any calibration sample")
    for module in model.modules():
        for name, buffer in module._buffers.items():  # real tensors, built by __init__ on the CPU
            if buffer is not None:
                module._buffers[name] = buffer.to(device)

    recorder = _AmaxRecorder(model, weights)
    seconds: dict[str, float] = {}
    with torch.no_grad(), recorder, weights.loaded_on_call(model, layers, device):
        hidden, calls = _catch_layer_calls(model, layers, encodings)
        for index, layer in enumerate(layers):
            start = time.perf_counter()
            with weights.loaded(layer, f"{layers_path}.{index}", device):
                for sample, (args, kwargs) in enumerate(calls):
                    output = layer(hidden[sample], *args[index], **kwargs[index])
                    hidden[sample] = output[0] if isinstance(output, tuple) else output
            seconds[f"{layers_path}.{index}"] = round(time.perf_counter() - start, 6)
            if progress is not None:
                progress(index + 1, len(layers))
        recorder.after_layers()
        _run_after_layers(model, layers, encodings, hidden)
    amax = recorder.amax()
    unreached = _fill_unreached_experts(amax, experts, recorder.keys)
    bad = next((name for name, value in amax.items() if not math.isfinite(value)), None)
    if bad is not None:
        raise DataError(f"{model_dir}: the input of {bad!r} is not finite ({amax[bad]}) on the calibration samples")
    tokens = sum(int(encoding["input_ids"].numel()) for encoding in encodings)
    return Calibration(amax, len(encodings), tokens, seconds, unreached)


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("calibration runs the model with transformers: pip install transformers") from None
    return transformers


def _check_device(device: str) -> torch.device:
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}: expected cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available")
    return resolved


def _load_config_and_tokenizer(transformers, model_dir: Path):
    # Nothing is downloaded: config, tokenizer and weights all come from model_dir.
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{model_dir}: cannot read config.json ({one_line(str(exc))})") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{model_dir}: cannot load the model's tokenizer ({one_line(str(exc))})") from None
    if hasattr(config, "use_cache"):
        config.use_cache = False  # each layer runs once per sample: no KV cache
    return config, tokenizer


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters registered in the block go to the meta device (no memory, and their random
    init is skipped); buffers stay real: rotary frequencies and position ids are computed in
    __init__ and are in no checkpoint."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, None if param is None else nn.Parameter(param.to("meta"), requires_grad=False))

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _build_on_meta(transformers, config, architecture: str, model_dir: Path) -> nn.Module:
    model_class = getattr(transformers, architecture, None)
    if not (isinstance(model_class, type) and issubclass(model_class, nn.Module)):
        raise UsageError(f"{model_dir}: calibration does not support architecture {architecture} (not a transformers model class)")
    with _parameters_on_meta():
        model = model_class(config)
    return model.eval()


def _weight_transforms(model: nn.Module) -> list:
    """transformers' renamings and conversions between checkpoint names and the model's (its
    loader applies them; a private API, so none when it is missing)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping

        return list(get_model_conversion_mapping(model))
    except (ImportError, AttributeError, TypeError, KeyError):
        return []


def _plain_patterns(patterns) -> list[str]:
    """Patterns that are plain name parts (letters, digits, _ and .), the rest being regexes."""
    return [pattern for pattern in patterns if re.fullmatch(r"[\w.]+", pattern)]


def _reverse_renamings(transforms: list) -> list[tuple[str, str]]:
    """(model name part, checkpoint name part) of the plain renamings ('.block_sparse_moe.' on
    file is '.mlp.' in Mixtral's model)."""
    pairs = []
    for transform in transforms:
        if type(transform).__name__ == "WeightRenaming":
            sources, targets = _plain_patterns(transform.source_patterns), _plain_patterns(transform.target_patterns)
            if len(sources) == len(targets) == 1:
                pairs.append((targets[0], sources[0]))
    return pairs


EXPERT_LEAVES = ("gate_proj", "up_proj", "down_proj")


def _expert_leaves(transforms: list) -> tuple[str, str, str]:
    """Checkpoint names of an expert's gate, up and down projections ('w1', 'w3', 'w2' in
    Mixtral), from the conversions that stack them into gate_up_proj and down_proj."""
    leaves = dict(zip(("gate_up_proj", "down_proj"), ([], []), strict=True))
    for transform in transforms:
        if type(transform).__name__ != "WeightConverter":
            continue
        for fused, found in leaves.items():
            if any(target.endswith(f"experts.{fused}") for target in transform.target_patterns):
                found[:] = [match.group(1) for source in transform.source_patterns if (match := re.search(r"experts\.\*\.(\w+)\.weight$", source))]
    if len(leaves["gate_up_proj"]) == 2 and len(leaves["down_proj"]) == 1:
        return (*leaves["gate_up_proj"], leaves["down_proj"][0])
    return EXPERT_LEAVES


class _UnfusedExperts(nn.Module):
    """A fused experts module (3D gate_up_proj and down_proj) as one nn.Linear per expert and
    projection, named as on file (experts.7.gate_proj): hooks then see each expert's input, and
    each expert's weights load as stored. The routing is that of transformers' eager experts
    forward, with the model's own gate function (_apply_gate)."""

    def __init__(self, fused: nn.Module, leaves: tuple[str, str, str]):
        super().__init__()
        self.__dict__["_fused"] = fused
        self.leaves = leaves
        experts, hidden, intermediate = fused.down_proj.shape
        with _parameters_on_meta():
            for expert in range(experts):
                sizes = ((hidden, intermediate), (hidden, intermediate), (intermediate, hidden))
                self.add_module(str(expert), nn.ModuleDict({leaf: nn.Linear(*size, bias=False) for leaf, size in zip(leaves, sizes, strict=True)}))

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        output = torch.zeros_like(hidden_states)
        gate_leaf, up_leaf, down_leaf = self.leaves
        for expert in top_k_index.unique().tolist():  # ascending, as eager adds them up
            if expert >= len(self._modules):  # eager's marker of tokens routed elsewhere
                continue
            token_index, top_k_position = torch.where(top_k_index == expert)
            x = hidden_states[token_index]
            linears = self._modules[str(expert)]
            gated = self.__dict__["_fused"]._apply_gate(torch.cat([linears[gate_leaf](x), linears[up_leaf](x)], dim=-1))
            out = linears[down_leaf](gated) * top_k_weights[token_index, top_k_position, None]
            output.index_add_(0, token_index, out.to(output.dtype))
        return output


def _unfuse_experts(model: nn.Module, transforms: list, architecture: str) -> dict[str, _UnfusedExperts]:
    """Replace every fused experts module by _UnfusedExperts; by module name."""
    leaves = _expert_leaves(transforms)
    replaced = {}
    for name, module in list(model.named_modules()):
        params = dict(module.named_parameters(recurse=False))
        if not {"gate_up_proj", "down_proj"} <= params.keys():
            continue
        layout = {"has_gate": True, "has_bias": False, "is_transposed": False, "is_concatenated": True, "has_post_expert_norm": False}
        odd = [flag for flag, expected in layout.items() if getattr(module, flag, expected) != expected]
        if odd or len(params) != 2 or params["down_proj"].dim() != 3:
            raise UsageError(f"calibration does not support architecture {architecture}: its experts {name!r} are not stacked gate/up and down projections without bias")
        parent_name, _, child = name.rpartition(".")
        replaced[name] = _UnfusedExperts(module, leaves)
        setattr(model.get_submodule(parent_name), child, replaced[name])
    return replaced


def _fill_unreached_experts(amax: dict[str, float], experts: dict[str, _UnfusedExperts], keys_by_linear: dict[str, str]) -> list[str]:
    """Experts no token was routed to get their layer's largest amax of the same projection;
    returns their checkpoint names ('model.layers.3.mlp.experts.17')."""
    unreached = []
    for name, module in experts.items():
        keys = {expert: {leaf: keys_by_linear[f"{name}.{expert}.{leaf}"] for leaf in module.leaves} for expert in module._modules}
        missing = [expert for expert, by_leaf in keys.items() if not any(key in amax for key in by_leaf.values())]
        reached = [by_leaf for expert, by_leaf in keys.items() if expert not in missing]
        if not reached:
            continue
        for expert in missing:
            for leaf, key in keys[expert].items():
                amax[key] = max(amax[by_leaf[leaf]] for by_leaf in reached)
            unreached.append(keys[expert][module.leaves[0]].rpartition(".")[0])
    return unreached


def _find_layers(model: nn.Module, config, architecture: str) -> tuple[str, nn.ModuleList]:
    """The decoder layers (or encoder blocks): the ModuleList of num_hidden_layers modules."""
    count = getattr(config, "num_hidden_layers", None)
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList) and len(module) == count]
    if len(found) != 1:
        raise UsageError(f"calibration does not support architecture {architecture}: {len(found)} lists of its {count} layers found, expected one")
    return found[0]


def _tokenize(tokenizer, samples: list[str], seq_len: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    encodings = []
    for text in samples:
        encoding = tokenizer(text, truncation=True, max_length=seq_len, return_tensors="pt")
        if encoding["input_ids"].numel():
            encodings.append({key: value.to(device) for key, value in encoding.items()})
    return encodings


class _Weights:
    """Where each model parameter lives in the checkpoint, and loading and emptying modules."""

    def __init__(self, model_dir: Path, model: nn.Module, architecture: str, transforms: list):
        checkpoint = open_checkpoint(model_dir)
        checkpoint.close()  # only its index is used: each layer's tensors are read with safe_open
        self.files = {name: checkpoint.file(name) for name in checkpoint.tensor_names()}
        stored = self.files.keys()
        prefix = getattr(model, "base_model_prefix", "")
        tied = getattr(model, "all_tied_weights_keys", None) or {}
        renamings = _reverse_renamings(transforms)
        self.names: dict[str, str] = {}
        self.tied: set[str] = set()
        for name, _ in model.named_parameters(remove_duplicate=False):
            source = name if name in stored else tied.get(name, name)
            renamed = source
            for model_part, stored_part in renamings:  # Mixtral's mlp is block_sparse_moe on file
                renamed = renamed.replace(model_part, stored_part)
            # A head class (LlamaForCausalLM) reading a base model's file or the other way round.
            candidates = [variant for base in (source, renamed) for variant in (base, base.removeprefix(f"{prefix}."), f"{prefix}.{base}")]
            stored_name = next((candidate for candidate in candidates if candidate in stored), None)
            if stored_name is None:
                raise UsageError(f"{model_dir}: calibration does not support architecture {architecture}: parameter {name!r} has no tensor in the checkpoint")
            self.names[name] = stored_name
            if name not in stored and source != name:
                self.tied.add(name)

    def module_key(self, linear: str) -> str:
        """A Linear's name in the checkpoint (its weight's name without ".weight"); a head tied to
        the embeddings, absent from the file, keeps its own name ("lm_head")."""
        weight = f"{linear}.weight"
        return linear if weight in self.tied else module_name(self.names[weight])

    def load(self, params: dict[str, tuple[nn.Module, str]], device: torch.device) -> None:
        """Read `params` (model name -> (module, attribute)) in fp32 onto device, each shard
        opened once and closed again (safetensors maps the whole file: a handle kept open lets
        resident memory grow to the shard's size)."""
        by_file: dict[Path, list[str]] = {}
        for name in params:
            by_file.setdefault(self.files[self.names[name]], []).append(name)
        for file, names in by_file.items():
            with safe_open(file, framework="pt") as handle:
                for name in names:
                    module, attribute = params[name]
                    tensor = handle.get_tensor(self.names[name]).to(device=device, dtype=torch.float32)
                    module._parameters[attribute] = nn.Parameter(tensor, requires_grad=False)

    @staticmethod
    def empty(params: dict[str, tuple[nn.Module, str]]) -> None:
        for module, attribute in params.values():
            module._parameters[attribute] = nn.Parameter(module._parameters[attribute].to("meta"), requires_grad=False)
        _return_freed_memory()

    @contextlib.contextmanager
    def loaded(self, module: nn.Module, prefix: str, device: torch.device) -> Iterator[None]:
        params = _parameters_of(module, prefix, recurse=True)
        self.load(params, device)
        try:
            yield
        finally:
            self.empty(params)

    @contextlib.contextmanager
    def loaded_on_call(self, model: nn.Module, layers: nn.ModuleList, device: torch.device) -> Iterator[None]:
        """The modules outside the layers (embeddings, final norm, heads) load their weights when
        first called and empty them at the end: the tail never holds the embedding table."""
        in_layers = {id(module) for layer in layers for module in layer.modules()}
        loaded: list[dict[str, tuple[nn.Module, str]]] = []

        def load_on_call(prefix: str) -> Callable:
            def hook(module: nn.Module, args: tuple) -> None:
                params = {name: entry for name, entry in _parameters_of(module, prefix, recurse=False).items() if entry[0]._parameters[entry[1]].is_meta}
                if params:
                    self.load(params, device)
                    loaded.append(params)

            return hook

        handles = [
            module.register_forward_pre_hook(load_on_call(name))
            for name, module in model.named_modules()
            if id(module) not in in_layers and any(True for _ in module.parameters(recurse=False))
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for params in loaded:
                self.empty(params)


def _load_libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def _return_freed_memory() -> None:
    """Give an emptied layer's memory back to the OS. Once a large block is freed, glibc raises
    its mmap threshold and serves the next layer's tensors from its heap, which it keeps: resident
    memory then grows by most of a layer per layer. No-op without glibc."""
    malloc_trim = getattr(_LIBC, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


def _parameters_of(module: nn.Module, prefix: str, recurse: bool) -> dict[str, tuple[nn.Module, str]]:
    """model parameter name -> (owning module, attribute) for module's parameters."""
    params = {}
    for child_name, child in module.named_modules() if recurse else [("", module)]:
        for attribute, param in child._parameters.items():
            if param is not None:
                params[".".join(part for part in (prefix, child_name, attribute) if part)] = (child, attribute)
    return params


class _AmaxRecorder:
    """Forward pre-hooks on every nn.Linear that record max |input| (in fp32, exact). A Linear
    outside the layers counts in the pass where it first runs: the pass after the layers
    replays the embeddings on zeros, which must not count."""

    def __init__(self, model: nn.Module, weights: _Weights):
        self.model = model
        self.keys = {name: weights.module_key(name) for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        self.values: dict[str, torch.Tensor] = {}
        self.frozen: set[str] = set()
        self.handles: list = []

    def __enter__(self) -> _AmaxRecorder:
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear):
                self.handles.append(module.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _hook(self, name: str) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if name in self.frozen:
                return
            x = args[0] if args else kwargs["input"]
            value = x.detach().abs().amax().float() if x.numel() else torch.zeros((), device=x.device)
            previous = self.values.get(name)
            self.values[name] = value if previous is None else torch.maximum(previous, value)

        return record

    def after_layers(self) -> None:
        self.frozen = set(self.values)

    def amax(self) -> dict[str, float]:
        return {self.keys[name]: float(value) for name, value in self.values.items()}


class _LayerStandIn(nn.Module):
    """Takes a layer's place in the model's forward and hands its call to `call(index, args,
    kwargs)`. Attributes fall through to the layer (Qwen2 picks a layer's mask by its
    attention_type); the layer is not a submodule, so its weights stay out of other passes."""

    def __init__(self, layer: nn.Module, index: int, call: Callable):
        super().__init__()
        self.__dict__["_layer"] = layer
        self.index = index
        self.call = call

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_layer"], name)

    def forward(self, *args, **kwargs):
        return self.call(self.index, args, kwargs)


@contextlib.contextmanager
def _layers_replaced(layers: nn.ModuleList, call: Callable) -> Iterator[None]:
    originals = list(layers)
    for index, layer in enumerate(originals):
        layers[index] = _LayerStandIn(layer, index, call)
    try:
        yield
    finally:
        for index, layer in enumerate(originals):
            layers[index] = layer


class _AllLayersCaught(Exception):
    """Raised by the last layer's stand-in: the model's forward stops before its tail."""


def _catch_layer_calls(model: nn.Module, layers: nn.ModuleList, encodings: list[dict]) -> tuple[list[torch.Tensor], list[tuple[list, list]]]:
    """Run the model's forward up to its layers for each sample: the first layer's input hidden
    states, and the other arguments of every layer's call (attention mask, position embeddings
    and ids), caught by stand-ins that pass the hidden states through. Catching every layer, not
    only the first, keeps per-layer masks (sliding-window layers) right."""
    hidden: list[torch.Tensor] = []
    calls: list[tuple[list, list]] = []

    def catch(index: int, args: tuple, kwargs: dict):
        kwargs = dict(kwargs)
        states = args[0] if args else kwargs.pop("hidden_states")
        if index == 0:
            hidden.append(states)
            calls.append(([], []))
        calls[-1][0].append(args[1:])
        calls[-1][1].append(kwargs)
        if index == len(layers) - 1:
            raise _AllLayersCaught
        return states

    with _layers_replaced(layers, catch):
        for encoding in encodings:
            try:
                model(**encoding)
            except _AllLayersCaught:
                continue
            raise DataError(f"{type(model).__name__}: the model's forward did not call its layers")  # pragma: no cover
    return hidden, calls


def _run_after_layers(model: nn.Module, layers: nn.ModuleList, encodings: list[dict], hidden: list[torch.Tensor]) -> None:
    """Run the modules after the layers (final norm, pooler, lm_head) on the final hidden states:
    every stand-in returns them. The embedding lookup is skipped (zeros as inputs_embeds) where
    the model takes inputs_embeds, so the embedding table is not loaded again."""
    takes_embeds = "inputs_embeds" in inspect.signature(model.forward).parameters
    for sample, encoding in enumerate(encodings):
        with _layers_replaced(layers, lambda index, args, kwargs: hidden[sample]):
            if takes_embeds:
                inputs = {key: value for key, value in encoding.items() if key != "input_ids"}
                inputs["inputs_embeds"] = torch.zeros_like(hidden[sample])
            else:
                inputs = encoding
            model(**inputs)

