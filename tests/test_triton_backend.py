"""The Triton backend on CPU: tests/triton_interpreter_checks.py run in a fresh Python with
TRITON_INTERPRET=1 (Triton picks the interpreter when first imported, and other test modules
import it compiled), one test id here for each of its cases. The subprocess runs the selected
cases once and each test id reads its own outcome from the JUnit report.
tests/gpu/test_triton_gpu.py runs the compiled kernels on a GPU."""

import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

CHECKS = Path(__file__).with_name("triton_interpreter_checks.py")
ROOT = CHECKS.parent.parent
ENV = dict(os.environ, TRITON_INTERPRET="1")
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]


def _collect_cases() -> list[str]:
    """The interpreter checks' test names (function[params]), collected under the interpreter."""
    if importlib.util.find_spec("triton") is None:
        return []
    run = subprocess.run([*PYTEST, "--collect-only", "-q", str(CHECKS)], env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)
    cases = [line.split("::", 1)[1] for line in run.stdout.splitlines() if line.startswith("tests/") and "::" in line]
    # A collection error must fail loudly, as one case, rather than leave nothing to run.
    return cases or [f"collection failed: {run.stdout[-2000:]} {run.stderr[-2000:]}"]


CASES = _collect_cases()


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Run the selected cases in one interpreter subprocess: {case: (outcome, details)}."""
    selected = [item.callspec.params["case"] for item in request.session.items if item.module.__name__ == __name__]
    report = tmp_path_factory.mktemp("interpreter") / "report.xml"
    targets = [str(CHECKS)] if len(selected) == len(CASES) else [f"{CHECKS}::{case}" for case in selected]
    run = subprocess.run([*PYTEST, "-q", f"--junitxml={report}", *targets], env=ENV, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if not report.exists():
        pytest.fail(f"the interpreter checks did not run:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    found = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = problems[0].tag if problems else "passed"
        details = "\n".join(f"{p.get('message', '')}\n{p.text or ''}" for p in problems)
        found[case.get("name")] = (outcome, details[-6000:])
    return found


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_under_the_interpreter(case, outcomes):
    outcome, details = outcomes.get(case, ("missing", "no result in the subprocess's report"))
    assert outcome == "passed", f"{case}: {outcome}\n{details}"
