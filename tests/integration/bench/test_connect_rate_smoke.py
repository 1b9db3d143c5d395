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
    costs = re.search(
        r"^  CPU per connect: server ([0-9.]+) ms, MongoDB store ([0-9.]+) ms, Redis ([0-9.]+) ms, "
        r"driver ([0-9.]+) ms; all ([0-9.]+) ms = at most ([0-9]+) connects/s on the ([0-9]+) "
        r"cores they share$",
        stdout,
        re.M,
    )
    assert costs, stdout
    *parts, total, cap, cores = (float(v) for v in costs.groups())
    # 20 connects are a few clock ticks of CPU: the figures are checked for what they add up
    # to, not for their size.
    assert total == pytest.approx(sum(parts), abs=0.03)  # each printed to two decimals
    if total >= 0.5:
        assert cap == pytest.approx(cores * 1000 / total, rel=0.02)
