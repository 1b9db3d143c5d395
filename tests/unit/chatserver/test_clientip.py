"""Which address a request comes from (chatserver.clientip) and the memory limit the argon2
slots are sized from (chatserver.app.cgroup_memory_limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatserver.app import cgroup_memory_limit
from chatserver.clientip import client_address, limit_key
from chatserver.config import trusted_networks

pytestmark = pytest.mark.unit

PROXIES = trusted_networks("10.0.0.0/8, 127.0.0.1, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # Not from a trusted proxy: X-Forwarded-For is whatever the client wrote.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # From a trusted proxy: the hop it appended.
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        # A client's forged entries sit left of what its proxy appended.
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
        # Chains of trusted proxies are walked.
        ("127.0.0.1", ["198.51.100.1, 10.9.9.9"], "198.51.100.1"),
        # No header, or garbage where an address belongs: the nearest trusted hop.
        ("10.1.2.3", [], "10.1.2.3"),
        ("10.1.2.3", ["not-an-ip, 10.4.4.4"], "10.4.4.4"),
        ("10.1.2.3", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.1.2.3", ["198.51.100.1:1234"], "198.51.100.1"),
        (None, ["198.51.100.1"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", ["198.51.100.1"], trusted_networks("")) == "127.0.0.1"


def test_limit_key_counts_ipv6_per_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2")
    assert limit_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert limit_key("::ffff:198.51.100.1") == "198.51.100.1"
    assert limit_key("198.51.100.1") == "198.51.100.1"


def test_trusted_proxies_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="'nope' is not an IP"):
        trusted_networks("10.0.0.0/8, nope")


def test_cgroup_v2_and_v1_limits(tmp_path: Path) -> None:
    (tmp_path / "pods" / "c1").mkdir(parents=True)
    (tmp_path / "pods" / "c1" / "memory.max").write_text("1073741824\n")
    assert cgroup_memory_limit("0::/pods/c1\n", tmp_path) == 2**30
    (tmp_path / "pods" / "c1" / "memory.max").write_text("max\n")
    assert cgroup_memory_limit("0::/pods/c1\n", tmp_path) is None

    v1 = tmp_path / "memory" / "job"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_memory_limit("4:memory:/job\n1:cpu:/\n", tmp_path) == 2**29
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit("4:memory:/job\n", tmp_path) is None
    # Inside a cgroup namespace the container's own cgroup is the root.
    (tmp_path / "memory.max").write_text("268435456\n")
    assert cgroup_memory_limit("0::/\n", tmp_path) == 2**28
