"""Which address a request comes from, for per-client limits (pure, no I/O).

The peer of the TCP connection is the client unless it is a configured trusted proxy
(``HYPERSEND_TRUSTED_PROXIES``); only then is ``X-Forwarded-For`` read, from the nearest hop
outwards, and the first address that is not itself a trusted proxy is the client. Whatever a
client writes into ``X-Forwarded-For`` lies to the left of what its first trusted proxy appended,
so it is never reached (docs/configuration.md, "Abuse limits").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from chatserver.config import Network

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# An IPv6 client usually holds a whole /64: limits count per /64, or one client could rotate
# through 2^64 addresses.
IPV6_LIMIT_PREFIX: Final = 64
UNKNOWN: Final = "unknown"


def parse_address(text: str) -> IpAddress | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` or ``[::1]:80``; None if not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: IpAddress, trusted: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]
) -> str:
    """The client's address as a string (``unknown`` without a peer, e.g. a Unix socket)."""
    peer_address = parse_address(peer) if peer else None
    if peer_address is None:
        return UNKNOWN
    if not _trusted(peer_address, trusted):
        return str(peer_address)
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    nearest = peer_address
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # Not written by a trusted proxy (they write addresses): the last trusted hop is
            # the best this request tells.
            break
        if not _trusted(address, trusted):
            return str(address)
        nearest = address
    return str(nearest)


def limit_key(address: str) -> str:
    """The key a per-client limit counts under: the address, or its /64 for IPv6."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is None:
        network = ipaddress.ip_network(f"{parsed}/{IPV6_LIMIT_PREFIX}", strict=False)
        return str(network)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return address
