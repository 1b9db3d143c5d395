"""Redis, FerretDB (MongoDB wire protocol) and PostgreSQL processes on loopback, for tests and runs.

    with RedisServer() as redis, FerretDBServer() as mongo:
        print(redis.url, mongo.url)   # redis://127.0.0.1:<port>/0  mongodb://127.0.0.1:<port>/

    with ferretdb_server(backend="postgresql") as mongo:   # PostgreSQL, then FerretDB on it
        print(mongo.url)

Each server starts on a free 127.0.0.1 port, is ready only once it answers a real protocol ping
(RESP `PING` / OP_MSG `{ping: 1}` / a PostgreSQL startup reaching ReadyForQuery), fails with the
tail of its log when it does not come up, and stops with SIGTERM (PostgreSQL: SIGINT, its fast
shutdown) then SIGKILL. Servers started from the main thread die with their parent
(PR_SET_PDEATHSIG on Linux), so a killed test run leaves no server behind.

API (all classes): `Server(state_dir=None)` (None: a temporary directory removed on stop; a path:
kept, so data survives restarts), `.start()`, `.stop()`, context manager, `.url`, `.port`,
`.process`, `.log_path` (the server's stdout+stderr). Failures raise `DatastoreError` with the log
tail. `RedisServer(port=...)` and `FerretDBServer(port=...)` keep one port across a stop and start
(fault tests restart them under running clients). `FerretDBServer(binary=...)` defaults to the
cached build; `FerretDBServer(backend="postgresql", postgresql_url=PostgresServer.url)` stores in
PostgreSQL instead of SQLite, and `ferretdb_server(backend, state_dir)` starts whatever the backend
needs, stopped in reverse order.

CLI: `python -m hypersend_devenv.datastores [--state-dir DIR] [--backend sqlite|postgresql]`
prints the URLs as shell assignments (REDIS_URL=..., MONGO_URL=..., and POSTGRESQL_URL=... for the
PostgreSQL backend) and keeps the servers up until Ctrl-C.

Redis is Debian's `redis-server`, without persistence. FerretDB is the wrapper build from
`python -m hypersend_devenv.build ferretdb` (embeddable FerretDB: telemetry off and locked, no
debug listener, nothing dials out), on SQLite in a data directory by default. PostgreSQL is
Debian's (`apt install postgresql`; `./dev setup` does it): its own cluster made by `initdb` in the
state directory, trust authentication for local and loopback connections only, listening on
127.0.0.1 and a Unix socket in its data directory, with fsync off (a bench/test instance: a
machine crash may lose it), and a GIN twin of each index FerretDB makes, so FerretDB's pushed-down
lookups use an index as they would on MongoDB (PG_GIN_TWINS says why). PostgreSQL refuses to run
as root, so as root it runs as the `postgres` user and its directory is handed to that user.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self, get_args
from urllib.parse import parse_qs, quote, urlsplit

import bson

from hypersend_devenv import build

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 30
LOOPBACK = "127.0.0.1"

OP_MSG = 2013
RESP_PING = b"*1\r\n$4\r\nPING\r\n"
_LISTENING = re.compile(r"^listening (mongodb://\S+)$", re.MULTILINE)

Backend = Literal["sqlite", "postgresql"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

PG_USER = "postgres"  # the cluster's superuser (initdb -U), also the OS user when run as root
PG_DATABASE = "ferretdb"
PG_PROTOCOL_3 = 196608  # StartupMessage protocol version 3.0
PG_DUPLICATE_DATABASE = "42P04"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
# FerretDB v1 turns a MongoDB index into a btree over `_jsonb->'field'` expressions, but pushes
# an equality filter down as jsonb containment (`_jsonb->'field' @> '"value"'`), which a btree
# cannot serve: every lookup, even by `_id`, scanned its table (25-33 ms at 97,500 documents).
# A GIN `jsonb_path_ops` twin over the same expressions serves containment, so lookups cost what
# they cost on MongoDB, where these are index lookups (0.6 ms through FerretDB). GIN's pending
# list, which every lookup scans, is kept to its 64 kB minimum: with the default 4 MB a lookup
# cost 7-9 ms after a bulk insert, and without the list inserts took twice as long. An event
# trigger makes the twin of each btree FerretDB creates; the DO block twins the ones kept from
# an earlier run.
PG_GIN_TWINS = r"""
CREATE OR REPLACE FUNCTION hypersend_gin_twin(btree oid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  idx record;
  columns text;
BEGIN
  SELECT c.relname, i.indrelid::regclass AS tbl, i.indnatts, am.amname, i.indexprs IS NOT NULL
           AND 0 = ALL (i.indkey::int2[]) AS expressions_only
    INTO idx
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
   WHERE i.indexrelid = btree;
  IF NOT FOUND OR idx.amname <> 'btree' OR NOT idx.expressions_only THEN
    RETURN;
  END IF;
  SELECT string_agg('(' || pg_get_indexdef(btree, k, true) || ') jsonb_path_ops', ', ' ORDER BY k)
    INTO columns FROM generate_series(1, idx.indnatts) AS k;
  IF columns NOT LIKE '%_jsonb%' THEN
    RETURN;
  END IF;
  EXECUTE format(
    'CREATE INDEX IF NOT EXISTS %I ON %s USING gin (%s) WITH (gin_pending_list_limit = 64)',
    left(idx.relname, 59) || '_gin', idx.tbl, columns);
END $$;

CREATE OR REPLACE FUNCTION hypersend_gin_twins() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
  made record;
BEGIN
  FOR made IN SELECT objid FROM pg_event_trigger_ddl_commands()
               WHERE command_tag = 'CREATE INDEX' AND object_type = 'index'
  LOOP
    PERFORM hypersend_gin_twin(made.objid);
  END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS hypersend_gin_twins;
CREATE EVENT TRIGGER hypersend_gin_twins ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION hypersend_gin_twins();

DO $$ DECLARE btree oid; BEGIN
  FOR btree IN SELECT indexrelid FROM pg_index LOOP PERFORM hypersend_gin_twin(btree); END LOOP;
END $$;
"""


class DatastoreError(RuntimeError):
    """A server did not start, or did not answer its ping."""


# --- pure parts ------------------------------------------------------------------------------


def redis_command(redis_server: str, port: int, workdir: Path) -> list[str]:
    """redis-server arguments: loopback only, no persistence, logs to stdout."""
    return [
        redis_server,
        "--port", str(port),
        "--bind", LOOPBACK,
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(workdir),
        "--logfile", "",
    ]  # fmt: skip


def ferretdb_command(
    ferretdb: Path | str,
    sqlite_dir: Path | None,
    port: int = 0,
    *,
    postgresql_url: str | None = None,
) -> list[str]:
    """Wrapper-binary arguments for exactly one backend: SQLite in `sqlite_dir`, or the loopback
    PostgreSQL at `postgresql_url`. Port 0 lets the kernel pick; the binary prints the real one."""
    if (sqlite_dir is None) == (postgresql_url is None):
        raise ValueError("give exactly one of sqlite_dir and postgresql_url")
    if postgresql_url is not None:
        check_loopback_postgresql_url(postgresql_url)
        backend = ["--handler=postgresql", f"--postgresql-url={postgresql_url}"]
    else:
        assert sqlite_dir is not None
        backend = ["--handler=sqlite", f"--sqlite-url={sqlite_url(sqlite_dir)}"]
    return [str(ferretdb), f"--listen-addr={LOOPBACK}:{port}", *backend, "--log-level=warn"]


def sqlite_url(directory: Path) -> str:
    """FerretDB wants a `file:` URI of a directory, ending with a slash."""
    return f"file:{directory.resolve()}/"


def postgresql_url(port: int, database: str = PG_DATABASE, user: str = PG_USER) -> str:
    """A libpq/pgx URL of a loopback server with trust authentication (no password)."""
    return f"postgres://{quote(user, safe='')}@{LOOPBACK}:{port}/{quote(database, safe='')}"


def check_loopback_postgresql_url(url: str) -> None:
    """Refuse a PostgreSQL URL that could reach anything but 127.0.0.1 over TCP.

    libpq/pgx also take hosts from a `host=` query parameter (several, or a socket directory)
    and fall back to defaults without a host, so only an explicit 127.0.0.1 with a port passes.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise DatastoreError(f"not a postgres:// URL: {url!r}")
    try:
        port = parts.port  # ValueError for a bad port or a host list ("a:1,b:2")
    except ValueError:
        port = None
    overrides = {"host", "hostaddr", "port", "service"} & parse_qs(parts.query).keys()
    if parts.hostname != LOOPBACK or port is None or overrides:
        raise DatastoreError(
            f"PostgreSQL URL must name {LOOPBACK}:<port> and no other host: {url!r}"
        )


def initdb_command(initdb: Path | str, data_dir: Path, user: str = PG_USER) -> list[str]:
    """A cluster with trust authentication: initdb writes `trust` into pg_hba.conf for the Unix
    socket and for host 127.0.0.1/32 and ::1/128 only; no password, nothing else may connect."""
    return [
        str(initdb),
        f"--pgdata={data_dir}",
        f"--username={user}",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",  # a throwaway cluster: no need to flush it to disk
        "--no-instructions",
    ]


def postgres_command(postgres: Path | str, data_dir: Path, port: int) -> list[str]:
    """The postmaster on 127.0.0.1 only, its Unix socket in the data directory (not the system's
    /var/run/postgresql), logging to stderr."""
    return [
        str(postgres),
        "-D", str(data_dir),
        "-p", str(port),
        "-k", str(data_dir),
        "-c", f"listen_addresses={LOOPBACK}",
        # A bench/test instance: durability traded for speed. A crash of the machine (not of
        # postgres) may lose or corrupt the cluster; never use these settings for real data.
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "logging_collector=off",
        # FerretDB v1 sends every pushed-down equality as one cached prepared statement,
        # `_jsonb->$1 @> $2`. A generic plan cannot match `$1` to an index's expression and
        # scans the table; a plan made with the parameters uses the GIN twins (PG_GIN_TWINS).
        "-c", "plan_cache_mode=force_custom_plan",
    ]  # fmt: skip


def pg_bin_dir(candidates: Sequence[Path]) -> Path | None:
    """The directory among `candidates` holding initdb and postgres; of several
    /usr/lib/postgresql/<major>/bin ones the newest major (15 sorts above 9.6)."""

    def major(path: Path) -> tuple[int, ...]:
        version = path.parent.name
        return tuple(int(n) for n in version.split(".")) if re.fullmatch(r"[\d.]+", version) else ()

    usable = [c for c in candidates if (c / "initdb").is_file() and (c / "postgres").is_file()]
    return max(usable, key=major, default=None)


def pg_startup_message(user: str = PG_USER, database: str = PG_DATABASE) -> bytes:
    """A protocol 3.0 StartupMessage (length, version, key/value C strings, a final NUL)."""
    params = b"".join(f"{k}\0{v}\0".encode() for k, v in (("user", user), ("database", database)))
    body = struct.pack("!i", PG_PROTOCOL_3) + params + b"\0"
    return struct.pack("!i", 4 + len(body)) + body


def pg_query_message(sql: str) -> bytes:
    """A simple-protocol Query message."""
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!i", 4 + len(body)) + body


PG_TERMINATE = b"X" + struct.pack("!i", 4)


def pg_split_messages(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The complete backend messages (type byte, body) at the start of `data`, and the rest."""
    messages: list[tuple[bytes, bytes]] = []
    while len(data) >= 5:
        (length,) = struct.unpack_from("!i", data, 1)
        if length < 4:
            raise DatastoreError(f"bad PostgreSQL message length {length}")
        if len(data) < 1 + length:
            break
        messages.append((data[:1], data[5 : 1 + length]))
        data = data[1 + length :]
    return messages, data


def pg_error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields by code letter (S severity, C SQLSTATE, M message)."""
    fields: dict[str, str] = {}
    for item in body.split(b"\0"):
        if item:
            fields[item[:1].decode()] = item[1:].decode(errors="replace")
    return fields


def listening_url(log: str) -> str | None:
    """The MongoDB URI the FerretDB wrapper printed once its listener was bound, if any yet."""
    match = _LISTENING.search(log)
    return match.group(1) if match else None


def redis_url(port: int, db: int = 0) -> str:
    return f"redis://{LOOPBACK}:{port}/{db}"


def is_pong(reply: bytes) -> bool:
    return reply.startswith(b"+PONG\r\n")


def op_msg(document: dict[str, Any], request_id: int = 1) -> bytes:
    """An OP_MSG frame with one body section (kind 0), as a MongoDB driver sends it."""
    body = struct.pack("<IB", 0, 0) + bson.encode(document)
    header = struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG)
    return header + body


def op_msg_length(header: bytes) -> int:
    """Total length of the frame whose first 16 bytes are `header`."""
    (length,) = struct.unpack_from("<i", header, 0)
    if length < 21:
        raise DatastoreError(f"bad OP_MSG length {length}")
    return int(length)


def parse_op_msg(frame: bytes) -> dict[str, Any]:
    """The body document of an OP_MSG reply."""
    length, _, _, opcode = struct.unpack_from("<iiii", frame, 0)
    if opcode != OP_MSG or length != len(frame):
        raise DatastoreError(f"unexpected reply: opcode {opcode}, length {length}/{len(frame)}")
    _flags, kind = struct.unpack_from("<IB", frame, 16)
    if kind != 0:
        raise DatastoreError(f"unexpected OP_MSG section kind {kind}")
    document: dict[str, Any] = bson.decode(frame[21:])
    return document


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --- protocol pings (one short TCP exchange each) -------------------------------------------


def ping_redis(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(RESP_PING)
            return is_pong(sock.recv(64))
    except OSError:
        return False


def ping_mongo(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(op_msg({"ping": 1, "$db": "admin"}))
            header = _recv_exactly(sock, 16)
            frame = header + _recv_exactly(sock, op_msg_length(header) - 16)
            return parse_op_msg(frame).get("ok") == 1
    except (OSError, DatastoreError):
        return False


class PostgresError(DatastoreError):
    """An ErrorResponse from PostgreSQL; `sqlstate` is its five-character code."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.sqlstate = fields.get("C", "")
        super().__init__(
            f"PostgreSQL {fields.get('S', 'ERROR')} {self.sqlstate}: {fields.get('M')}"
        )


def pg_session(
    port: int, sql: str | None = None, database: str = "postgres", timeout: float = 1.0
) -> None:
    """Connect to 127.0.0.1:`port` as PG_USER (trust only: no password is ever sent), wait for
    ReadyForQuery, run `sql` if given, and say goodbye. Raises PostgresError on a server error,
    DatastoreError if the server wants a password, OSError on connection problems."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(pg_startup_message(PG_USER, database))
        pending, buffer = sql, b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise DatastoreError("PostgreSQL closed the connection mid-reply")
            messages, buffer = pg_split_messages(buffer + chunk)
            for kind, body in messages:
                if kind == b"E":
                    raise PostgresError(pg_error_fields(body))
                if kind == b"R" and (method := struct.unpack_from("!i", body)[0]) != 0:
                    raise DatastoreError(f"PostgreSQL asks for authentication method {method}")
                if kind == b"Z":
                    if pending is None:
                        sock.sendall(PG_TERMINATE)
                        return
                    sock.sendall(pg_query_message(pending))
                    pending = None


def ping_postgres(port: int, timeout: float = 1.0) -> bool:
    """True once the server takes a connection all the way to ReadyForQuery (while it starts
    up or recovers it answers with an error, 57P03, instead)."""
    try:
        pg_session(port, timeout=timeout)
    except (OSError, DatastoreError):
        return False
    return True


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise DatastoreError("connection closed mid-reply")
        data += chunk
    return data


def free_port() -> int:
    """A port free right now; the server may still lose a race for it, so callers retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --- processes -------------------------------------------------------------------------------


def _resolve_prctl() -> Callable[[int, int], int] | None:
    # Resolved in the parent: a forked child should call into libc, not dlopen it.
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _resolve_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the thread that started it exits."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with_parent_hook() -> Callable[[], None] | None:
    """A Popen `preexec_fn` that has the child SIGKILLed when this process ends, or None where
    that cannot be promised: no prctl, or a caller off the main thread (PDEATHSIG follows the
    starting *thread*; only the main thread lives as long as the process)."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    return _die_with_parent


class _ServerProcess:
    """One server child process with its log file and working directory.

    Subclasses implement `_check` (preconditions, before anything is created) and `_start`
    (spawn and wait until ready). A failed start leaves no process behind but keeps the directory,
    which holds the log the error names.
    """

    kind = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, state_dir: Path | str | None) -> None:
        self._state_dir = None if state_dir is None else Path(state_dir)
        self._temp_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # Children run as this user when set (PostgreSQL refuses root); None: as we run.
        self._run_as: pwd.struct_passwd | None = None

    @property
    def dir(self) -> Path:
        """The state directory, or a temporary one created on first use and removed on stop."""
        if self._state_dir is not None:
            return self._state_dir
        if self._temp_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix=f"hypersend-{self.kind}-"))
        return self._temp_dir

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.kind}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _check(self) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._check()
        try:
            self._start()
        except BaseException:
            self._kill()
            raise

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT; drop a temp dir."""
        self._kill(grace=STOP_TIMEOUT)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _spawn(self, command: Sequence[str]) -> subprocess.Popen[bytes]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(command),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **self._user_args(),
        )
        return self.process

    def _user_args(self) -> dict[str, Any]:
        """Popen arguments for the child's user and die-with-parent set-up.

        Popen switches user before it calls preexec_fn, which matters: the kernel clears
        PDEATHSIG on a change of credentials, so it must be set after the switch. extra_groups=[]
        drops root's supplementary groups.
        """
        args: dict[str, Any] = {"preexec_fn": die_with_parent_hook()}
        if self._run_as is not None:
            args |= {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        return args

    def _kill(self, grace: float = 0.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_until(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll `ready` until it holds; fail fast when the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.process is not None and self.process.poll() is not None:
                raise DatastoreError(
                    f"{self.kind} exited with code {self.process.returncode} before it could "
                    f"{what}; log {self.log_path}:\n{log_tail(self._read_log())}"
                )
            time.sleep(0.05)
        raise DatastoreError(
            f"{self.kind} did not {what} within {timeout:.0f}s; "
            f"log {self.log_path}:\n{log_tail(self._read_log())}"
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_ServerProcess):
    """Debian's redis-server on a free loopback port, without persistence."""

    kind = "redis"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        binary: str | None = None,
        start_timeout: float = START_TIMEOUT,
        port: int = 0,
    ) -> None:
        super().__init__(state_dir)
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.start_timeout = start_timeout
        # 0: a free port on each start; a fixed one lets a restart keep the URL (fault tests).
        self.requested_port = port
        self.port = port

    @property
    def url(self) -> str:
        return redis_url(self.port)

    def _check(self) -> None:
        if shutil.which(self.binary) is None:
            raise DatastoreError(
                f"{self.binary} not found: install Debian's redis-server (./dev setup does it)"
            )

    def _start(self) -> None:
        # A free port can be taken between our probe and redis' bind: retry on a fresh port.
        for attempt in range(3):
            self.port = self.requested_port or free_port()
            self._spawn(redis_command(self.binary, self.port, self.dir))
            try:
                self._wait_until(lambda: ping_redis(self.port), "answer PING", self.start_timeout)
                return
            except DatastoreError:
                lost_race = "Address already in use" in self._read_log()
                if not lost_race or attempt == 2 or self.requested_port:
                    raise
                self._kill()


class FerretDBServer(_ServerProcess):
    """FerretDB v1 on a loopback port chosen by the kernel, on SQLite (in its directory) or on
    the loopback PostgreSQL at `postgresql_url` (database and server must exist already)."""

    kind = "ferretdb"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        binary: Path | str | None = None,
        port: int = 0,
        start_timeout: float = START_TIMEOUT,
        *,
        backend: Backend = "sqlite",
        postgresql_url: str | None = None,
    ) -> None:
        super().__init__(state_dir)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if (backend == "postgresql") != (postgresql_url is not None):
            raise ValueError("postgresql_url is required by, and only by, backend='postgresql'")
        self.binary = Path(binary) if binary is not None else build.FERRETDB.path("ferretdb")
        self.requested_port = port
        self.start_timeout = start_timeout
        self.backend = backend
        self.postgresql_url = postgresql_url
        self.port = 0
        # The PostgreSQL server that ferretdb_server() started for this one, if any.
        self.postgres: PostgresServer | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/"

    @property
    def sqlite_dir(self) -> Path:
        return self.dir / "sqlite"

    def _check(self) -> None:
        if not self.binary.exists():
            raise DatastoreError(
                f"{self.binary} is missing: build it with "
                "`PYTHONPATH=tools python -m hypersend_devenv.build ferretdb` (./dev setup does it)"
            )
        if self.postgresql_url is not None:
            check_loopback_postgresql_url(self.postgresql_url)

    def _start(self) -> None:
        sqlite_dir = None
        if self.backend == "sqlite":
            sqlite_dir = self.sqlite_dir
            sqlite_dir.mkdir(parents=True, exist_ok=True)
        command = ferretdb_command(
            self.binary, sqlite_dir, self.requested_port, postgresql_url=self.postgresql_url
        )
        self._spawn(command)
        self._wait_until(self._bound, "bind its listener", self.start_timeout)
        self._wait_until(lambda: ping_mongo(self.port), "answer ping", self.start_timeout)

    def _bound(self) -> bool:
        url = listening_url(self._read_log())
        if url is None:
            return False
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])
        return True


class PostgresServer(_ServerProcess):
    """Debian's PostgreSQL: a fresh cluster in `<dir>/data` (kept when `state_dir` is given),
    on a free 127.0.0.1 port, with `database` created for FerretDB."""

    kind = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") waits for clients to leave

    def __init__(
        self,
        state_dir: Path | str | None = None,
        bin_dir: Path | str | None = None,
        database: str = PG_DATABASE,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        super().__init__(state_dir)
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_pg_bin_dir()
        self.database = database
        self.start_timeout = start_timeout
        self.port = 0

    @property
    def url(self) -> str:
        return postgresql_url(self.port, self.database)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def _check(self) -> None:
        if self.bin_dir is None or pg_bin_dir([self.bin_dir]) is None:
            where = self.bin_dir or f"pg_config --bindir, {PG_BIN_GLOB}"
            raise DatastoreError(
                f"PostgreSQL's initdb and postgres not found in {where}: install Debian's "
                "postgresql (./dev setup does it)"
            )
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(PG_USER)
            except KeyError:
                raise DatastoreError(
                    f"PostgreSQL refuses to run as root and there is no {PG_USER!r} user to run "
                    "it as (Debian's postgresql package creates it)"
                ) from None

    def _start(self) -> None:
        assert self.bin_dir is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            # initdb creates data/ inside, as that user; the log files stay root's.
            os.chown(self.dir, self._run_as.pw_uid, self._run_as.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        # A free port can be taken between our probe and the bind: retry on a fresh port.
        for attempt in range(3):
            self.port = free_port()
            self._spawn(postgres_command(self.bin_dir / "postgres", self.data_dir, self.port))
            try:
                self._wait_until(
                    lambda: ping_postgres(self.port), "accept connections", self.start_timeout
                )
                break
            except DatastoreError:
                lost_race = "Address already in use" in self._read_log()
                if not lost_race or attempt == 2:
                    raise
                self._kill(grace=STOP_TIMEOUT)
        quoted = self.database.replace('"', '""')
        try:
            pg_session(self.port, f'CREATE DATABASE "{quoted}"', timeout=self.start_timeout)
        except PostgresError as error:
            if error.sqlstate != PG_DUPLICATE_DATABASE:  # kept from an earlier run
                raise
        pg_session(self.port, PG_GIN_TWINS, database=self.database, timeout=self.start_timeout)

    def _initdb(self) -> None:
        assert self.bin_dir is not None
        log_path = self.dir / "initdb.log"
        with log_path.open("wb") as log:
            result = subprocess.run(
                initdb_command(self.bin_dir / "initdb", self.data_dir),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout * 4,  # it writes a few dozen MB
                check=False,
                **self._user_args(),
            )
        if result.returncode != 0:
            raise DatastoreError(
                f"initdb exited with code {result.returncode}; log {log_path}:\n"
                f"{log_tail(log_path.read_text(errors='replace'))}"
            )


def find_pg_bin_dir() -> Path | None:
    """PostgreSQL's server binaries: `pg_config --bindir`, else the directory `initdb` on PATH
    links to, else the newest Debian major version in /usr/lib/postgresql."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if found := pg_bin_dir([Path(out)]):
                return found
    initdb = shutil.which("initdb")
    if initdb is not None and (found := pg_bin_dir([Path(initdb).resolve().parent])):
        return found
    return pg_bin_dir(sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/"))))


@contextlib.contextmanager
def ferretdb_server(
    backend: Backend = "sqlite",
    state_dir: Path | str | None = None,
    binary: Path | str | None = None,
) -> Iterator[FerretDBServer]:
    """FerretDB on `backend`, with PostgreSQL started first (and stopped last) when it needs it.

    With `state_dir`, FerretDB keeps its files in `<state_dir>/ferretdb` and PostgreSQL its
    cluster in `<state_dir>/postgres`; the PostgreSQL server is the yielded one's `.postgres`.
    """
    base = None if state_dir is None else Path(state_dir)
    with contextlib.ExitStack() as stack:
        postgres = None
        if backend == "postgresql":
            postgres = stack.enter_context(PostgresServer(base / "postgres" if base else None))
        mongo = FerretDBServer(
            base / "ferretdb" if base else None,
            binary,
            backend=backend,
            postgresql_url=postgres.url if postgres else None,
        )
        mongo.postgres = postgres
        yield stack.enter_context(mongo)


# --- CLI -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run Redis and FerretDB on loopback until Ctrl-C; prints their URLs."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep the servers' data here across runs (default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="FerretDB's storage: SQLite files, or a PostgreSQL started alongside (default sqlite)",
    )
    args = parser.parse_args(argv)
    build.ensure(["ferretdb"])

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    redis_dir = args.state_dir / "redis" if args.state_dir else None
    with (
        RedisServer(redis_dir) as redis,
        ferretdb_server(args.backend, args.state_dir) as mongo,
    ):
        servers: list[_ServerProcess] = [redis, mongo]
        print(f"REDIS_URL={redis.url}", flush=True)
        print(f"MONGO_URL={mongo.url}", flush=True)
        if mongo.postgres is not None:
            servers.append(mongo.postgres)
            print(f"POSTGRESQL_URL={mongo.postgres.url}", flush=True)
        print("# up; Ctrl-C stops them", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            for server in servers:
                if server.process is None or server.process.poll() is not None:
                    raise SystemExit(
                        f"{server.kind} exited unexpectedly; log:\n{log_tail(server._read_log())}"
                    )


if __name__ == "__main__":
    main()
