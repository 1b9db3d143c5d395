"""CI's smoke of bench/redis_parse.py against a real Redis: a few messages, one line out."""

from __future__ import annotations

import re

import pytest

from tests.integration.bench.scripts import run_bench

pytestmark = pytest.mark.integration


def test_smoke_receives_every_message_and_names_the_hiredis_parser() -> None:
    stdout = run_bench("redis_parse.py", "--messages", "2000", timeout=60)
    assert re.search(r"^_AsyncHiredisParser: 2000 pub/sub messages, [0-9.]+ µs", stdout, re.M), (
        stdout
    )
