"""A/B of two versions of the Triton backend on one GPU, in one process: this tree's
nvfp4cli/kernels/triton_backend.py (A) against another copy of that file (B, e.g. a branch's,
carried to the device as an untracked file). Each kernel's outputs from A and B are compared byte
for byte on random and adversarial inputs, then each is timed in alternating rounds (A, B, A, B,
...) so that clock and thermal drift fall on both alike.

    PYTHONPATH=. python scripts/gpu_ab_backend.py --other tmp/triton_backend_b.py --out "$OUT" [--rounds 3]

Timing and bytes counted as in gpu_bench_triton.py (median of its ITERS calls, L2 evicted before
each). Prints one JSON line a measurement and writes ab.json and ab.md under --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_bench_triton import OFFSET, SEED, make_input, quantize_bytes, same_bytes, time_us  # noqa: E402

from nvfp4cli.format import Mode, per_tensor_scale_from_amax  # noqa: E402
from nvfp4cli.kernels import triton_backend  # noqa: E402

SHAPE = (8192, 8192)


def load_other(path: Path):
    """The backend file at path as module nvfp4cli.kernels._ab_other (its relative imports resolve
    in nvfp4cli.kernels, as the real one's do)."""
    spec = importlib.util.spec_from_file_location("nvfp4cli.kernels._ab_other", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(x: torch.Tensor) -> dict:
    """name -> fn(backend) running one kernel on x (2-D; rowcol needs both dims multiples of 16)."""
    pts = per_tensor_scale_from_amax(x.float().nan_to_num(0.0, 0.0, 0.0).abs().amax())  # any finite scale serves to compare
    out = {}
    for mode in Mode:
        m = mode.value.upper()
        out[f"quantize {m}"] = lambda b, mode=mode: b.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET)
        out[f"quantize {m} block_2d"] = lambda b, mode=mode: b.quantize(x, per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, block_2d=True)
        out[f"amax+quantize {m} one launch"] = lambda b, mode=mode: b.quantize_amax(x, mode=mode, seed=SEED, offset=OFFSET)
        for block_2d, col_hadamard in ((False, False), (False, True), (True, True)):
            name = f"rowcol {m}" + (" col_hadamard" if col_hadamard else "") + (" block_2d" if block_2d else "")
            out[name] = lambda b, mode=mode, b2=block_2d, ch=col_hadamard: b.quantize_rowcol(
                x, per_tensor_scale=pts, col_per_tensor_scale=pts, mode=mode, seed=SEED, offset=OFFSET, block_2d=b2, col_hadamard=ch
            )
    out["quantize RN swizzled"] = lambda b: b.quantize(x, per_tensor_scale=pts, mode=Mode.RN, seed=None, offset=0, swizzle=True)
    return out


def adversarial(shape, dtype) -> torch.Tensor:
    """Random values with every block's edge cases spread through it: zeros of both signs, the
    dtype's subnormals, largest finite, inf, NaN, and blocks all zero or all one value."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(shape, generator=gen, device="cuda") * torch.exp2(torch.randint(-20, 20, shape, generator=gen, device="cuda").float())
    info = torch.finfo(dtype)
    specials = torch.tensor([0.0, -0.0, info.smallest_normal / 4, -info.tiny, info.max, -info.max, float("inf"), float("nan")], device="cuda")
    pick = torch.randint(0, 64, shape, generator=gen, device="cuda")
    x = torch.where(pick < len(specials), specials[pick.clamp(max=len(specials) - 1)], x)
    x[:, :16] = 0.0
    x[:, 16:32] = 3.0
    return x.to(dtype)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.other.is_file():
        parser.error(f"--other {args.other}: no such file (a copy of nvfp4cli/kernels/triton_backend.py)")
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    args.out.mkdir(parents=True, exist_ok=True)
    versions = {"A": triton_backend, "B": load_other(args.other)}

    checks = []
    inputs = [(dtype, kind, shape) for dtype in (torch.bfloat16, torch.float16) for kind in ("random", "adversarial") for shape in ((272, 1040), (1024, 2048))]
    inputs.append((torch.float32, "random", (272, 1040)))
    for dtype, kind, shape in inputs:
        x = make_input(shape, dtype) if kind == "random" else adversarial(shape, dtype)
        for name, fn in cases(x).items():
            if "amax+quantize" in name and kind == "adversarial":
                continue  # a non-finite amax: the kernel reports it, both versions alike, nothing to compare
            row = {"input": f"{kind} {str(dtype)[6:]} {shape[0]}x{shape[1]}", "case": name, "same": same_bytes(fn(versions["A"]), fn(versions["B"]))}
            checks.append(row)
            print(json.dumps(row), flush=True)

    x = make_input(SHAPE)
    times = {}
    for round_ in range(args.rounds):
        for name, fn in cases(x).items():
            for version, backend in versions.items():
                us = time_us(lambda: fn(backend))
                times.setdefault(name, {}).setdefault(version, []).append(us)
                print(json.dumps({"round": round_, "case": name, "version": version, "us": round(us, 2)}), flush=True)
    rows = []
    for name, by_version in times.items():
        a, b = statistics.median(by_version["A"]), statistics.median(by_version["B"])
        per_round = [round(bv / av, 3) for av, bv in zip(by_version["A"], by_version["B"])]
        reads = 2 if "amax+quantize" in name else 1
        rows.append({"case": name, "A us": round(a, 2), "B us": round(b, 2), "B/A": round(b / a, 3), "B/A by round": per_round, "A GB/s": round(quantize_bytes(x, reads) / a / 1e3, 1)})
    md = "| case | A us | B us | B/A | B/A by round |\n|---|---|---|---|---|\n" + "".join(
        f"| {r['case']} | {r['A us']} | {r['B us']} | {r['B/A']} | {', '.join(map(str, r['B/A by round']))} |\n" for r in rows
    )
    unequal = [c for c in checks if not c["same"]]
    md += f"\n{len(checks) - len(unequal)} of {len(checks)} byte checks equal\n" + "".join(f"- NOT EQUAL: {c['input']}: {c['case']}\n" for c in unequal)
    (args.out / "ab.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "checks": checks, "times": rows}, indent=1))
    (args.out / "ab.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
