"""Hypersend and Centrifugo side by side: the same workloads, the same load generator, one table.

    .venv/bin/python bench/side_by_side.py            # full size (issue #16), bounded ~18 min
    .venv/bin/python bench/side_by_side.py --quick    # same shapes, small and short (~3 min)

Each workload runs against a fresh server process pinned to core 1 while the load generator is
pinned to core 0 (bench/loadgen, Go, built into ~/.cache/hypersend/loadgen-<digest> when the
bench runs); Redis and FerretDB on PostgreSQL serve Hypersend, unpinned. Centrifugo v6.9.1 is
built from its Go module into ~/.cache/hypersend/centrifugo-v6.9.1 on first use (not by
./dev setup or CI), runs its memory engine with history 100 per channel and recovery forced on.

Workloads (bench/side_by_side_figures.py has the sizes): idle sockets without and with the client
offering permessage-deflate (server RSS per socket, connect rate), the seed load (4,000 users in
rooms of 10, 2 msg/user/min, 100-byte texts: delivered %, latency sender -> every member), a rate
ramp on 2,000 sockets (the highest msg/s with every delivery within 3 s), and the 10x load
(19,500 users, ~796 msg/s; capped by the open-files limit, 20,000 per process here). The harness
samples each server's CPU time and RSS from /proc, the CPU of the store (FerretDB and the
PostgreSQL process tree) and of Redis, and Hypersend's cost counters on /metrics
(hypersend_mongo_commands_total, hypersend_redis_commands_total; "n/a" where a server does not
export them).

--hypersend-url drives an existing Hypersend (e.g. the real node's, through a loopback forward):
users are seeded through its MongoDB (--mongo-url) and tokens minted with its key
(--jwt-secret); only the Hypersend column is printed, without /proc figures.
--smoke (CI) runs tiny workloads against Hypersend only, with a Python driver built on
clients/python (bench/side_by_side_pydriver.py), so CI builds neither Go program.
Everything listens on and dials 127.0.0.1 only, and every phase has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "tools", REPO / "clients" / "python"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from hypersend_devenv import build  # noqa: E402
from hypersend_devenv.datastores import (  # noqa: E402
    LOOPBACK,
    RedisServer,
    die_with_parent_hook,
    ferretdb_server,
)
from pydantic import SecretStr  # noqa: E402

from bench import side_by_side_figures as figs  # noqa: E402
from chatserver import auth  # noqa: E402
from chatserver.config import Settings  # noqa: E402

SERVER_CORE = 1
DRIVER_CORE = 0
TOKEN_TTL_SECONDS = 7200
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN_SOURCE = REPO / "bench" / "loadgen"
PYDRIVER = REPO / "bench" / "side_by_side_pydriver.py"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise SystemExit(f"{url}: this bench talks to loopback addresses only")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (the servers and the driver inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return int(target)


def pinned(core: int | None) -> Callable[[], None]:
    """A preexec_fn: pin the child (all its future threads) to `core`, and let it die with us."""
    die_with_parent = die_with_parent_hook()

    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        if die_with_parent is not None:
            die_with_parent()

    return setup


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def wait_http_ok(url: str, process: subprocess.Popen[bytes] | None, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=2)[0] == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {within:.0f}s")


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# --- /proc sampling --------------------------------------------------------------------------


def read_proc() -> list[figs.ProcStat]:
    stats = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stats.append(figs.parse_stat(Path(entry.path, "stat").read_text()))
    return stats


def wait_seconds(pid: int) -> float | None:
    """Run-queue wait of all of a process's threads (seconds)."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += figs.parse_schedstat_wait_ns(Path(task.path, "schedstat").read_text())
    except OSError:
        return None
    return total / 1e9


def rss_kib(pid: int) -> int | None:
    try:
        return figs.parse_rss_kib(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


@dataclass
class Watched:
    """The processes whose CPU one server's workload costs."""

    server: int | None = None
    store: list[int] = field(default_factory=list)
    redis: int | None = None
    driver: int | None = None
    metrics_url: str | None = None

    def sample(self) -> figs.Sample:
        procs = read_proc()

        def cpu(roots: list[int]) -> float | None:
            return figs.tree_ticks(procs, roots) / CLK_TCK if roots else None

        counters: dict[str, float | None] = {}
        if self.metrics_url is not None:
            try:
                counters = figs.cost_counters(http_get(self.metrics_url, timeout=10)[1])
            except OSError:
                counters = {}
        return figs.Sample(
            at=time.monotonic(),
            server_cpu=cpu([self.server] if self.server else []),
            server_rss_kib=rss_kib(self.server) if self.server else None,
            store_cpu=cpu(self.store),
            redis_cpu=cpu([self.redis] if self.redis else []),
            driver_cpu=cpu([self.driver] if self.driver else []),
            driver_rss_kib=rss_kib(self.driver) if self.driver else None,
            server_wait=wait_seconds(self.server) if self.server else None,
            driver_wait=wait_seconds(self.driver) if self.driver else None,
            counters=counters,
        )


def wait_rss_settled(pid: int | None, within: float = 10.0) -> None:
    """Wait until the server's RSS stops growing (two reads 0.5 s apart within 0.5 %)."""
    if pid is None:
        return
    deadline = time.monotonic() + within
    last = rss_kib(pid) or 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_kib(pid) or 0
        if abs(now - last) <= 0.005 * max(last, 1):
            return
        last = now


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Target:
    """One server under test: how to start a fresh process of it, and what the driver dials."""

    name: str
    ws_url: str = ""
    process: subprocess.Popen[bytes] | None = None
    start: Callable[[], None] | None = None
    stop: Callable[[], None] | None = None
    watched: Watched = field(default_factory=Watched)
    users: list[dict[str, str]] = field(default_factory=list)
    plan_extra: dict[str, Any] = field(default_factory=dict)


def centrifugo_config(port: int, secret: str, api_key: str) -> dict[str, Any]:
    """Memory engine, history 100 per channel with recovery forced on, clients may subscribe to
    and publish into channels (the chat rooms), loopback only, no usage statistics."""
    return {
        "http_server": {"address": LOOPBACK, "port": port},
        "log": {"level": "warn"},
        "engine": {"type": "memory"},
        "client": {"token": {"hmac_secret_key": secret}},
        "channel": {
            "without_namespace": {
                "history_size": 100,
                "history_ttl": "600s",
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
            }
        },
        "http_api": {"key": api_key},
        "health": {"enabled": True},
        "usage_stats": {"disabled": True},
    }


def centrifugo_target(binary: Path, workdir: Path, users: int, pin: bool) -> Target:
    secret = secrets.token_urlsafe(32)
    target = Target("centrifugo")
    target.users = [
        {"id": f"u{i}", "token": "", "room": f"r{i // figs.ROOM_SIZE}"} for i in range(users)
    ]
    target.plan_extra = {"hmac_secret": secret}

    def start() -> None:
        port = free_port()
        config = workdir / "centrifugo.json"
        config.write_text(json.dumps(centrifugo_config(port, secret, secrets.token_hex(16))))
        log = (workdir / "centrifugo.log").open("ab")
        target.process = subprocess.Popen(
            [str(binary), "--config", str(config)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(SERVER_CORE if pin else None),
        )
        target.ws_url = f"ws://{LOOPBACK}:{port}/connection/websocket"
        wait_http_ok(f"http://{LOOPBACK}:{port}/health", target.process)
        target.watched.server = target.process.pid

    def stop() -> None:
        stop_process(target.process)
        target.process = None

    target.start, target.stop = start, stop
    return target


def hypersend_env(redis_url: str, mongo_url: str, mongo_db: str, secret: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("HYPERSEND_")},
        "HYPERSEND_REDIS_URL": redis_url,
        "HYPERSEND_MONGO_URL": mongo_url,
        "HYPERSEND_MONGO_DB": mongo_db,
        "HYPERSEND_JWT_SECRET": secret,
        "HYPERSEND_ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL_SECONDS),
        "HYPERSEND_HOST": LOOPBACK,
        "HYPERSEND_POD_NAME": "side-by-side",
        "HYPERSEND_DRAIN_DELAY_SECONDS": "0",
        "HYPERSEND_DRAIN_SECONDS": "15",
        "HYPERSEND_LOG_LEVEL": "warning",
        # One load generator on loopback stands for many clients with many users: lift the
        # per-address and per-user limits (docs/configuration.md, "Abuse limits"), and the
        # socket cap, which would otherwise refuse the 10x load.
        "HYPERSEND_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
        "HYPERSEND_WS_IP_OPENS_PER_MINUTE": "1000000",
        "HYPERSEND_WS_MAX_UNAUTHENTICATED": "100000",
        "HYPERSEND_WS_MAX_CONNECTIONS": "100000",
        "HYPERSEND_RATE_LIMIT_PER_MINUTE": "1000000",
    }


async def seed_users(settings: Settings, users: int) -> list[dict[str, str]]:
    """Users in rooms of 10, created through the server's store layer (as bench/chat_load.py
    does: 19,500 registrations over REST would spend many minutes in argon2), with tokens.

    Each token names a login of its own, as a login's tokens do (chatserver/auth.py), so every
    connect also checks that login's revocation."""
    from bench.chat_load import seed

    user_ids, room_of = await seed(settings, users, figs.ROOM_SIZE)
    return [
        {
            "id": uid,
            "token": auth.issue_access_token(uid, settings, family_id=secrets.token_hex(8)),
            "room": room_of[uid],
        }
        for uid in user_ids
    ]


@contextlib.contextmanager
def hypersend_local(workdir: Path, users: int, backend: str, pin: bool) -> Iterator[Target]:
    """Redis + FerretDB (on `backend`) for the run; a fresh chat server process per workload."""
    secret = secrets.token_urlsafe(48)
    mongo_db = f"sbs_{secrets.token_hex(4)}"
    with RedisServer() as redis, ferretdb_server(backend) as mongo:  # type: ignore[arg-type]
        target = Target("hypersend")
        store = [mongo.process.pid] if mongo.process else []
        if mongo.postgres is not None and mongo.postgres.process is not None:
            store.append(mongo.postgres.process.pid)
        target.watched = Watched(store=store, redis=redis.process.pid if redis.process else None)
        settings = Settings(
            jwt_secret=SecretStr(secret),
            mongo_url=SecretStr(mongo.url),
            mongo_db=mongo_db,
            access_token_ttl_seconds=TOKEN_TTL_SECONDS,
        )
        started = time.monotonic()
        target.users = asyncio.run(seed_users(settings, users))
        print(f"# seeded {users} Hypersend users in {time.monotonic() - started:.1f}s", flush=True)
        env = hypersend_env(redis.url, mongo.url, mongo_db, secret)

        def start() -> None:
            port = free_port()
            log = (workdir / "hypersend.log").open("ab")
            target.process = subprocess.Popen(
                [sys.executable, "-m", "chatserver"],
                cwd=REPO,
                env={**env, "HYPERSEND_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned(SERVER_CORE if pin else None),
            )
            base = f"http://{LOOPBACK}:{port}"
            wait_http_ok(f"{base}/readyz", target.process)
            target.ws_url = f"ws://{LOOPBACK}:{port}/ws"
            target.watched.server = target.process.pid
            target.watched.metrics_url = f"{base}/metrics"

        def stop() -> None:
            stop_process(target.process)
            target.process = None

        target.start, target.stop = start, stop
        yield target


def hypersend_remote(
    url: str, mongo_url: str, mongo_db: str | None, jwt_secret: str, users: int
) -> Target:
    """An existing Hypersend deployment: seeded through its MongoDB, tokens minted with its key."""
    base = url.rstrip("/")
    settings = Settings(
        jwt_secret=SecretStr(jwt_secret),
        mongo_url=SecretStr(mongo_url),
        access_token_ttl_seconds=TOKEN_TTL_SECONDS,
    )
    if mongo_db:
        settings = settings.model_copy(update={"mongo_db": mongo_db})
    target = Target("hypersend", ws_url="ws" + base.removeprefix("http") + "/ws")
    target.watched = Watched(metrics_url=f"{base}/metrics")
    target.users = asyncio.run(seed_users(settings, users))
    return target


# --- one workload ----------------------------------------------------------------------------


def plan_for(target: Target, workload: figs.Workload) -> dict[str, Any]:
    return {
        "protocol": target.name,
        "url": target.ws_url,
        "mode": workload.mode,
        "users": target.users[: workload.users],
        "deflate": workload.deflate,
        "connect_concurrency": 64,
        "connect_timeout_s": workload.connect_timeout_s,
        "warmup_s": workload.warmup_s,
        "rate": workload.rate,
        "duration_s": workload.duration_s,
        "settle_s": workload.settle_s,
        "text_bytes": 100,
        "ramp": {
            "start_rate": workload.ramp_start,
            "factor": workload.ramp_factor,
            "step_s": workload.ramp_step_s,
            "max_rate": workload.ramp_max_rate,
            "within_s": workload.ramp_within_s,
            "max_steps": workload.ramp_steps,
        },
        "deadline_s": workload.bound_seconds() + 30,
        "hold_s": 60,
        **target.plan_extra,
    }


def driver_command(driver: Path | None, plan_path: Path) -> list[str]:
    if driver is None:
        return [sys.executable, str(PYDRIVER), str(plan_path)]
    return [str(driver), str(plan_path)]


def run_workload(
    target: Target, workload: figs.Workload, driver: Path | None, workdir: Path, pin: bool
) -> figs.Outcome:
    outcome = figs.Outcome(workload, cores=len(os.sched_getaffinity(0)))
    if target.start is not None:
        target.start()
    plan_path = workdir / f"plan-{target.name}-{workload.name}.json"
    plan_path.write_text(json.dumps(plan_for(target, workload)))
    watched = target.watched
    outcome.samples["start"] = watched.sample()
    stderr = (workdir / f"driver-{target.name}.log").open("ab")
    proc = subprocess.Popen(
        driver_command(driver, plan_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        preexec_fn=pinned(DRIVER_CORE if pin else None),
    )
    watched.driver = proc.pid
    # The driver stops by itself at its deadline; this only guards against a hung pipe.
    timer = threading.Timer(workload.bound_seconds() + 60, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        for raw in proc.stdout:
            event = json.loads(raw)
            kind = event.get("event")
            if kind == "step":
                outcome.steps.append(event)
                print(
                    f"    step {event['rate']:.0f} msg/s: {event['delivered']}/"
                    f"{event['expected']} delivered "
                    f"({event.get('incomplete_messages', '?')} messages incomplete), "
                    f"{event['acked']}/{event['sent']} acked, errors {event['errors'] or 'none'}, "
                    f"max {event.get('max_ms') or 0:.0f} ms: {'ok' if event['ok'] else 'FAILED'}"
                    f"{' (the load generator was the limit)' if event.get('driver_bound') else ''}",
                    flush=True,
                )
                continue
            outcome.events[str(kind)] = event
            if kind == "error":
                outcome.error = str(event.get("error"))
            elif kind == "connected":
                outcome.samples["connected"] = watched.sample()
                print(
                    f"    connected {event['connected']}/{event['wanted']} in "
                    f"{event['seconds']:.1f}s ({event['rate']:.0f}/s); failures "
                    f"{event['failures'] or 'none'}",
                    flush=True,
                )
                if workload.mode == "idle":
                    wait_rss_settled(watched.server)
                    outcome.samples["settled"] = watched.sample()
                    _release(proc.stdin)
            elif kind in ("measure_start", "measure_end"):
                outcome.samples[str(kind)] = watched.sample()
        proc.wait(30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watched.driver = None
        stderr.close()
        if target.stop is not None:
            target.stop()
    if proc.returncode != 0 and outcome.error is None:
        outcome.error = f"driver exited with {proc.returncode} (log {stderr.name})"
    return outcome


def _release(stdin: IO[bytes]) -> None:
    with contextlib.suppress(BrokenPipeError):
        stdin.write(b"\n")
        stdin.flush()


# --- the run ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small, short workloads (~3 min)")
    size.add_argument(
        "--smoke",
        action="store_true",
        help="tiny workloads, Hypersend only, Python driver (CI; builds no Go program)",
    )
    parser.add_argument(
        "--servers",
        choices=("both", "hypersend", "centrifugo"),
        default="both",
        help="which servers to run (default both)",
    )
    parser.add_argument(
        "--workloads", help="comma-separated subset of idle,idle_deflate,seed,ramp,tenx"
    )
    parser.add_argument(
        "--driver",
        choices=("go", "python"),
        help="load generator: bench/loadgen (default) or the Python one (Hypersend only)",
    )
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--hypersend-url",
        help="drive this existing Hypersend (loopback, e.g. a forward to the real node's "
        "Service) instead of starting one; needs --mongo-url and --jwt-secret",
    )
    parser.add_argument("--mongo-url", help="with --hypersend-url: its MongoDB, for seeding")
    parser.add_argument("--mongo-db", help="with --hypersend-url: its HYPERSEND_MONGO_DB")
    parser.add_argument(
        "--jwt-secret",
        default=os.environ.get("HYPERSEND_JWT_SECRET"),
        help="with --hypersend-url: its HYPERSEND_JWT_SECRET (default: that variable)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores 0 and 1")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--log-dir", type=Path, help="logs and plans (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.servers = "hypersend"
        args.driver = args.driver or "python"
    args.driver = args.driver or "go"
    if args.hypersend_url:
        check_loopback(args.hypersend_url)
        if not (args.mongo_url and args.jwt_secret):
            parser.error("--hypersend-url needs --mongo-url and --jwt-secret (for seeding)")
        check_loopback(args.mongo_url)
        args.servers = "hypersend"
    if args.driver == "python" and args.servers != "hypersend":
        parser.error("the Python driver speaks Hypersend's protocol only: add --servers hypersend")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile: figs.Profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    fd_limit = raise_fd_limit()
    loads = figs.workloads(profile, fd_limit)
    if args.workloads:
        wanted = set(args.workloads.split(","))
        loads = [w for w in loads if w.name in wanted]
    servers = list(figs.SERVERS) if args.servers == "both" else [args.servers]
    pin = (
        not args.no_pin and len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)
    )
    bound = figs.run_bound_seconds(loads, len(servers))
    print(
        f"# side by side ({profile}): {', '.join(servers)}; workloads "
        f"{', '.join(f'{w.name}({w.users})' for w in loads)}; open-files limit {fd_limit} "
        f"(each process: sockets + {figs.FD_RESERVE} reserve); "
        f"{'server on core 1, load generator on core 0' if pin else 'not pinned'}; "
        f"bounded by {bound / 60:.0f} min",
        flush=True,
    )
    driver = None
    if args.driver == "go":
        driver = build.build_own_module("loadgen", LOADGEN_SOURCE)
    centrifugo_bin = None
    if "centrifugo" in servers:
        build.ensure(["centrifugo"])
        centrifugo_bin = build.CENTRIFUGO.path("centrifugo")
    users = max((w.users for w in loads), default=0)
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    raw: dict[str, dict[str, Any]] = {}
    failed = False
    with contextlib.ExitStack() as stack:
        workdir = args.log_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        targets: list[Target] = []
        for name in servers:
            if name == "centrifugo":
                assert centrifugo_bin is not None
                targets.append(centrifugo_target(centrifugo_bin, workdir, users, pin))
            elif args.hypersend_url:
                targets.append(
                    hypersend_remote(
                        args.hypersend_url, args.mongo_url, args.mongo_db, args.jwt_secret, users
                    )
                )
            else:
                targets.append(
                    stack.enter_context(hypersend_local(workdir, users, args.backend, pin))
                )
        for workload in loads:
            for target in targets:
                print(f"## {workload.name} against {target.name}", flush=True)
                outcome = run_workload(target, workload, driver, workdir, pin)
                if outcome.error:
                    failed = True
                    print(f"    FAILED: {outcome.error}", flush=True)
                results.setdefault(target.name, {})[workload.name] = figs.figures(outcome)
                raw.setdefault(target.name, {})[workload.name] = {
                    "events": outcome.events,
                    "steps": outcome.steps,
                    "samples": {k: asdict(v) for k, v in outcome.samples.items()},
                    "error": outcome.error,
                }
    print()
    print(figs.render_table(results, servers))
    for warning in figs.busy_warnings(results):
        print(f"WARNING: {warning}")
    if args.json:
        args.json.write_text(json.dumps({"figures": results, "raw": raw}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
