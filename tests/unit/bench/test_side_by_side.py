"""The pure half of the side-by-side bench (bench/side_by_side_figures.py): /proc and /metrics
parsing, workload sizing under the open-files limit, figures and the table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypersend_devenv import build

from bench import side_by_side_figures as figs

pytestmark = pytest.mark.unit


def _stat_line(pid: int, comm: str, ppid: int, times: tuple[int, int, int, int]) -> str:
    # Fields 3..17 of proc(5): state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt,
    # cminflt, majflt, cmajflt, utime, stime, cutime, cstime; then the rest.
    utime, stime, cutime, cstime = times
    rest = f"S {ppid} 1 1 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0"
    return f"{pid} ({comm}) {rest} 123 456789 1000\n"


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    line = _stat_line(42, "postgres: bench (x) idle", 7, (11, 22, 33, 44))
    st = figs.parse_stat(line)
    assert (st.pid, st.ppid, st.utime, st.stime, st.cutime, st.cstime) == (42, 7, 11, 22, 33, 44)
    assert st.ticks() == 33
    assert st.ticks(children=True) == 33 + 77


def test_parse_stat_reads_this_process() -> None:
    st = figs.parse_stat(Path("/proc/self/stat").read_text())
    assert st.pid == os.getpid()
    assert st.ppid == os.getppid()


def test_parse_rss_kib() -> None:
    status = "Name:\tpython\nVmPeak:\t  9000 kB\nVmRSS:\t  123456 kB\nThreads:\t3\n"
    assert figs.parse_rss_kib(status) == 123456
    assert figs.parse_rss_kib("Name:\tzombie\nState:\tZ (zombie)\n") == 0
    assert figs.parse_rss_kib(Path("/proc/self/status").read_text()) > 1000


def test_schedstat_wait() -> None:
    assert figs.parse_schedstat_wait_ns("197008103 29150409 566\n") == 29150409
    tasks = Path(f"/proc/{os.getpid()}/task")
    assert all(
        figs.parse_schedstat_wait_ns((t / "schedstat").read_text()) >= 0 for t in tasks.iterdir()
    )


def test_busy_machine_warnings() -> None:
    results = {
        "hypersend": {"seed": {"server_wait_share": 0.01, "driver_wait_share": 0.2}},
        "centrifugo": {"ramp": {"server_wait_share": 0.3}, "idle": {}},
    }
    warnings = figs.busy_warnings(results)
    assert len(warnings) == 2
    assert warnings[0].startswith("hypersend seed: the generator waited for a CPU 20%")
    assert warnings[1].startswith("centrifugo ramp: the server waited for a CPU 30%")


def test_tree_ticks_sums_the_tree_with_reaped_children_and_nothing_else() -> None:
    procs = [
        figs.parse_stat(_stat_line(10, "postgres", 1, (100, 50, 7, 3))),  # postmaster
        figs.parse_stat(_stat_line(11, "postgres: writer", 10, (5, 5, 0, 0))),
        figs.parse_stat(_stat_line(12, "postgres: bench db", 10, (20, 10, 0, 0))),
        figs.parse_stat(_stat_line(13, "worker", 12, (1, 1, 0, 0))),
        figs.parse_stat(_stat_line(20, "ferretdb", 1, (300, 30, 0, 0))),
        figs.parse_stat(_stat_line(30, "redis-server", 1, (999, 999, 0, 0))),
    ]
    assert figs.descendants(procs, [10]) == {10, 11, 12, 13}
    assert figs.tree_ticks(procs, [10]) == 160 + 10 + 30 + 2
    assert figs.tree_ticks(procs, [10, 20]) == 202 + 330
    assert figs.tree_ticks(procs, []) == 0


METRICS = """\
# HELP hypersend_mongo_commands_total MongoDB commands this process started
# TYPE hypersend_mongo_commands_total counter
hypersend_mongo_commands_total{command="insert"} 120.0
hypersend_mongo_commands_total{command="find"} 30.0
hypersend_mongo_commands_created{command="insert"} 1.7962e+09
hypersend_redis_commands_total{command="evalsha"} 2.5e+02
hypersend_redis_round_trips_total 100.0
process_cpu_seconds_total 3.5
"""


def test_metric_sum_adds_label_sets_and_says_none_when_absent() -> None:
    assert figs.metric_sum(METRICS, "hypersend_mongo_commands_total") == 150.0
    assert figs.metric_sum(METRICS, "process_cpu_seconds_total") == 3.5
    assert figs.metric_sum(METRICS, "hypersend_missing_total") is None
    assert figs.cost_counters(METRICS) == {
        "mongo": 150.0,
        "redis": 250.0,
        "redis_round_trips": 100.0,
    }
    assert figs.cost_counters("process_cpu_seconds_total 1\n") == {
        "mongo": None,
        "redis": None,
        "redis_round_trips": None,
    }


def test_sizing_follows_the_open_files_limit() -> None:
    assert figs.tenx_users(20_000) == 19_500
    assert figs.tenx_users(1_048_576) == 19_500
    assert figs.tenx_users(10_000) == 9_500
    assert figs.tenx_users(1_234) == 730  # whole rooms of 10 only
    assert figs.tenx_users(100) == 0
    assert figs.socket_budget(20_000) == 20_000 - figs.FD_RESERVE


def test_full_run_is_the_issue_workload_and_bounded() -> None:
    loads = {w.name: w for w in figs.workloads("full", 20_000)}
    assert list(loads) == ["idle", "idle_deflate", "seed", "ramp", "tenx"]
    assert loads["idle_deflate"].deflate
    assert not loads["idle"].deflate
    assert loads["seed"].users == 4_000
    assert loads["seed"].rate == pytest.approx(133.3, abs=0.1)
    assert loads["tenx"].users == 19_500
    assert loads["tenx"].rate == pytest.approx(796)
    assert loads["ramp"].users == 2_000
    assert loads["ramp"].ramp_within_s == 3.0
    # Every timeout hit against both servers: under 20 minutes.
    bound = figs.run_bound_seconds(list(loads.values()), servers=2)
    assert 10 * 60 < bound <= 20 * 60
    smoke = figs.workloads("smoke", 20_000)
    assert figs.run_bound_seconds(smoke, servers=1) < 5 * 60
    assert all(w.users % figs.ROOM_SIZE == 0 for w in [*loads.values(), *smoke])


def _outcome(workload: figs.Workload, **samples: figs.Sample) -> figs.Outcome:
    outcome = figs.Outcome(workload)
    outcome.samples.update(samples)
    return outcome


def test_idle_figures_per_socket() -> None:
    w = figs.Workload("idle", "idle", 2_000, connect_timeout_s=10)
    outcome = _outcome(
        w,
        start=figs.Sample(at=0, server_rss_kib=60_000, counters={"mongo": 10.0}),
        connected=figs.Sample(at=5, server_rss_kib=140_000, counters={"mongo": 4_010.0}),
        settled=figs.Sample(at=6, server_rss_kib=150_000, counters={"mongo": 4_012.0}),
    )
    outcome.events["connected"] = {"connected": 2_000, "rate": 400.0, "seconds": 5.0}
    got = figs.figures(outcome)
    assert got["rss_per_socket_kib"] == 45.0
    assert got["mongo_per_connect"] == 2.0
    assert got["connect_rate"] == 400.0


def test_idle_figures_cpu_per_connect_and_the_rate_the_cores_allow() -> None:
    w = figs.Workload("idle", "idle", 2_000, connect_timeout_s=10)
    outcome = _outcome(
        w,
        start=figs.Sample(at=0, server_cpu=1.0, store_cpu=3.0, redis_cpu=0.5),
        # the generator started after "start": all its CPU is the connects'
        connected=figs.Sample(at=5, server_cpu=4.0, store_cpu=5.0, redis_cpu=0.7, driver_cpu=0.8),
    )
    outcome.cores = 2
    outcome.events["connected"] = {"connected": 2_000, "rate": 400.0, "seconds": 5.0}
    got = figs.figures(outcome)
    assert got["server_ms_per_connect"] == pytest.approx(1.5)
    assert got["store_ms_per_connect"] == pytest.approx(1.0)
    assert got["redis_ms_per_connect"] == pytest.approx(0.1)
    assert got["driver_ms_per_connect"] == pytest.approx(0.4)
    assert got["all_ms_per_connect"] == pytest.approx(3.0)
    assert got["connect_rate_cap"] == pytest.approx(2 * 1000 / 3.0)


def test_a_server_without_datastores_costs_its_own_and_the_generators_cpu() -> None:
    w = figs.Workload("idle", "idle", 1_000, connect_timeout_s=10)
    outcome = _outcome(
        w,
        start=figs.Sample(at=0, server_cpu=0.2),
        connected=figs.Sample(at=1, server_cpu=0.4, driver_cpu=0.3),
    )
    outcome.cores = 2
    outcome.events["connected"] = {"connected": 1_000, "rate": 1_000.0, "seconds": 1.0}
    got = figs.figures(outcome)
    assert got["store_ms_per_connect"] is None
    assert got["all_ms_per_connect"] == pytest.approx(0.5)
    assert got["connect_rate_cap"] == pytest.approx(4_000)
    # without the cores they shared there is no cap to give
    outcome.cores = None
    assert figs.figures(outcome)["connect_rate_cap"] is None


def test_load_figures() -> None:
    w = figs.Workload("seed", "load", 4_000, connect_timeout_s=10, rate=133, duration_s=60)
    outcome = _outcome(
        w,
        measure_start=figs.Sample(
            at=100, server_cpu=10, store_cpu=50, redis_cpu=1, driver_cpu=2, server_wait=1,
            counters={"mongo": 1_000.0, "redis": None, "redis_round_trips": 50.0},
        ),
        measure_end=figs.Sample(
            at=160, server_cpu=40, store_cpu=110, redis_cpu=7, driver_cpu=8, server_wait=4,
            counters={"mongo": 10_000.0, "redis": None, "redis_round_trips": 7_550.0},
        ),
    )  # fmt: skip
    outcome.events["result"] = {
        "sent": 8_000,
        "acked": 7_500,
        "expected": 80_000,
        "delivered": 60_000,
        "delivery_bytes": 60_000 * 480,
        "seconds": 62.0,
        "send_seconds": 50.0,
        "p50_ms": 3.0,
        "p99_ms": 40.0,
        "errors": {"internal": 3, "write: close 1006": 1},
        "closed": {"close 1012": 2},
    }
    got = figs.figures(outcome)
    assert got["delivered_pct"] == 75.0
    assert got["errors"] == 4
    assert got["msg_rate"] == 160.0
    assert got["closed"] == 2
    assert got["server_cores"] == 0.5
    assert got["store_cores"] == 1.0
    assert got["redis_cores"] == 0.1
    assert got["driver_cores"] == 0.1
    assert got["server_wait_share"] == 0.05
    assert got["driver_wait_share"] is None
    assert got["deliveries_per_cpu_s"] == 2_000
    assert got["deliveries_per_cpu_s_all"] == 60_000 / 96
    assert got["bytes_per_delivery"] == 480
    assert got["mongo_per_message"] == 9_000 / 7_500
    assert got["redis_per_message"] is None  # not exported: n/a, not a crash
    assert got["redis_round_trips_per_message"] == 1.0


def test_figures_of_a_failed_run_are_none_not_errors() -> None:
    w = figs.Workload("seed", "load", 40, connect_timeout_s=10, rate=1, duration_s=1)
    got = figs.figures(figs.Outcome(w))
    assert got["delivered_pct"] is None
    assert got["deliveries_per_cpu_s"] is None


def _results() -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "hypersend": {
            "seed": {"p99_ms": 50.0, "delivered_pct": 57.0, "store_cores": 1.2, "errors": 0.0},
            "ramp": {"best_rate": 127.0, "best_deliveries": 1270.0, "ramp_capped": 0.0},
        },
        "centrifugo": {
            "seed": {"p99_ms": 3.3, "delivered_pct": 100.0, "store_cores": None, "errors": 0.0},
            "ramp": {"best_rate": 8008.0, "best_deliveries": 80080.0, "ramp_capped": 1.0},
        },
    }


def test_ratio_of_bounds() -> None:
    assert figs.ratio_text(0.5, [False, False]) == "0.50x"
    assert figs.ratio_text(0.5, [False, True]) == "≤ 0.50x"
    assert figs.ratio_text(2.0, [True, False]) == "≥ 2.00x"
    assert figs.ratio_text(1.0, [True, True]) == "n/a"
    assert figs.ratio_text(None, [False, False]) == "n/a"


def _row(rows: list[list[str]], label: str) -> list[str]:
    return next(r for r in rows if r[0] == label)


def test_table_has_both_servers_and_their_ratio() -> None:
    rows = figs.table_rows(_results(), figs.SERVERS)
    assert _row(rows, "seed load: delivery p99") == [
        "seed load: delivery p99",
        "50.00 ms",
        "3.30 ms",
        "15.15x",
    ]
    assert _row(rows, "seed load: delivered")[1:] == ["57.0%", "100.0%", "0.57x"]
    # 0 / 0: no ratio
    assert _row(rows, "seed load: error frames")[1:] == ["0", "0", "n/a"]
    # a datastore figure exists for Hypersend only
    assert _row(rows, "store CPU: FerretDB + PostgreSQL (seed)")[1:] == ["1.20 cores", "—", "—"]
    # a ramp that never failed is a lower bound
    assert _row(rows, "ramp: highest msg/s, every delivery within 3 s")[1:] == [
        "127 /s",
        "≥ 8,008 /s",
        "≤ 0.02x",
    ]
    # workloads that did not run have no rows; measured-but-missing figures say n/a
    assert not any(r[0].startswith("10x load") for r in rows)
    assert _row(rows, "seed load: delivery p50")[1:] == ["n/a", "n/a", "n/a"]


def test_table_for_one_server_has_no_ratio_column() -> None:
    results = {"hypersend": _results()["hypersend"]}
    text = figs.render_table(results, ["hypersend"])
    lines = text.splitlines()
    assert lines[0] == "| figure | Hypersend |"
    assert "| seed load: delivery p99 | 50.00 ms |" in lines
    assert all(line.count("|") == 3 for line in lines)


def test_centrifugo_is_built_on_demand_only() -> None:
    # `./dev setup` (and so CI) builds build.PARTS; Centrifugo must not be among them.
    assert "centrifugo" not in build.PARTS
    assert build.ALL_PARTS["centrifugo"] is build.CENTRIFUGO
    assert "centrifugo" in build.BUILDERS


def test_loadgen_cache_key_follows_its_sources(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "main.go").write_text("package main\n")
    first = build.source_digest(tmp_path)
    (tmp_path / "README.md").write_text("not a source\n")
    assert build.source_digest(tmp_path) == first
    (tmp_path / "main.go").write_text("package main\n\nfunc main() {}\n")
    assert build.source_digest(tmp_path) != first
