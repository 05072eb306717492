"""`nvfp4 bench`: time backends, modes and peers against a copy of the same input."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from .. import names
from ..staging import check_output_directory, staged_output
from ..errors import UsageError
from .bench_checkpoint import bench_checkpoint
from .common import DEBUG_OPTION, cli_errors, print_json, print_table

if TYPE_CHECKING:
    from ..bench import BenchReport

TABLE_HEADERS = ("backend", "op", "mode", "shape", "dtype", "timed", "median us", "p10 us", "p90 us", "GB/s", "% copy", "SQNR dB", "agreement")


def _check_output(path: Path | None, force: bool) -> None:
    # Before the run, not after it: a bad path would otherwise cost the whole benchmark.
    if path is not None and path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    if path is not None:
        check_output_directory(path)


def _write_csv(report: BenchReport, path: Path, force: bool) -> None:
    from .. import bench as core

    rows = [row | {"shape": core.shape_text(row["shape"])} for row in report.to_dict()["results"]]
    with staged_output(path, is_dir=False, force=force) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(core.BenchResult.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'nvfp4cli[plot]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _write_plot(report: BenchReport, path: Path, force: bool) -> None:
    """GB/s against input size, one line per backend, mode and timed work, with the copy line."""
    from .. import bench as core

    plt = _import_pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    series: dict[str, list[tuple[int, float]]] = {}
    copies: dict[int, float] = {}
    for r in report.results:
        label = f"{r.backend}{' (peer)' if r.peer else ''} {r.op} {r.mode} {core.timed_label(r.includes_amax)}"
        series.setdefault(label, []).append((r.input_bytes, r.gbps))
        copies[r.input_bytes] = r.copy_gbps
    for label, points in series.items():
        sizes, gbps = zip(*sorted(points))
        ax.plot(sizes, gbps, marker="o", label=label)
    if copies:
        sizes, gbps = zip(*sorted(copies.items()))
        ax.plot(sizes, gbps, color="black", linestyle="--", marker="s", label="copy (same input)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("input bytes")
    ax.set_ylabel("GB/s (bytes read + written)")
    ax.set_title(f"nvfp4 bench: {report.device}, torch {report.torch}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with staged_output(path, is_dir=False, force=force) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _microseconds(value: float) -> float | int:
    # Whole microseconds from 1000 on: the table's 4 significant digits would print 1.516e+04.
    return round(value) if value >= 1000 else value


def _print_report(report: BenchReport) -> None:
    from .. import bench as core

    rows = [
        (
            f"{core.PEER_LABELS.get(r.backend, r.backend)} (peer)" if r.peer else r.backend,
            r.op,
            r.mode,
            core.shape_text(r.shape),
            r.dtype,
            core.timed_label(r.includes_amax),
            _microseconds(r.median_us),
            _microseconds(r.p10_us),
            _microseconds(r.p90_us),
            r.gbps,
            r.pct_of_copy,
            r.sqnr_db,
            r.agreement,
        )
        for r in report.results
    ]
    title = f"{report.device} | torch {report.torch} | triton {report.triton or 'absent'} | copy {report.copy_gbps:.4g} GB/s"
    print_table(rows, TABLE_HEADERS, title=title)
    for s in report.skipped:
        where = " ".join(part for part in (s.mode, s.shape and core.shape_text(s.shape)) if part) or "all"
        typer.echo(f"skipped {s.backend}{' (peer)' if s.peer else ''} [{where}]: {s.reason}")


def bench(
    shape: list[str] = typer.Option(None, "--shape", help="MxK (repeatable); default 8192x8192 on cuda, 2048x2048 on cpu."),
    dtype: str = typer.Option("bf16", "--dtype", help="Input dtype: bf16, fp16 or fp32."),
    mode: list[str] = typer.Option(None, "--mode", help="rn or rs (repeatable); default both."),
    op: str = typer.Option("quantize", "--op", help=f"What to time: {', '.join(names.BENCH_OPS)} (rowcol: quantize_rowcol; rht: the Hadamard transform)."),
    hadamard: bool = typer.Option(False, "--hadamard", help="Quantize rht(x) (with --op rowcol: the columnwise part)."),
    block_2d: bool = typer.Option(False, "--block-2d", help="16x16-tile block scales (2-D shapes, rows a multiple of 16)."),
    backend: list[str] = typer.Option(
        None, "--backend", help=f"Repeatable; default all: {', '.join(names.BENCH_CONTENDERS)} (the last four are peers)."
    ),
    device: str = typer.Option(None, "--device", help="cpu or cuda[:N]; default cuda when available, else cpu."),
    warmup: int = typer.Option(None, "--warmup", help="Untimed calls first; default 10 on cuda, 2 on cpu."),
    iters: int = typer.Option(None, "--iters", help="Timed calls; default 100 on cuda, 10 on cpu."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
    csv_path: Path = typer.Option(None, "--csv", help="Also write the rows to this CSV file."),
    plot_path: Path = typer.Option(None, "--plot", help="Also write a PNG of GB/s against size (needs matplotlib)."),
    check: bool = typer.Option(False, "--check", help="Exit 1 when one of our backends' RN output differs from the reference."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing --csv / --plot files."),
    debug: bool = DEBUG_OPTION,
    checkpoint: Path = typer.Option(None, "--checkpoint", metavar="DIR", help="Time the whole conversion of this checkpoint against its I/O floor (and --peer-python's llm-compressor)."),
    peer_python: str = typer.Option(None, "--peer-python", metavar="PYTHON", help="With --checkpoint: an interpreter with llmcompressor installed, to time its model_free_ptq NVFP4A16."),
) -> None:
    """Time quantization (with and without the amax pass) against a copy of the same bytes.

    --op rowcol / rht and --hadamard / --block-2d time the FP4 training primitives; their peer is
    torch.compile of a plain PyTorch version of the same op ("plain-compile")."""
    if checkpoint is not None:  # the whole conversion (commands/bench_checkpoint.py)
        with cli_errors(debug):
            return bench_checkpoint(checkpoint, device or "cpu", peer_python, None, json_out)
    with cli_errors(debug):
        from .. import bench as core
        from ..api import parse_dtype, parse_mode
        from ..format import Mode

        torch_device = core.parse_device(device)
        default_shape, default_warmup, default_iters = core.DEFAULTS[torch_device.type]
        shapes = [core.parse_shape(text) for text in shape] if shape else [default_shape]
        modes = [parse_mode(m) for m in dict.fromkeys(mode)] if mode else list(Mode)
        torch_dtype = parse_dtype(dtype)
        backends = core.parse_backends(backend or [])
        work = core.Workload(op, hadamard, block_2d)
        core.check_workload(work, shapes)
        for path in (csv_path, plot_path):
            _check_output(path, force)
        if plot_path is not None:
            _import_pyplot()  # fail before the run, not after it
        with Console(stderr=True).status("benchmarking") as status:
            report = core.run_bench(
                shapes,
                torch_dtype,
                modes,
                backends,
                torch_device,
                default_warmup if warmup is None else warmup,
                default_iters if iters is None else iters,
                on_step=lambda step: status.update(f"benchmarking: {step}"),
                work=work,
            )
        if json_out:
            print_json(report.to_dict())
        else:
            _print_report(report)
        if csv_path is not None:
            _write_csv(report, csv_path, force)
        if plot_path is not None:
            _write_plot(report, plot_path, force)
        failures = report.check_failures() if check else []
        for failure in failures:
            typer.echo(f"nvfp4: check failed: {failure}", err=True)
        if failures:
            raise typer.Exit(1)
