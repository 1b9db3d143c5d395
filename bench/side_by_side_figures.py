"""The pure half of bench/side_by_side.py: workload sizes, /proc and /metrics parsing, figures,
and the side-by-side table. No I/O here; tests/unit/bench/test_side_by_side.py tests it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Profile = Literal["full", "quick", "smoke"]
SERVERS = ("hypersend", "centrifugo")
# Open files a process needs besides its sockets: the Hypersend server's datastore pools, logs,
# the interpreter's files; the load generator's few.
FD_RESERVE = 500
# The 10x load: 19,500 users; capped by the per-process open-files limit of the server
# and of the load generator (20,000 in this container, not raisable here).
TENX_USERS = 19_500
ROOM_SIZE = 10


@dataclass(frozen=True)
class Workload:
    """One workload, identical for both servers."""

    name: str
    mode: Literal["idle", "load", "ramp"]
    users: int
    connect_timeout_s: float
    deflate: bool = False
    rate: float = 0.0  # messages per second (load), all users together
    duration_s: float = 0.0
    settle_s: float = 0.0
    warmup_s: float = 0.0
    ramp_start: float = 0.0
    ramp_factor: float = 1.5
    ramp_step_s: float = 0.0
    ramp_steps: int = 0
    ramp_within_s: float = 3.0
    ramp_max_rate: float = 50_000.0

    def bound_seconds(self) -> float:
        """The most this workload can take against one server (every timeout hit)."""
        setup = 10.0  # server start-up and stop
        if self.mode == "idle":
            return setup + self.connect_timeout_s + 10.0  # RSS settling
        if self.mode == "load":
            return setup + self.connect_timeout_s + self.warmup_s + self.duration_s + self.settle_s
        per_step = self.ramp_step_s + self.ramp_within_s + 0.5
        return setup + self.connect_timeout_s + self.warmup_s + self.ramp_steps * per_step


def socket_budget(fd_limit: int, reserve: int = FD_RESERVE) -> int:
    """Sockets one process can hold under an open-files limit of `fd_limit`."""
    return max(0, fd_limit - reserve)


def tenx_users(fd_limit: int) -> int:
    """The 10x load's users: 19,500, fewer when the open-files limit cannot hold them (whole
    rooms only)."""
    users = min(TENX_USERS, socket_budget(fd_limit))
    return users - users % ROOM_SIZE


def workloads(profile: Profile, fd_limit: int) -> list[Workload]:
    """The workloads of a run. full: the issue's sizes; quick: the same shapes, small and short
    (proves the harness end to end in ~2 minutes); smoke: tiny (CI)."""
    if profile == "full":
        tenx = tenx_users(fd_limit)
        # Connect timeouts leave Hypersend's current ~140 connects/s room (the figure):
        # 19,500 sockets take ~140 s.
        return [
            Workload("idle", "idle", 2_000, connect_timeout_s=25),
            Workload("idle_deflate", "idle", 2_000, connect_timeout_s=25, deflate=True),
            Workload(
                "seed", "load", 4_000, connect_timeout_s=45, rate=4_000 * 2 / 60,
                duration_s=60, settle_s=8, warmup_s=3,
            ),
            Workload(
                "ramp", "ramp", 2_000, connect_timeout_s=25, warmup_s=3, ramp_start=100,
                ramp_factor=1.5, ramp_step_s=4, ramp_steps=13,
            ),
            # The 10x figure: ~796 msg/s from 19,500 users.
            Workload(
                "tenx", "load", tenx, connect_timeout_s=150, rate=796 * tenx / TENX_USERS,
                duration_s=30, settle_s=8, warmup_s=3,
            ),
        ]  # fmt: skip
    if profile == "quick":
        return [
            Workload("idle", "idle", 300, connect_timeout_s=30),
            Workload("idle_deflate", "idle", 300, connect_timeout_s=30, deflate=True),
            Workload(
                "seed", "load", 400, connect_timeout_s=30, rate=400 * 2 / 60, duration_s=15,
                settle_s=5, warmup_s=2,
            ),
            Workload(
                "ramp", "ramp", 200, connect_timeout_s=30, warmup_s=2, ramp_start=50,
                ramp_factor=2, ramp_step_s=3, ramp_steps=4,
            ),
            Workload(
                "tenx", "load", 1_000, connect_timeout_s=40, rate=100, duration_s=10,
                settle_s=5, warmup_s=2,
            ),
        ]  # fmt: skip
    return [
        # 200: ~3 MiB of sockets, well above the noise of a process's RSS (20 sockets, ~300
        # KiB, once measured -6.8 KiB per socket when the server freed memory meanwhile).
        Workload("idle", "idle", 200, connect_timeout_s=20),
        Workload(
            "seed", "load", 20, connect_timeout_s=20, rate=10, duration_s=3, settle_s=5,
            warmup_s=0.5,
        ),
        Workload(
            "ramp", "ramp", 20, connect_timeout_s=20, warmup_s=0.5, ramp_start=5, ramp_factor=2,
            ramp_step_s=2, ramp_steps=2,
        ),
    ]  # fmt: skip


def run_bound_seconds(loads: Sequence[Workload], servers: int, setup_s: float = 90.0) -> float:
    """Upper bound of a whole run: every workload against every server, plus datastore start-up
    and seeding."""
    return setup_s + servers * sum(w.bound_seconds() for w in loads)


# --- /proc -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this bench reads (times in clock ticks)."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    def ticks(self, children: bool = False) -> int:
        own = self.utime + self.stime
        return own + (self.cutime + self.cstime if children else 0)


def parse_stat(text: str) -> ProcStat:
    """/proc/<pid>/stat: the command name (field 2) is in parentheses and may hold spaces and
    parentheses itself, so fields are counted from the last ')'."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()
    # tail starts at field 3 (state); ppid is field 4, utime..cstime are fields 14..17.
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def parse_rss_kib(status: str) -> int:
    """VmRSS of /proc/<pid>/status, in KiB (0 for a process without one, e.g. a zombie)."""
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, flags=re.MULTILINE)
    return int(match.group(1)) if match else 0


def parse_schedstat_wait_ns(text: str) -> int:
    """/proc/<pid>/task/<tid>/schedstat: time on the CPU, time waiting on a run queue (both ns),
    timeslices. The wait says how much a thread wanted a CPU it did not get: on an idle machine
    with pinned processes it stays near 0."""
    return int(text.split()[1])


def descendants(stats: Iterable[ProcStat], roots: Iterable[int]) -> set[int]:
    """The pids of `roots` and of every process below them (PostgreSQL's backends)."""
    children: dict[int, list[int]] = {}
    for st in stats:
        children.setdefault(st.ppid, []).append(st.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def tree_ticks(stats: Iterable[ProcStat], roots: Iterable[int]) -> int:
    """CPU ticks of a process tree: every live member's own time, plus the children's time
    each member collected from its exited children (PostgreSQL backends that ended)."""
    listed = list(stats)
    members = descendants(listed, roots)
    return sum(st.ticks(children=True) for st in listed if st.pid in members)


# --- /metrics --------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)(?:\s+\d+)?$")


def metric_sum(text: str, name: str) -> float | None:
    """The sum of a Prometheus metric over all its label sets; None when the server does not
    export it (e.g. a Hypersend before hypersend_mongo_commands_total existed)."""
    total: float | None = None
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1) == name:
            total = (total or 0.0) + float(match.group(3))
    return total


COST_METRICS = {
    "mongo": "hypersend_mongo_commands_total",
    "redis": "hypersend_redis_commands_total",
    "redis_round_trips": "hypersend_redis_round_trips_total",
}


def cost_counters(text: str) -> dict[str, float | None]:
    return {key: metric_sum(text, name) for key, name in COST_METRICS.items()}


def delta(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return after - before


def per(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# --- one workload's figures ------------------------------------------------------------------


@dataclass
class Sample:
    """What the harness reads at one instant: server, store, Redis and load-generator CPU
    (seconds), the server's RSS (KiB), and the Hypersend cost counters."""

    at: float
    server_cpu: float | None = None
    server_rss_kib: int | None = None
    store_cpu: float | None = None
    redis_cpu: float | None = None
    driver_cpu: float | None = None
    driver_rss_kib: int | None = None
    # seconds the server's / the generator's threads waited for a CPU (run-queue time)
    server_wait: float | None = None
    driver_wait: float | None = None
    counters: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Outcome:
    """One workload against one server: the driver's events and the harness's samples."""

    workload: Workload
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # last event of each kind
    steps: list[dict[str, Any]] = field(default_factory=list)  # ramp steps
    samples: dict[str, Sample] = field(default_factory=dict)  # "start", "connected", ...
    error: str | None = None
    cores: int | None = None  # the cores server, store, Redis and generator share


def _span(outcome: Outcome, attr: str, first: str, last: str) -> float | None:
    a, b = outcome.samples.get(first), outcome.samples.get(last)
    if a is None or b is None:
        return None
    va, vb = getattr(a, attr), getattr(b, attr)
    if va is None or vb is None:
        return None
    return float(vb - va)


def _counter_span(outcome: Outcome, key: str, first: str, last: str) -> float | None:
    a, b = outcome.samples.get(first), outcome.samples.get(last)
    if a is None or b is None:
        return None
    return delta(b.counters.get(key), a.counters.get(key))


def connect_costs(outcome: Outcome, connected: float | None) -> dict[str, float | None]:
    """Each process's CPU per connect (ms) while the sockets connected, their sum, and the connect
    rate that sum caps at on the cores they share: a connect rate needs the whole machine's CPU
    per connect to fit, the server's share alone does not set it."""
    at_connect = outcome.samples.get("connected")
    spans = {
        "server": _span(outcome, "server_cpu", "start", "connected"),
        "store": _span(outcome, "store_cpu", "start", "connected"),
        "redis": _span(outcome, "redis_cpu", "start", "connected"),
        # The generator starts after "start": all its CPU so far is the connects'.
        "driver": at_connect.driver_cpu if at_connect is not None else None,
    }
    out = {
        f"{who}_ms_per_connect": per(None if cpu is None else cpu * 1000, connected)
        for who, cpu in spans.items()
    }
    all_ms = None
    if spans["server"] is not None and spans["driver"] is not None:
        all_ms = per(sum(cpu or 0.0 for cpu in spans.values()) * 1000, connected)
    out["all_ms_per_connect"] = all_ms
    cores = outcome.cores
    out["connect_rate_cap"] = None if not all_ms or not cores else cores * 1000 / all_ms
    return out


def figures(outcome: Outcome) -> dict[str, float | None]:
    """The figures of one workload against one server (None: not measured / not available)."""
    w = outcome.workload
    out: dict[str, float | None] = {}
    connected = outcome.events.get("connected", {})
    n = connected.get("connected")
    out["connected"] = n
    out["connect_rate"] = connected.get("rate")
    out["connect_seconds"] = connected.get("seconds")
    at_connect = outcome.samples.get("connected")
    driver_rss = at_connect.driver_rss_kib if at_connect is not None else None
    out["driver_rss_mib"] = None if driver_rss is None else driver_rss / 1024
    if w.mode == "idle":
        rss = _span(outcome, "server_rss_kib", "start", "settled")
        out["rss_per_socket_kib"] = per(rss, n)
        out["mongo_per_connect"] = per(_counter_span(outcome, "mongo", "start", "connected"), n)
        out.update(connect_costs(outcome, n))
        return out
    elapsed = _span(outcome, "at", "measure_start", "measure_end")
    server_cpu = _span(outcome, "server_cpu", "measure_start", "measure_end")
    store_cpu = _span(outcome, "store_cpu", "measure_start", "measure_end")
    redis_cpu = _span(outcome, "redis_cpu", "measure_start", "measure_end")
    driver_cpu = _span(outcome, "driver_cpu", "measure_start", "measure_end")
    out["server_cores"] = per(server_cpu, elapsed)
    out["store_cores"] = per(store_cpu, elapsed)
    out["redis_cores"] = per(redis_cpu, elapsed)
    out["driver_cores"] = per(driver_cpu, elapsed)
    out["server_wait_share"] = per(
        _span(outcome, "server_wait", "measure_start", "measure_end"), elapsed
    )
    out["driver_wait_share"] = per(
        _span(outcome, "driver_wait", "measure_start", "measure_end"), elapsed
    )
    if w.mode == "load":
        res = outcome.events.get("result", {})
        delivered, expected, acked = res.get("delivered"), res.get("expected"), res.get("acked")
        out["sent"] = res.get("sent")
        out["acked"] = acked
        out["delivered_pct"] = None if not expected else 100.0 * (delivered or 0) / expected
        out["p50_ms"], out["p99_ms"] = res.get("p50_ms"), res.get("p99_ms")
        out["errors"] = float(sum((res.get("errors") or {}).values())) if res else None
        out["closed"] = float(sum((res.get("closed") or {}).values())) if res else None
        out["incomplete_messages"] = res.get("incomplete_messages")
        out["schedule_lag_ms"] = res.get("schedule_lag_ms")
        out["duplicates"] = res.get("duplicates")
        out["earlier_messages"] = res.get("earlier_messages")
        # sends per second of sending (the settling wait after it does not count)
        out["msg_rate"] = per(res.get("sent"), res.get("send_seconds") or res.get("seconds"))
        out["bytes_per_delivery"] = per(res.get("delivery_bytes") or None, delivered)
        out["deliveries_per_cpu_s"] = per(delivered, server_cpu)
        all_cpu = None
        if server_cpu is not None:
            all_cpu = server_cpu + (store_cpu or 0.0) + (redis_cpu or 0.0)
        out["deliveries_per_cpu_s_all"] = per(delivered, all_cpu)
        out["mongo_per_message"] = per(
            _counter_span(outcome, "mongo", "measure_start", "measure_end"), acked
        )
        out["redis_per_message"] = per(
            _counter_span(outcome, "redis", "measure_start", "measure_end"), acked
        )
        out["redis_round_trips_per_message"] = per(
            _counter_span(outcome, "redis_round_trips", "measure_start", "measure_end"), acked
        )
        return out
    result = outcome.events.get("result", {})
    best = result.get("best_rate")
    out["best_rate"] = best
    # Every step passed: the ramp's top is a lower bound of the server's limit.
    out["ramp_capped"] = None if best is None else float(bool(result.get("capped")))
    out["best_deliveries"] = None if best is None else best * ROOM_SIZE
    return out


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    workload: str
    key: str
    unit: str = ""
    digits: int = 0
    server_only: bool = False  # Hypersend-side figure: no Centrifugo value, no ratio


ROWS: tuple[Row, ...] = (
    Row("idle socket RSS, no compression offered", "idle", "rss_per_socket_kib", "KiB", 1),
    Row("idle socket RSS, client offers permessage-deflate", "idle_deflate",
        "rss_per_socket_kib", "KiB", 1),
    Row("connect rate at the 10x load (auth + live)", "tenx", "connect_rate", "/s"),
    Row("sockets connected at the 10x load", "tenx", "connected"),
    Row("connect rate, idle sockets", "idle", "connect_rate", "/s"),
    Row("CPU per idle socket's connect: server", "idle", "server_ms_per_connect", "ms", 2),
    Row("… store: FerretDB + PostgreSQL", "idle", "store_ms_per_connect", "ms", 2, True),
    Row("… Redis", "idle", "redis_ms_per_connect", "ms", 2, True),
    Row("… load generator", "idle", "driver_ms_per_connect", "ms", 2),
    Row("… all of them", "idle", "all_ms_per_connect", "ms", 2),
    Row("connect rate the machine's cores allow at that cost", "idle", "connect_rate_cap", "/s"),
    Row("seed load: messages sent per second", "seed", "msg_rate", "/s", 1),
    Row("seed load: delivered", "seed", "delivered_pct", "%", 1),
    Row("seed load: delivery p50", "seed", "p50_ms", "ms", 2),
    Row("seed load: delivery p99", "seed", "p99_ms", "ms", 2),
    Row("seed load: error frames", "seed", "errors"),
    Row("seed load: messages some member never got", "seed", "incomplete_messages"),
    Row("seed load: duplicate deliveries", "seed", "duplicates"),
    Row("seed load: earlier workloads' messages filled in", "seed", "earlier_messages"),
    Row("10x load: messages sent per second", "tenx", "msg_rate", "/s", 1),
    Row("10x load: delivered", "tenx", "delivered_pct", "%", 1),
    Row("10x load: delivery p50", "tenx", "p50_ms", "ms", 2),
    Row("10x load: delivery p99", "tenx", "p99_ms", "ms", 2),
    Row("10x load: error frames", "tenx", "errors"),
    Row("10x load: messages some member never got", "tenx", "incomplete_messages"),
    Row("10x load: duplicate deliveries", "tenx", "duplicates"),
    Row("10x load: earlier workloads' messages filled in", "tenx", "earlier_messages"),
    Row("10x load: sockets closed by the server", "tenx", "closed"),
    Row("ramp: highest msg/s, every delivery within 3 s", "ramp", "best_rate", "/s"),
    Row("ramp: deliveries/s at that rate", "ramp", "best_deliveries", "/s"),
    Row("deliveries per server CPU-second (seed)", "seed", "deliveries_per_cpu_s"),
    Row("deliveries per server CPU-second (10x)", "tenx", "deliveries_per_cpu_s"),
    Row("… counting store + Redis CPU (seed)", "seed", "deliveries_per_cpu_s_all"),
    Row("bytes per delivered frame (100-byte text)", "seed", "bytes_per_delivery", "B"),
    Row("server CPU (seed)", "seed", "server_cores", "cores", 2),
    Row("server CPU (10x)", "tenx", "server_cores", "cores", 2),
    Row("store CPU: FerretDB + PostgreSQL (seed)", "seed", "store_cores", "cores", 2, True),
    Row("store CPU: FerretDB + PostgreSQL (10x)", "tenx", "store_cores", "cores", 2, True),
    Row("Redis CPU (seed)", "seed", "redis_cores", "cores", 2, True),
    Row("Redis CPU (10x)", "tenx", "redis_cores", "cores", 2, True),
    Row("MongoDB round trips per stored message (seed)", "seed", "mongo_per_message", "", 2, True),
    Row("MongoDB round trips per stored message (10x)", "tenx", "mongo_per_message", "", 2, True),
    Row("MongoDB round trips per connect", "idle", "mongo_per_connect", "", 2, True),
    Row("Redis commands per message (seed)", "seed", "redis_per_message", "", 2, True),
    Row("Redis round trips per message (seed)", "seed", "redis_round_trips_per_message", "", 2,
        True),
    Row("load generator CPU (seed; 1.00 = its core is full)", "seed", "driver_cores", "cores", 2),
    Row("load generator CPU (10x)", "tenx", "driver_cores", "cores", 2),
    Row("load generator CPU (ramp)", "ramp", "driver_cores", "cores", 2),
    Row("load generator RSS at the 10x load", "tenx", "driver_rss_mib", "MiB"),
    Row("server waited for a CPU (share of the time; ~0 on an idle machine), seed", "seed",
        "server_wait_share", "", 2),
    Row("… ramp", "ramp", "server_wait_share", "", 2),
    Row("… 10x", "tenx", "server_wait_share", "", 2),
    Row("load generator waited for a CPU, ramp", "ramp", "driver_wait_share", "", 2),
    Row("load generator's worst lag behind its send schedule (10x)", "tenx", "schedule_lag_ms",
        "ms", 1),
)  # fmt: skip

Figures = Mapping[str, Mapping[str, Mapping[str, float | None]]]  # server -> workload -> key


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip() if unit and unit != "%" else text + unit


def ratio(a: float | None, b: float | None) -> float | None:
    """Hypersend / Centrifugo; None when either is missing or the divisor is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratio_text(value: float | None, lower_bounds: Sequence[bool]) -> str:
    """The ratio cell. A lower bound in the divisor makes the ratio an upper bound (and the other
    way round); with both bounded it says nothing."""
    if value is None or all(lower_bounds):
        return "n/a"
    prefix = "≤ " if lower_bounds[1] else "≥ " if lower_bounds[0] else ""
    return f"{prefix}{fmt(value, 2)}x"


def table_rows(results: Figures, servers: Sequence[str]) -> list[list[str]]:
    """One row per figure that any server measured: label, a value per server, the ratio."""
    rows: list[list[str]] = []
    both = list(servers) == list(SERVERS)
    for row in ROWS:
        values = [results.get(s, {}).get(row.workload, {}).get(row.key) for s in servers]
        if all(v is None for v in values) and not any(
            row.workload in results.get(s, {}) for s in servers
        ):
            continue  # that workload did not run
        cells = [row.label]
        bounds: list[bool] = []  # per server: the value is only a lower bound
        for server, value in zip(servers, values, strict=True):
            capped = results.get(server, {}).get(row.workload, {}).get("ramp_capped")
            lower = row.key in ("best_rate", "best_deliveries") and bool(capped)
            bounds.append(lower and value is not None)
            if row.server_only and server != "hypersend":
                cells.append("—")
                continue
            text = fmt(value, row.digits, row.unit)
            cells.append("≥ " + text if bounds[-1] else text)
        if both:
            r = None if row.server_only else ratio(values[0], values[1])
            cells.append("—" if row.server_only else ratio_text(r, bounds))
        rows.append(cells)
    return rows


BUSY_SHARE = 0.05


def busy_warnings(results: Figures) -> list[str]:
    """Workloads during which the server or the generator waited for a CPU more than 5 % of the
    time: another process shared their cores, so their figures do not compare."""
    warnings = []
    for server, by_workload in results.items():
        for workload, values in by_workload.items():
            for key, who in (("server_wait_share", "server"), ("driver_wait_share", "generator")):
                share = values.get(key)
                if share is not None and share > BUSY_SHARE:
                    warnings.append(
                        f"{server} {workload}: the {who} waited for a CPU {share:.0%} of the "
                        "time (a busy machine): rerun on an idle one"
                    )
    return warnings


def render_table(results: Figures, servers: Sequence[str]) -> str:
    """A Markdown table: | figure | Hypersend | Centrifugo | Hypersend / Centrifugo |."""
    header = ["figure", *(s.capitalize() for s in servers)]
    if list(servers) == list(SERVERS):
        header.append("Hypersend / Centrifugo")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results, servers)]
    return "\n".join(lines)
