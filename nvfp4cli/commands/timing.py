"""NVFP4_TIMING=1: where a command's time goes before and around its conversion.

With the variable set, `quantize --json` gains a "timing" object of wall seconds, each phase timed
from the end of the one before: interpreter (process start to the CLI's first import), cli (Typer,
option parsing), imports (torch and the core), plan (open the checkpoint, calibrate, plan), with
--device cuda also cuda_init (the CUDA context) and first_kernel (one small quantize on the device
before the run: Triton's import, its on-disk kernel cache look-up or a compile, the module load),
then run (the conversion, writing included), and total. Unset, nothing is timed or run.
"""

from __future__ import annotations

import os
import time

TIMING_VARIABLE = "NVFP4_TIMING"
WARM_UP_SHAPE = (256, 256)  # small: the kernel's first call costs the same at any size

_CLI_LOADED = time.perf_counter()  # cli.py imports this module first


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc, 10 ms ticks), None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the fields after the command name
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Phases:
    """The phase clock of one command; every method does nothing unless NVFP4_TIMING is set."""

    def __init__(self) -> None:
        self.enabled = os.environ.get(TIMING_VARIABLE, "") not in ("", "0")
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()
        if self.enabled:
            age = _process_age()
            if age is not None:
                self.seconds["interpreter"] = max(age - (self._last - _CLI_LOADED), 0.0)
            self.seconds["cli"] = self._last - _CLI_LOADED

    def mark(self, phase: str) -> None:
        """The time since the previous mark is phase's."""
        if self.enabled:
            now = time.perf_counter()
            self.seconds[phase] = now - self._last
            self._last = now

    def warm_up(self, device: str, backend: str, mode: str, scale_rule: str) -> None:
        """On CUDA, time the context's creation and a first quantize apart from the run."""
        if not self.enabled or not device.startswith("cuda"):
            return
        import torch

        from ..api import quantize

        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
        self.mark("cuda_init")
        x = torch.ones(WARM_UP_SHAPE, dtype=torch.bfloat16, device=device)
        quantize(x, mode, seed=0 if mode == "rs" else None, backend=backend, scale_rule=scale_rule)
        torch.cuda.synchronize(device)
        self.mark("first_kernel")

    def report(self) -> dict:
        """{"timing": {phase_s: seconds, ..., total_s}} when timing, else {}."""
        if not self.enabled:
            return {}
        timing = {f"{phase}_s": round(seconds, 4) for phase, seconds in self.seconds.items()}
        return {"timing": timing | {"total_s": round(sum(self.seconds.values()), 4)}}
