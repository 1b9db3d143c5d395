"""Redis and FerretDB (MongoDB wire protocol) processes on loopback, for tests and local runs.

    with RedisServer() as redis, FerretDBServer() as mongo:
        print(redis.url, mongo.url)   # redis://127.0.0.1:<port>/0  mongodb://127.0.0.1:<port>/

Each server starts on a free 127.0.0.1 port, is ready only once it answers a real protocol ping
(RESP `PING` / OP_MSG `{ping: 1}`), fails with the tail of its log when it does not come up, and
stops with SIGTERM then SIGKILL. Servers started from the main thread die with their parent
(PR_SET_PDEATHSIG on Linux), so a killed test run leaves no server behind.

API (both classes): `Server(state_dir=None)` (None: a temporary directory removed on stop; a path:
kept, so FerretDB data survives restarts), `.start()`, `.stop()`, context manager, `.url`,
`.port`, `.process`, `.log_path` (the server's stdout+stderr). Failures raise `DatastoreError`
with the log tail. `FerretDBServer(binary=...)` defaults to the cached build.

CLI: `python -m hypersend_devenv.datastores [--state-dir DIR]` prints the URLs as shell
assignments (REDIS_URL=..., MONGO_URL=...) and keeps both servers up until Ctrl-C.

Redis is Debian's `redis-server`, without persistence. FerretDB is the wrapper build from
`python -m hypersend_devenv.build ferretdb` (embeddable FerretDB: telemetry off and locked, no
debug listener, nothing dials out) with its SQLite backend in a data directory.
"""

from __future__ import annotations

import argparse
import ctypes
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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import bson

from hypersend_devenv import build

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 30
LOOPBACK = "127.0.0.1"

OP_MSG = 2013
RESP_PING = b"*1\r\n$4\r\nPING\r\n"
_LISTENING = re.compile(r"^listening (mongodb://\S+)$", re.MULTILINE)


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


def ferretdb_command(ferretdb: Path | str, sqlite_dir: Path, port: int = 0) -> list[str]:
    """Wrapper-binary arguments; port 0 lets the kernel pick and the binary prints the real one."""
    return [
        str(ferretdb),
        f"--listen-addr={LOOPBACK}:{port}",
        "--handler=sqlite",
        f"--sqlite-url={sqlite_url(sqlite_dir)}",
        "--log-level=warn",
    ]


def sqlite_url(directory: Path) -> str:
    """FerretDB wants a `file:` URI of a directory, ending with a slash."""
    return f"file:{directory.resolve()}/"


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


def _child_setup() -> Callable[[], None] | None:
    # PDEATHSIG follows the starting *thread*; only the main thread lives as long as the process.
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

    def __init__(self, state_dir: Path | str | None) -> None:
        self._state_dir = None if state_dir is None else Path(state_dir)
        self._temp_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

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
            preexec_fn=_child_setup(),
        )
        return self.process

    def _kill(self, grace: float = 0.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
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
    ) -> None:
        super().__init__(state_dir)
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.start_timeout = start_timeout
        self.port = 0

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
            self.port = free_port()
            self._spawn(redis_command(self.binary, self.port, self.dir))
            try:
                self._wait_until(lambda: ping_redis(self.port), "answer PING", self.start_timeout)
                return
            except DatastoreError:
                lost_race = "Address already in use" in self._read_log()
                if not lost_race or attempt == 2:
                    raise
                self._kill()


class FerretDBServer(_ServerProcess):
    """FerretDB v1 (SQLite backend) on a loopback port chosen by the kernel."""

    kind = "ferretdb"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        binary: Path | str | None = None,
        port: int = 0,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        super().__init__(state_dir)
        self.binary = Path(binary) if binary is not None else build.FERRETDB.path("ferretdb")
        self.requested_port = port
        self.start_timeout = start_timeout
        self.port = 0

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

    def _start(self) -> None:
        self.sqlite_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(ferretdb_command(self.binary, self.sqlite_dir, self.requested_port))
        self._wait_until(self._bound, "bind its listener", self.start_timeout)
        self._wait_until(lambda: ping_mongo(self.port), "answer ping", self.start_timeout)

    def _bound(self) -> bool:
        url = listening_url(self._read_log())
        if url is None:
            return False
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])
        return True


# --- CLI -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run Redis and FerretDB on loopback until Ctrl-C; prints their URLs."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep FerretDB data here across runs (default: a temporary directory, removed)",
    )
    args = parser.parse_args(argv)
    build.ensure(["ferretdb"])

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    redis_dir = args.state_dir / "redis" if args.state_dir else None
    mongo_dir = args.state_dir / "ferretdb" if args.state_dir else None
    with RedisServer(redis_dir) as redis, FerretDBServer(mongo_dir) as mongo:
        print(f"REDIS_URL={redis.url}", flush=True)
        print(f"MONGO_URL={mongo.url}", flush=True)
        print("# up; Ctrl-C stops both", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            for server in (redis, mongo):
                if server.process is None or server.process.poll() is not None:
                    raise SystemExit(
                        f"{server.kind} exited unexpectedly; log:\n{log_tail(server._read_log())}"
                    )


if __name__ == "__main__":
    main()
