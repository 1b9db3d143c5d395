"""Typed server events (docs/protocol.md, "Server frames") and the client's own connection
events (``Connected``, ``Reconnecting``, ``Disconnected``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypersend_client.models import JSON, Message, Room, Tokens


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; ``frame`` is the raw server frame (empty for client events)."""

    frame: JSON = field(repr=False, compare=False, kw_only=True, default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ready(Event):
    user_id: str
    rooms: list[str]


@dataclass(frozen=True, slots=True)
class MessageEvent(Event):
    """A new message, delivered once per client across reconnects (deduplicated by seq)."""

    room_id: str
    seq: int
    message: Message


@dataclass(frozen=True, slots=True)
class MessageEdited(Event):
    room_id: str
    seq: int
    message: Message


@dataclass(frozen=True, slots=True)
class MessageDeleted(Event):
    room_id: str
    seq: int
    message: Message


@dataclass(frozen=True, slots=True)
class ReactionEvent(Event):
    room_id: str
    seq: int
    message: Message


@dataclass(frozen=True, slots=True)
class ReadEvent(Event):
    room_id: str
    user_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class Typing(Event):
    room_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Presence(Event):
    user_id: str
    online: bool


@dataclass(frozen=True, slots=True)
class RoomAdded(Event):
    room_id: str
    room: Room | None


@dataclass(frozen=True, slots=True)
class RoomRemoved(Event):
    room_id: str


@dataclass(frozen=True, slots=True)
class Resumed(Event):
    rooms: dict[str, int]


@dataclass(frozen=True, slots=True)
class ServerError(Event):
    """An ``error`` frame not tied to one of this client's sends (those fail the send)."""

    code: str
    message: str
    room_id: str | None = None
    room_ids: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The socket is authenticated and live (after ``ready``, and ``resumed`` when resuming)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Reconnecting(Event):
    """The socket closed; the client reconnects after ``delay`` seconds."""

    error: Exception
    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Disconnected(Event):
    """The client stopped for good: ``error`` is None after ``close()``."""

    error: Exception | None


@dataclass(frozen=True, slots=True)
class TokensRefreshed(Event):
    """The access token was refreshed (persist ``tokens`` to survive a restart)."""

    tokens: Tokens


@dataclass(frozen=True, slots=True)
class Unknown(Event):
    """A frame type this client does not know (v1 may add some)."""

    type: str


def _message(frame: JSON) -> Message:
    return Message.from_json(frame["message"])


def parse_event(frame: JSON) -> Event:
    """The typed event of a server frame (``ack``, ``ping`` and ``pong`` are the client's own
    business and come out as ``Unknown``)."""
    kind = str(frame.get("type"))
    get: Any = frame.get
    if kind == "ready":
        return Ready(str(get("user_id")), [str(r) for r in get("rooms") or []], frame=frame)
    if kind in ("message", "message_edited", "message_deleted", "reaction"):
        cls = {
            "message": MessageEvent,
            "message_edited": MessageEdited,
            "message_deleted": MessageDeleted,
            "reaction": ReactionEvent,
        }[kind]
        return cls(str(get("room_id")), int(get("seq")), _message(frame), frame=frame)
    if kind == "read":
        return ReadEvent(str(get("room_id")), str(get("user_id")), int(get("seq")), frame=frame)
    if kind == "typing":
        return Typing(str(get("room_id")), str(get("user_id")), frame=frame)
    if kind == "presence":
        return Presence(str(get("user_id")), bool(get("online")), frame=frame)
    if kind == "room_added":
        room = get("room")
        return RoomAdded(
            str(get("room_id")),
            Room.from_json(room) if isinstance(room, dict) else None,
            frame=frame,
        )
    if kind == "room_removed":
        return RoomRemoved(str(get("room_id")), frame=frame)
    if kind == "resumed":
        return Resumed({str(k): int(v) for k, v in (get("rooms") or {}).items()}, frame=frame)
    if kind == "error":
        room_ids = get("room_ids")
        return ServerError(
            str(get("code")),
            str(get("message") or ""),
            room_id=get("room_id"),
            room_ids=[str(r) for r in room_ids] if isinstance(room_ids, list) else None,
            frame=frame,
        )
    return Unknown(kind, frame=frame)
