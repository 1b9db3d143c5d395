"""CI's smoke of bench/connect_rate.py: a few sockets against a real server, Redis and FerretDB
(on SQLite), every one live, and the figures printed."""

from __future__ import annotations

import re

import pytest

from tests.integration.bench.scripts import run_bench

pytestmark = pytest.mark.integration


def test_smoke_connects_every_socket_and_prints_the_figures() -> None:
    args = ["--sockets", "20", "--rounds", "1", "--resume", "--backend", "sqlite", "--no-pin"]
    stdout = run_bench("connect_rate.py", *args, timeout=240)
    line = re.search(r"^round 1: 20/20 live .*$", stdout, re.M)
    assert line, stdout
    assert re.search(r"MongoDB commands/connect [0-9.]+, Redis round trips/connect", line[0])
    assert re.search(r"server/driver CPU [0-9.]+$", line[0]), line[0]
