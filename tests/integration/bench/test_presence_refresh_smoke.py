"""CI's smoke of bench/presence_refresh.py against a real Redis: a few connections, two lines."""

from __future__ import annotations

import re

import pytest

from tests.integration.bench.scripts import run_bench

pytestmark = pytest.mark.integration


def test_smoke_refreshes_at_once_and_spread() -> None:
    stdout = run_bench("presence_refresh.py", "--connections", "300", "--seconds", "2", timeout=60)
    for way in ("at once", "over 2 s"):
        assert re.search(
            rf"^300 presence refreshes {way}: [0-9.]+ µs .* stall [0-9.]+ ms$", stdout, re.M
        ), stdout
