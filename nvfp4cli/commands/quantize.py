"""`nvfp4 quantize`: convert a checkpoint (file, sharded index or HF model dir) to NVFP4."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from enum import Enum
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from .. import convert, distributed
from ..format import SCALE_RULES
from ..checkpoint import COMPRESSED_TENSORS_FORMAT, MODELOPT_FORMAT, Checkpoint, open_checkpoint, parse_size
from ..errors import UsageError
from ..format import Mode
from ..kernels import BACKENDS
from ..rng import SEED_LIMIT
from .common import DEBUG_OPTION, cli_errors, print_json, print_table

OutputFormat = Enum("OutputFormat", {name: name for name in (COMPRESSED_TENSORS_FORMAT, MODELOPT_FORMAT)}, type=str)
Backend = Enum("Backend", {name: name for name in ("auto", *BACKENDS)}, type=str)
Device = Enum("Device", {"cpu": "cpu", "cuda": "cuda"}, type=str)
ScaleRule = Enum("ScaleRule", {name: name for name in SCALE_RULES}, type=str)
# Options that dequantize (and inspect) share with quantize.
MAX_SHARD_SIZE_OPTION = typer.Option("5GB", "--max-shard-size", help="Largest output shard of a directory output (5GB, 500MB, 2GiB).")
FORCE_OPTION = typer.Option(False, "--force", help="Replace an existing output.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document instead of the table (and no progress bar).")


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def run_with_progress(
    plan: convert.Plan,
    output: Path,
    force: bool,
    max_shard_bytes: int,
    quiet: bool,
    *,
    group: distributed.Group | None = None,
    workers: int | None = None,
    replan: Callable[[Checkpoint], convert.Plan] | None = None,
    device: str = "cpu",
) -> dict | None:
    """Run the plan in this process, as this rank of a torchrun group, or with `workers` local
    processes (each re-planning with replan), with a rich progress bar (tensors, bytes, speed)
    on a terminal unless quiet. The report; None on a torchrun rank other than 0."""
    with progress_bar(plan, quiet) as progress:
        if group is not None:
            return distributed.run(plan, output, group, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
        if workers:
            return distributed.launch(plan, replan, output, workers, device=device, force=force, max_shard_bytes=max_shard_bytes, progress=progress)
        return convert.run(plan, output, force=force, max_shard_bytes=max_shard_bytes, progress=progress)


@contextlib.contextmanager
def progress_bar(plan: convert.Plan, quiet: bool) -> Iterator[convert.Progress | None]:
    """A progress callback drawing a rich bar on a terminal; None when quiet or not a terminal."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[tensors]}/{task.fields[total_tensors]} tensors"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(plan.operation, total=plan.bytes_in, tensors=0, total_tensors=plan.tensors_in)
        yield lambda tensors, done: bar.update(task, completed=done, tensors=tensors)


def print_report(report: dict, title: str) -> None:
    """The summary table of a run or a dry run, then the weights left in high precision."""
    operation = report["operation"]
    rows = [
        ["input", report["input"]],
        *([["output", report["output"]]] if "output" in report else []),
        *[[key, report[key]] for key in ("format", "mode", "scale_rule", "seed", "dtype", "workers") if key in report],
        [f"tensors {operation}d", report[f"tensors_{operation}d"]],
        ["tensors copied", report["tensors_copied"]],
        ["bytes in", _megabytes(report["bytes_in"])],
        ["bytes out", _megabytes(report["bytes_out"])],
        ["ratio", f"{report['ratio']:.2f}x" if report["ratio"] else "-"],
    ]
    if "seconds" in report:
        rows += [["time", f"{report['seconds']:.2f} s"], ["throughput", f"{report['mb_per_s']:,.1f} MB/s" if report["mb_per_s"] else "-"]]
    print_table(rows, headers=("", ""), title=title)
    if report.get("ranks"):
        typer.echo("")
        rank_rows = [[row["rank"], row["tensors_in"], _megabytes(row["bytes_in"]), len(row["files"])] for row in report["ranks"]]
        print_table(rank_rows, headers=("rank", "tensors in", "bytes in", "files"))
    if report.get("skipped"):
        typer.echo("")
        print_table([[item["name"], item["reason"]] for item in report["skipped"]], headers=("weight kept in high precision", "reason"))


def show_report(report: dict, json_output: bool, title: str) -> None:
    """JSON for machines, or the summary tables for people."""
    if json_output:
        print_json(report)
    else:
        print_report(report, title)


def quantize(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A .safetensors file, a *.safetensors.index.json, or an HF model directory."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output file or directory (default: IN.nvfp4.safetensors, or DIR-nvfp4/ for a directory)."),
    mode: Mode = typer.Option(Mode.RN, "--mode", help="Rounding: rn (nearest even) or rs (stochastic)."),
    seed: int | None = typer.Option(None, "--seed", min=0, max=SEED_LIMIT - 1, help="RS seed; each tensor gets its own stream from it (default: random, printed and recorded)."),
    scale_rule: ScaleRule = typer.Option(
        ScaleRule["max"], "--scale-rule", help="Block scales: max (block max -> 6, torchao's), 4over6 or mse (lowest squared error; more accurate, same format)."
    ),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="Kernel backend: auto picks triton on CUDA, reference on CPU."),
    fmt: OutputFormat = typer.Option(OutputFormat[COMPRESSED_TENSORS_FORMAT], "--format", help="compressed-tensors (vLLM, transformers) or modelopt (vLLM, SGLang, TensorRT-LLM)."),
    include: list[str] = typer.Option([], "--include", help="Quantize only weights whose name matches this glob (repeatable); overrides the default skips."),
    exclude: list[str] = typer.Option([], "--exclude", help="Keep weights whose name matches this glob in high precision (repeatable)."),
    max_shard_size: str = MAX_SHARD_SIZE_OPTION,
    device: Device = typer.Option(Device.cpu, "--device", help="Where to quantize: cpu, or cuda (Triton backend)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, metavar="N", help="Convert with N local processes on torch.distributed (gloo; NCCL and one GPU each with --device cuda): same tensors. Under torchrun, leave it out."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be quantized and skipped; write nothing."),
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Quantize the 2-D linear weights of a checkpoint to NVFP4; copy everything else."""
    with cli_errors(debug), contextlib.ExitStack() as stack:
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
            options = convert.QuantizeOptions(mode, seed, fmt.value, tuple(include), tuple(exclude), backend.value, device.value, scale_rule.value)
            replan = partial(convert.plan_quantize, options=options)  # --workers processes plan with it too
            plan = replan(checkpoint)
            output = output if output is not None else convert.default_output(input_path)
        world_size = workers or (group.world_size if group is not None else None)
        if dry_run:
            report = plan.summary() | {"output": str(output), "dry_run": True}
            if world_size:
                report |= distributed.describe(plan, world_size, max_shard_bytes)
        else:
            quiet = json_output or not reporter
            report = run_with_progress(plan, output, force, max_shard_bytes, quiet, group=group, workers=workers, replan=replan, device=device.value)
        if reporter:
            show_report(report, json_output, "dry run: nothing written" if dry_run else f"quantized to {output}")


def join_torchrun(stack: contextlib.ExitStack, workers: int | None, device: str) -> distributed.Group | None:
    """Under torchrun, join its process group until the command ends; None otherwise."""
    if not distributed.launched_by_torchrun():
        return None
    if workers is not None:
        raise UsageError("--workers starts its own processes: leave it out under torchrun")
    group = stack.enter_context(distributed.connect(device))
    stack.enter_context(_quiet_unless_rank0(group.rank))
    return group


@contextlib.contextmanager
def _quiet_unless_rank0(rank: int) -> Iterator[None]:
    """A failure that every rank raises is reported once, by rank 0; the others exit quietly."""
    try:
        yield
    except distributed.RankFailure as exc:
        if rank == 0:
            raise
        raise typer.Exit(exc.exit_code) from None
