"""CI's smoke of bench/side_by_side.py: the whole harness against a real Hypersend (Redis,
FerretDB on PostgreSQL, one pinned server process per workload), tiny workloads.

It runs `--smoke`: Hypersend only, driven by the Python stand-in of the load generator
(bench/side_by_side_pydriver.py), so CI builds neither Centrifugo nor bench/loadgen; the Go
generator and the Centrifugo column are exercised by `--quick` runs, not here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.bench.scripts import run_bench

pytestmark = pytest.mark.integration


def test_smoke_prints_the_table_and_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    stdout = run_bench(
        "side_by_side.py",
        "--smoke",
        "--json",
        str(out),
        timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith("HYPERSEND_")},
    )
    assert "| figure | Hypersend |" in stdout
    figures = json.loads(out.read_text())["figures"]["hypersend"]

    idle, seed, ramp = figures["idle"], figures["seed"], figures["ramp"]
    assert idle["connected"] == 200
    assert idle["connect_rate"] > 0
    # RSS per socket from /proc of the pinned server: a socket costs something, not megabytes
    assert 0 < idle["rss_per_socket_kib"] < 2048

    assert seed["connected"] == 20
    assert seed["sent"] > 0
    assert seed["acked"] == seed["sent"]
    assert seed["delivered_pct"] == 100.0
    assert seed["errors"] == 0
    assert seed["incomplete_messages"] == 0
    assert seed["duplicates"] == 0
    assert seed["earlier_messages"] == 0
    assert 0 < seed["p50_ms"] <= seed["p99_ms"] < 3000
    # CPU sampled from /proc: the server, FerretDB + the PostgreSQL tree, Redis
    assert seed["server_cores"] > 0
    assert seed["store_cores"] > 0
    assert seed["redis_cores"] >= 0
    assert seed["deliveries_per_cpu_s"] > 0
    assert seed["deliveries_per_cpu_s_all"] < seed["deliveries_per_cpu_s"]

    assert ramp["best_rate"] >= 5
