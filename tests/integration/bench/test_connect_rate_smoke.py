"""CI's smoke of bench/connect_rate.py: a few sockets against a real server, Redis and FerretDB
(on SQLite), every one live, and the figures printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_smoke_connects_every_socket_and_prints_the_figures() -> None:
    args = ["--sockets", "20", "--rounds", "1", "--resume", "--backend", "sqlite", "--no-pin"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "connect_rate.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = re.search(r"^round 1: 20/20 live .*$", proc.stdout, re.M)
    assert line, proc.stdout
    assert re.search(r"MongoDB commands/connect [0-9.]+, Redis round trips/connect", line[0])
    assert re.search(r"server/driver CPU [0-9.]+$", line[0]), line[0]
