"""Running a bench script the way its README command does, for the CI smokes beside this file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_bench(script: str, *args: str, timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run ``bench/<script>`` to its end and return its stdout; fails the test with the tail of
    its output if it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout
