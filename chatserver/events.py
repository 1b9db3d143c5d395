"""Server-to-client WebSocket frames (protocol v1): pure builders, no I/O.

Every frame is a JSON object with a ``type``. Frames that carry a message are built from the
message's own wire form, so REST and WebSocket clients see the same shape. Builders take any
object with ``to_wire()`` (``chatserver.models.Message`` / ``Room``): no store import here.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

# Ephemeral frames may be dropped under back-pressure; everything else must be delivered or the
# socket closed (the client then resumes from history).
EPHEMERAL_TYPES: Final = frozenset({"typing", "presence"})
# What servers publish on a room's channel with that room's ``room_id`` (``presence`` goes there
# too, without a ``room_id``); a server delivers nothing else from a room channel.
ROOM_CHANNEL_TYPES: Final = frozenset(
    {"message", "message_edited", "message_deleted", "reaction", "read", "typing"}
)


class WireMessage(Protocol):
    """What the builders need from ``chatserver.models.Message``."""

    @property
    def room_id(self) -> str: ...

    @property
    def seq(self) -> int: ...

    def to_wire(self) -> dict[str, Any]: ...


class WireRoom(Protocol):
    """What the builders need from ``chatserver.models.Room``."""

    def to_wire(self) -> dict[str, Any]: ...


def _message_frame(kind: str, msg: WireMessage) -> dict[str, Any]:
    return {"type": kind, "room_id": msg.room_id, "seq": msg.seq, "message": msg.to_wire()}


def message(msg: WireMessage) -> dict[str, Any]:
    """A new message stored in a room."""
    return _message_frame("message", msg)


def message_edited(msg: WireMessage) -> dict[str, Any]:
    """A message whose text changed (``message`` holds the new state)."""
    return _message_frame("message_edited", msg)


def message_deleted(msg: WireMessage) -> dict[str, Any]:
    """A message that was soft-deleted."""
    return _message_frame("message_deleted", msg)


def reaction(msg: WireMessage) -> dict[str, Any]:
    """A message whose reactions changed (``message`` holds the new reactions)."""
    return _message_frame("reaction", msg)


def read(room_id: str, user_id: str, seq: int) -> dict[str, Any]:
    """A read receipt: ``user_id`` has read ``room_id`` up to ``seq``."""
    return {"type": "read", "room_id": room_id, "user_id": user_id, "seq": seq}


def typing(room_id: str, user_id: str) -> dict[str, Any]:
    """Ephemeral: ``user_id`` is typing in ``room_id``."""
    return {"type": "typing", "room_id": room_id, "user_id": user_id}


def presence(user_id: str, online: bool) -> dict[str, Any]:
    """Ephemeral: ``user_id`` came online or went offline."""
    return {"type": "presence", "user_id": user_id, "online": online}


def room_added(room: WireRoom) -> dict[str, Any]:
    """The receiving user became a member of ``room``; the socket subscribes to it."""
    wire = room.to_wire()
    return {"type": "room_added", "room_id": wire.get("id", wire.get("room_id")), "room": wire}


def room_removed(room_id: str) -> dict[str, Any]:
    """The receiving user is no longer a member of ``room_id``; the socket unsubscribes."""
    return {"type": "room_removed", "room_id": room_id}


def ack(room_id: str, client_id: str, seq: int, message: WireMessage) -> dict[str, Any]:
    """Answer to a client ``send``: the message is stored in MongoDB with ``seq``."""
    return {
        "type": "ack",
        "room_id": room_id,
        "client_id": client_id,
        "seq": seq,
        "message": message.to_wire(),
    }


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A recoverable problem with a client frame; ``extra`` adds e.g. ``retry_after``."""
    return {"type": "error", "code": code, "message": message, **extra}


def reconnect(after_ms: int) -> dict[str, Any]:
    """The server is draining: reconnect (elsewhere) after ``after_ms`` milliseconds."""
    return {"type": "reconnect", "after_ms": after_ms}


def pong() -> dict[str, Any]:
    """Answer to a client ``ping``."""
    return {"type": "pong"}


def ping() -> dict[str, Any]:
    """Application-level keepalive probe (the server also uses WebSocket ping control frames)."""
    return {"type": "ping"}


def ready(user_id: str, rooms: list[str], expires_at: float) -> dict[str, Any]:
    """Sent once after authentication: who the socket belongs to, which rooms it follows and
    when its access token expires (unix seconds)."""
    return {"type": "ready", "user_id": user_id, "rooms": rooms, "expires_at": int(expires_at)}


def token_expiring(expires_at: float, now: float) -> dict[str, Any]:
    """The socket's access token expires soon: send ``auth`` with a fresh one before it does."""
    return {
        "type": "token_expiring",
        "expires_at": int(expires_at),
        "expires_in": max(0, int(expires_at - now)),
    }


def reauthenticated(expires_at: float) -> dict[str, Any]:
    """Answer to an ``auth`` frame on a live socket: the socket now runs on the new token."""
    return {"type": "reauthenticated", "expires_at": int(expires_at)}


def sessions_revoked(family_id: str) -> dict[str, Any]:
    """Between servers only (a user channel): the login ``family_id`` was revoked (logout, a
    replayed refresh token); its sockets close with 4401."""
    return {"type": "sessions_revoked", "family_id": family_id}


def resumed(rooms: dict[str, int]) -> dict[str, Any]:
    """Sent after a ``resume`` replay finished: the last seq delivered per room."""
    return {"type": "resumed", "rooms": rooms}
