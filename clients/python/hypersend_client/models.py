"""Typed views of the protocol's objects (docs/protocol.md: user, room view, member, message).

Each keeps the JSON object it came from in ``raw``, so a field added to v1 later is not lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

# Refresh this long before the access token expires (capped at a fifth of its lifetime, so a
# short-lived token is not refreshed on every call).
REFRESH_MARGIN_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    # time.monotonic() when the access token expires
    expires_at: float
    lifetime: float

    @classmethod
    def from_json(cls, body: JSON) -> Tokens:
        lifetime = float(body.get("expires_in") or 0)
        return cls(
            str(body["access_token"]),
            str(body["refresh_token"]),
            time.monotonic() + lifetime,
            lifetime,
        )

    def refresh_at(self) -> float:
        """The monotonic time at which to refresh."""
        return self.expires_at - min(REFRESH_MARGIN_SECONDS, self.lifetime / 5)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    display_name: str
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> User:
        return cls(
            id=str(data["id"]),
            username=str(data["username"]),
            display_name=str(data.get("display_name") or data["username"]),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    room_id: str
    seq: int
    sender_id: str
    client_id: str
    text: str
    created_at: str
    deleted: bool
    reactions: dict[str, list[str]]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> Message:
        return cls(
            id=str(data["id"]),
            room_id=str(data["room_id"]),
            seq=int(data["seq"]),
            sender_id=str(data["sender_id"]),
            client_id=str(data.get("client_id") or ""),
            text=str(data.get("text") or ""),
            created_at=str(data.get("created_at") or ""),
            deleted=bool(data.get("deleted", False)),
            reactions={
                str(k): [str(u) for u in v] for k, v in (data.get("reactions") or {}).items()
            },
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    kind: str
    name: str | None
    last_seq: int
    unread: int
    role: str | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> Room:
        return cls(
            id=str(data["id"]),
            kind=str(data.get("kind") or "group"),
            name=data.get("name"),
            last_seq=int(data.get("last_seq") or 0),
            unread=int(data.get("unread") or 0),
            role=data.get("role"),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Member:
    room_id: str
    user_id: str
    role: str
    username: str
    display_name: str
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: JSON) -> Member:
        return cls(
            room_id=str(data["room_id"]),
            user_id=str(data["user_id"]),
            role=str(data["role"]),
            username=str(data.get("username") or ""),
            display_name=str(data.get("display_name") or data.get("username") or ""),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of history, ascending seq; ``has_more`` says the page was cut."""

    messages: list[Message]
    has_more: bool
