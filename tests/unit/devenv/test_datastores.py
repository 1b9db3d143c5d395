"""Pure parts of the data store launchers and fixtures: arguments, URLs, wire frames, names."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from urllib.parse import urlsplit

import bson
import pytest
from hypersend_devenv import datastores
from hypersend_devenv.datastores import DatastoreError

from tests.fixtures.datastores import MAX_DB_NAME, unique_name

pytestmark = pytest.mark.unit


def test_redis_command_is_loopback_only_without_persistence(tmp_path: Path) -> None:
    cmd = datastores.redis_command("/usr/bin/redis-server", 6390, tmp_path)
    assert cmd[0] == "/usr/bin/redis-server"
    pairs = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert pairs["--port"] == "6390"
    assert pairs["--bind"] == "127.0.0.1"
    assert pairs["--save"] == ""
    assert pairs["--appendonly"] == "no"
    assert pairs["--dir"] == str(tmp_path)


def test_ferretdb_command_uses_sqlite_on_loopback(tmp_path: Path) -> None:
    cmd = datastores.ferretdb_command(Path("/bin/ferretdb"), tmp_path / "data")
    assert cmd[0] == "/bin/ferretdb"
    assert "--listen-addr=127.0.0.1:0" in cmd
    assert "--handler=sqlite" in cmd
    assert f"--sqlite-url=file:{(tmp_path / 'data').resolve()}/" in cmd


def test_sqlite_url_is_an_absolute_directory_uri(tmp_path: Path) -> None:
    url = datastores.sqlite_url(tmp_path / "x")
    assert url.startswith("file:/")
    assert url.endswith("/x/")


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("", None),
        ("time=... level=WARN msg=listening\n", None),
        ("noise\nlistening mongodb://127.0.0.1:40021/\n", "mongodb://127.0.0.1:40021/"),
    ],
)
def test_listening_url(log: str, expected: str | None) -> None:
    assert datastores.listening_url(log) == expected


def test_redis_url() -> None:
    assert datastores.redis_url(7001) == "redis://127.0.0.1:7001/0"


@pytest.mark.parametrize(
    ("reply", "pong"), [(b"+PONG\r\n", True), (b"-NOAUTH\r\n", False), (b"", False)]
)
def test_is_pong(reply: bytes, pong: bool) -> None:
    assert datastores.is_pong(reply) is pong


def test_op_msg_frame_layout() -> None:
    frame = datastores.op_msg({"ping": 1, "$db": "admin"}, request_id=7)
    length, request_id, response_to, opcode = struct.unpack_from("<iiii", frame)
    assert (length, request_id, response_to, opcode) == (len(frame), 7, 0, 2013)
    assert datastores.op_msg_length(frame[:16]) == len(frame)
    assert frame[20] == 0  # one body section
    assert bson.decode(frame[21:]) == {"ping": 1, "$db": "admin"}


def test_parse_op_msg_reads_the_body() -> None:
    assert datastores.parse_op_msg(datastores.op_msg({"ok": 1.0})) == {"ok": 1.0}


def test_parse_op_msg_rejects_other_opcodes_and_short_frames() -> None:
    frame = bytearray(datastores.op_msg({"ok": 1.0}))
    struct.pack_into("<i", frame, 12, 1)  # OP_REPLY
    with pytest.raises(DatastoreError, match="opcode 1"):
        datastores.parse_op_msg(bytes(frame))
    with pytest.raises(DatastoreError, match="length"):
        datastores.parse_op_msg(datastores.op_msg({"ok": 1.0})[:-1])
    with pytest.raises(DatastoreError, match="bad OP_MSG length"):
        datastores.op_msg_length(struct.pack("<iiii", 3, 0, 0, 2013))


def test_log_tail_keeps_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(100)) + "\n"
    assert datastores.log_tail(text, 3) == "line 97\nline 98\nline 99"
    assert datastores.log_tail("", 3) == ""


def test_unique_name_is_sanitised_and_bounded() -> None:
    name = unique_name("test_x[param-1/ü]", "_", MAX_DB_NAME, "abcd1234")
    assert name == "t_test_x_param_1_abcd1234"
    long = unique_name("t" * 200, "_", MAX_DB_NAME, "abcd1234")
    assert len(long) == MAX_DB_NAME
    assert long.endswith("_abcd1234")
    assert unique_name("a b", ":", 80, "ff") == "t:a_b:ff"


# --- FerretDB on PostgreSQL ----------------------------------------------------------------

PG_URL = "postgres://postgres@127.0.0.1:5433/ferretdb"


def _addresses(cmd: list[str]) -> set[str]:
    """Every IPv4 literal and URL host in a command line, to prove it names loopback only."""
    found = set(re.findall(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])", " ".join(cmd)))
    for url in re.findall(r"[a-z]+://\S+", " ".join(cmd)):
        found.add(urlsplit(url).hostname or "")
    if any("localhost" in arg or "0.0.0.0" in arg or "::" in arg for arg in cmd):
        found.add("other")
    return found


def test_ferretdb_command_on_postgresql_is_loopback_only() -> None:
    cmd = datastores.ferretdb_command("/bin/ferretdb", None, 0, postgresql_url=PG_URL)
    assert cmd[0] == "/bin/ferretdb"
    assert "--listen-addr=127.0.0.1:0" in cmd
    assert "--handler=postgresql" in cmd
    assert f"--postgresql-url={PG_URL}" in cmd
    assert not any(arg.startswith(("--handler=sqlite", "--sqlite-url")) for arg in cmd)
    assert _addresses(cmd) == {"127.0.0.1"}


def test_ferretdb_command_on_sqlite_names_loopback_only(tmp_path: Path) -> None:
    assert _addresses(datastores.ferretdb_command("/bin/ferretdb", tmp_path)) == {"127.0.0.1"}


def test_address_finder_sees_other_hosts() -> None:
    # The check above would be worthless if it could not see a non-loopback address.
    assert _addresses(["--listen-addr=0.0.0.0:1"]) == {"0.0.0.0", "other"}
    assert _addresses(["--url=postgres://db.example:5432/x"]) == {"db.example"}


def test_ferretdb_command_takes_exactly_one_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        datastores.ferretdb_command("/bin/ferretdb", None)
    with pytest.raises(ValueError, match="exactly one"):
        datastores.ferretdb_command("/bin/ferretdb", tmp_path, postgresql_url=PG_URL)


def test_ferretdb_command_refuses_a_remote_postgresql() -> None:
    with pytest.raises(DatastoreError, match=r"127\.0\.0\.1"):
        datastores.ferretdb_command(
            "/bin/ferretdb", None, postgresql_url="postgres://u@10.0.0.5:5432/ferretdb"
        )


@pytest.mark.parametrize(
    "url",
    [
        "postgres://postgres@127.0.0.1:5433/ferretdb",
        "postgresql://postgres:secret@127.0.0.1:1/db?sslmode=disable",
    ],
)
def test_loopback_postgresql_urls_pass(url: str) -> None:
    datastores.check_loopback_postgresql_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://postgres@10.1.2.3:5432/ferretdb",
        "postgres://postgres@localhost:5432/ferretdb",  # may resolve to ::1 or elsewhere
        "postgres://postgres@[::1]:5432/ferretdb",
        "postgres://postgres@127.0.0.1/ferretdb",  # no port: the driver picks a default
        "postgres://postgres@/ferretdb",  # no host: the driver picks a socket or localhost
        "postgres://postgres@127.0.0.1:1,10.0.0.1:2/ferretdb",  # a host list
        "postgres://postgres@127.0.0.1:5432/ferretdb?host=db.example",
        "postgres://postgres@127.0.0.1:5432/ferretdb?hostaddr=10.0.0.1",
        "postgres://postgres@127.0.0.1:5432/ferretdb?port=6000",
        "mongodb://127.0.0.1:27017/",
    ],
)
def test_other_postgresql_urls_are_refused(url: str) -> None:
    with pytest.raises(DatastoreError):
        datastores.check_loopback_postgresql_url(url)


def test_postgresql_url_is_loopback_with_trust() -> None:
    assert datastores.postgresql_url(5433) == PG_URL
    assert datastores.postgresql_url(1, "a b", "u@x") == "postgres://u%40x@127.0.0.1:1/a%20b"
    datastores.check_loopback_postgresql_url(datastores.postgresql_url(5433))


def test_initdb_command_trusts_local_connections_only(tmp_path: Path) -> None:
    cmd = datastores.initdb_command("/usr/lib/postgresql/15/bin/initdb", tmp_path / "data")
    assert cmd[0] == "/usr/lib/postgresql/15/bin/initdb"
    assert f"--pgdata={tmp_path / 'data'}" in cmd
    assert "--username=postgres" in cmd
    # One method for the socket and for host lines; initdb writes host lines for 127.0.0.1/32
    # and ::1/128 only (the integration test reads the pg_hba.conf it wrote).
    assert "--auth=trust" in cmd
    assert not any(arg.startswith(("--auth-host", "--auth-local", "--pwfile")) for arg in cmd)


def test_postgres_command_listens_on_loopback_and_its_own_socket_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cmd = datastores.postgres_command("/usr/lib/postgresql/15/bin/postgres", data, 5433)
    assert cmd[0] == "/usr/lib/postgresql/15/bin/postgres"
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert (flags["-D"], flags["-p"], flags["-k"]) == (str(data), "5433", str(data))
    settings = dict(
        value.split("=", 1)
        for flag, value in zip(cmd[1::2], cmd[2::2], strict=True)
        if flag == "-c"
    )
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["fsync"] == "off"
    assert _addresses(cmd) == {"127.0.0.1"}


def test_pg_bin_dir_picks_the_newest_complete_install(tmp_path: Path) -> None:
    def install(version: str, *binaries: str) -> Path:
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in binaries:
            (bin_dir / name).write_text("")
        return bin_dir

    v9 = install("9.6", "initdb", "postgres")
    v15 = install("15", "initdb", "postgres")
    v16 = install("16", "initdb")  # no server binary: a client-only install
    assert datastores.pg_bin_dir([v16, v15, v9]) == v15
    assert datastores.pg_bin_dir([v9]) == v9
    assert datastores.pg_bin_dir([v16, tmp_path / "absent"]) is None
    assert datastores.pg_bin_dir([]) is None


def test_pg_startup_message_layout() -> None:
    msg = datastores.pg_startup_message("postgres", "ferretdb")
    length, version = struct.unpack_from("!ii", msg)
    assert length == len(msg)
    assert version == 3 << 16
    assert msg[8:] == b"user\0postgres\0database\0ferretdb\0\0"


def test_pg_query_and_terminate_messages() -> None:
    assert datastores.pg_query_message("SELECT 1") == b"Q" + struct.pack("!i", 13) + b"SELECT 1\0"
    assert datastores.PG_TERMINATE == b"X\0\0\0\4"


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


def test_pg_split_messages_keeps_a_partial_tail() -> None:
    auth_ok = _pg_message(b"R", struct.pack("!i", 0))
    ready = _pg_message(b"Z", b"I")
    data = auth_ok + ready
    assert datastores.pg_split_messages(data) == ([(b"R", b"\0\0\0\0"), (b"Z", b"I")], b"")
    assert datastores.pg_split_messages(data[:-1]) == ([(b"R", b"\0\0\0\0")], ready[:-1])
    assert datastores.pg_split_messages(b"Z\0\0") == ([], b"Z\0\0")
    with pytest.raises(DatastoreError, match="length"):
        datastores.pg_split_messages(b"Z" + struct.pack("!i", 3))


def test_pg_error_fields_and_sqlstate() -> None:
    body = b'SERROR\0VERROR\0C42P04\0Mdatabase "ferretdb" already exists\0\0'
    fields = datastores.pg_error_fields(body)
    assert fields["C"] == "42P04"
    assert fields["M"] == 'database "ferretdb" already exists'
    error = datastores.PostgresError(fields)
    assert error.sqlstate == "42P04"
    assert "already exists" in str(error)


def test_ferretdb_server_checks_its_backend_arguments() -> None:
    with pytest.raises(ValueError, match="required"):
        datastores.FerretDBServer(backend="postgresql")
    with pytest.raises(ValueError, match="required"):
        datastores.FerretDBServer(postgresql_url=PG_URL)
    with pytest.raises(ValueError, match="backend must be"):
        datastores.FerretDBServer(backend="mysql")  # type: ignore[arg-type]
    server = datastores.FerretDBServer(backend="postgresql", postgresql_url=PG_URL)
    assert (server.backend, server.postgresql_url, server._temp_dir) == ("postgresql", PG_URL, None)
