"""`nvfp4 ARGS` in a child process that pauses right after writing its first tensor, until the
test resumes it (or signals it): a run caught mid-write in a known state, however fast the machine.

    run = PausedRun.start(["quantize", model, "-o", output], tmp_path)
    run.wait_until_paused()      # its first tensor is in the staging file; the run waits
    ...                          # signal it, or let another run finish first
    run.resume()
    run.process.communicate()

The child is the real CLI (nvfp4cli.cli.app) with one change: SafetensorsWriter.write waits after
its first call, as if the next tensor took long.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nvfp4cli import io
    from nvfp4cli.cli import app

    paused, resume, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    write = io.SafetensorsWriter.write
    waited = []

    def write_then_wait(self, name, tensor):
        write(self, name, tensor)
        if not waited:  # the first tensor only
            waited.append(name)
            paused.touch()
            while not resume.exists():
                time.sleep(0.05)

    io.SafetensorsWriter.write = write_then_wait
    app(args, prog_name="nvfp4")
    """
)


@dataclass
class PausedRun:
    process: subprocess.Popen
    paused: Path
    resumed: Path

    @classmethod
    def start(cls, args: list[object], directory: Path, name: str = "run") -> PausedRun:
        paused, resumed = directory / f"{name}.paused", directory / f"{name}.resume"
        # SIGINT back to its default first: a shell starts background jobs with it ignored, and
        # Python only turns it into KeyboardInterrupt when it is not ignored.
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(paused), str(resumed), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        return cls(process, paused, resumed)

    def wait_until_paused(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.paused.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended before pausing (exit {self.process.returncode}): {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the run did not write a tensor within {timeout} s")
            time.sleep(0.05)
        self.paused.unlink()

    def resume(self) -> None:
        self.resumed.touch()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once the run ends; the marker files are removed."""
        stdout, stderr = self.process.communicate(timeout=timeout)
        self.resumed.unlink(missing_ok=True)
        return self.process.returncode, stdout, stderr
