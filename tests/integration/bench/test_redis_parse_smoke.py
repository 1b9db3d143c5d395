"""CI's smoke of bench/redis_parse.py against a real Redis: a few messages, one line out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_smoke_receives_every_message_and_names_the_hiredis_parser() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "redis_parse.py"), "--messages", "2000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(
        r"^_AsyncHiredisParser: 2000 pub/sub messages, [0-9.]+ µs", proc.stdout, re.M
    ), proc.stdout
