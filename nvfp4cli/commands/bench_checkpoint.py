"""`nvfp4 bench --checkpoint DIR`: the whole conversion against its I/O floor and llm-compressor."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from .common import byte_size, print_json, print_table

HEADERS = ("tool", "convert s", "GB/s", "% of I/O floor", "wall s", "wall GB/s", "peak memory", "SQNR dB")


def bench_checkpoint(checkpoint: Path, device: str, peer_python: str | None, scratch: Path | None, json_out: bool) -> None:
    """Run convert_bench on checkpoint and print the table (or the JSON document)."""
    from .. import convert_bench

    with Console(stderr=True).status("benchmarking") as status:
        report = convert_bench.bench_checkpoint(checkpoint, device=device, peer_python=peer_python, scratch=scratch, on_step=lambda step: status.update(f"benchmarking: {step}"))
    if json_out:
        print_json(report)
        return
    floor = report["floor"]
    rows = [
        (r["tool"], r["convert_s"], r["gbps"], r["pct_of_floor"], r["wall_s"], r["wall_gbps"], byte_size(r["peak_rss_bytes"]), "-" if r["sqnr_db"] is None else r["sqnr_db"])
        for r in report["results"]
    ]
    title = (
        f"{report['checkpoint']} on {report['device']}: {byte_size(report['bytes_in'])} in, {byte_size(report['bytes_out'])} out | I/O floor {floor['seconds']:.3g} s"
        f" (read {floor['read_s']:.3g} s = {floor['read_gbps']:.3g} GB/s, write+fsync {floor['write_s']:.3g} s = {floor['write_gbps']:.3g} GB/s)"
    )
    print_table(rows, HEADERS, title=title)
    for item in report["skipped"]:
        typer.echo(f"skipped {item['tool']}: {item['reason']}")
