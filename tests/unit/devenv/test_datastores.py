"""Pure parts of the data store launchers and fixtures: arguments, URLs, wire frames, names."""

from __future__ import annotations

import struct
from pathlib import Path

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
