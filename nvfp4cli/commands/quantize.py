"""`nvfp4 quantize`: convert a checkpoint (file, sharded index or HF model dir) to NVFP4."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .. import names
from ..errors import UsageError
from .common import (
    DEBUG_OPTION,
    FORCE_OPTION,
    JSON_OPTION,
    MAX_SHARD_SIZE_OPTION,
    WORKERS_HELP,
    choices,
    cli_errors,
    join_torchrun,
    note_skipped_files,
    parse_size,
    progress_bar,
    show_report,
    steps_bar,
)
from .timing import Phases

if TYPE_CHECKING:
    from ..calibrate import Calibration

OutputFormat = choices("OutputFormat", names.OUTPUT_FORMATS)
Backend = choices("Backend", ("auto", *names.BACKENDS))
Device = choices("Device", ("cpu", "cuda"))
ModeChoice = choices("Mode", names.MODES)
ScaleRule = choices("ScaleRule", names.SCALE_RULES)
Scheme = choices("Scheme", ("w4a16", "w4a4"))


def _calibrate(input_path: Path, scheme, calibration: Path | None, samples: int, seq_len: int, device: str, quiet: bool) -> Calibration | None:
    """W4A4: each Linear's input amax, measured on the float model one layer at a time."""
    if scheme is Scheme.w4a16:
        if calibration is not None:
            raise UsageError("--calibration is for --scheme w4a4 (w4a16 quantizes weights only)")
        return None
    if calibration is None:
        raise UsageError("--scheme w4a4 needs --calibration FILE (text to measure the activations on)")
    from ..calibrate import calibrate, read_samples  # W4A4 only: loads the model's layers

    texts = read_samples(calibration, samples)
    with steps_bar("calibrate (layers)", quiet) as progress:
        result = calibrate(input_path, texts, seq_len=seq_len, device=device, progress=progress)
    if not quiet:
        seconds = sum(result.seconds_per_layer.values())
        typer.echo(f"nvfp4: calibrated on {result.samples} samples ({result.tokens} tokens), {len(result.seconds_per_layer)} layers in {seconds:.1f} s", err=True)
        if result.unreached_experts:
            typer.echo(f"nvfp4: note: {len(result.unreached_experts)} MoE experts got no calibration token; each takes its layer's largest amax (listed in --json)", err=True)
    return result


def quantize(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A .safetensors file, a *.safetensors.index.json, or an HF model directory."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output file or directory (default: IN.nvfp4.safetensors, or DIR-nvfp4/ for a directory)."),
    mode_choice: ModeChoice = typer.Option(ModeChoice.rn, "--mode", help="Rounding: rn (nearest even) or rs (stochastic)."),
    seed: int | None = typer.Option(None, "--seed", min=0, max=names.SEED_LIMIT - 1, help="RS seed; each tensor gets its own stream from it (default: random, printed and recorded)."),
    scale_rule: ScaleRule = typer.Option(
        ScaleRule["max"], "--scale-rule", help="Block scales: max (block max -> 6, torchao's), 4over6 or mse (lowest squared error; more accurate, same format)."
    ),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="Kernel backend: auto picks triton on CUDA, reference on CPU."),
    fmt: OutputFormat = typer.Option(OutputFormat["compressed-tensors"], "--format", help="compressed-tensors (vLLM, transformers) or modelopt (vLLM, SGLang, TensorRT-LLM)."),
    include: list[str] = typer.Option([], "--include", help="Quantize only weights whose name matches this glob (repeatable); overrides the default skips."),
    exclude: list[str] = typer.Option([], "--exclude", help="Keep weights whose name matches this glob in high precision (repeatable)."),
    block_2d: bool = typer.Option(False, "--block-2d", help="Scale each 16x16 tile as one (a trainer's 2-D-scaled weights; same format)."),
    experts_unit_scale: bool = typer.Option(
        False, "--experts-unit-scale", help="Give MoE experts global scale 1: the per-expert layout transformers 5.x loads correctly (about 3 dB less accurate experts)."
    ),
    scheme: Scheme = typer.Option(
        Scheme.w4a16, "--scheme", help="w4a16: weights only; w4a4: also activation scales (vLLM on Blackwell), calibrated on --calibration text, one layer at a time."
    ),
    calibration: Path | None = typer.Option(None, "--calibration", metavar="FILE", help="w4a4 calibration text: one sample per non-empty line, or JSONL with a \"text\" field."),
    samples: int = typer.Option(512, "--samples", min=1, metavar="N", help="w4a4: at most N calibration samples."),
    seq_len: int = typer.Option(2048, "--seq-len", min=1, metavar="L", help="w4a4: each sample's first L tokens (the model's tokenizer, special tokens added)."),
    max_shard_size: str = MAX_SHARD_SIZE_OPTION,
    device: Device = typer.Option(Device.cpu, "--device", help="Where to quantize: cpu, or cuda (Triton backend)."),
    workers: int | None = typer.Option(None, "--workers", min=1, metavar="N", help=WORKERS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be quantized and skipped; write nothing."),
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Quantize the 2-D linear weights of a checkpoint to NVFP4; copy everything else."""
    phases = Phases()  # NVFP4_TIMING=1: phase times in --json
    with cli_errors(debug), contextlib.ExitStack() as stack:
        from .. import runner
        from ..format import Mode
        from ..io import open_checkpoint
        from ..plan import QuantizeOptions, default_output, plan_quantize

        phases.mark("imports")
        mode = Mode(mode_choice.value)
        group = join_torchrun(stack, workers, device.value)
        reporter = group is None or group.rank == 0  # under torchrun rank 0 speaks for all
        with group.guard() if group is not None else contextlib.nullcontext():
            max_shard_bytes = parse_size(max_shard_size)
            if mode is Mode.RS and seed is None:
                seed = secrets.randbits(63) if group is None else group.shared_seed(secrets.randbits(63))
                if reporter:
                    typer.echo(f"nvfp4: --mode rs without --seed: using --seed {seed} (recorded in the output)", err=True)
            elif mode is Mode.RN and seed is not None and reporter:
                typer.echo("nvfp4: --seed has no effect with --mode rn (it rounds to nearest, with no random bits)", err=True)
            checkpoint = open_checkpoint(input_path)
            calibrated = _calibrate(input_path, scheme, calibration, samples, seq_len, device.value, quiet=json_output or not reporter)
            options = QuantizeOptions(
                mode, seed, fmt.value, tuple(include), tuple(exclude), backend.value, device.value, scale_rule.value, block_2d, experts_unit_scale,
                tuple(sorted(calibrated.amax.items())) if calibrated else (),
            )
            plan = plan_quantize(checkpoint, options)
            output = output if output is not None else default_output(input_path)
            phases.mark("plan")
        if reporter:
            note_skipped_files(plan.skipped_files)
        world_size = workers or (group.world_size if group is not None else None)
        if dry_run:
            report = plan.summary() | {"output": str(output), "dry_run": True}
            if world_size:
                report |= runner.describe(plan, world_size, max_shard_bytes)
        else:
            if workers is None:  # --workers: each worker process starts CUDA for itself
                phases.warm_up(device.value, backend.value, mode.value, scale_rule.value)
            with progress_bar("quantize", plan.bytes_in, plan.tensors_in, json_output or not reporter) as progress:
                report = runner.run(plan, output, checkpoint=checkpoint, group=group, workers=workers, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
            phases.mark("run")
        if calibrated is not None:
            report["calibration"] = calibrated.report() | {"file": str(calibration), "seq_len": seq_len}
        if reporter:
            show_report(report | phases.report(), json_output, "dry run: nothing written" if dry_run else f"quantized to {output}")
