"""WebSocket protocol v1, client side of the wire: close codes and pure client-frame parsing.

The full protocol is documented in ``docs/protocol.md`` (section "WebSocket"); keep both in step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from chatserver.models import message_text_error

# Ids are opaque strings; bound them so a frame cannot make us look up megabyte-long keys.
MAX_ID_CHARS: Final = 128
# Same rule as the REST API's client_id (safe in logs and MongoDB keys).
CLIENT_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# A resume may name at most this many rooms.
MAX_RESUME_ROOMS: Final = 5000
# A maximal message text may grow up to 6x when JSON-escaped (\uXXXX), plus ids and keys. The
# same bound as REST bodies (chatserver.api.max_body_bytes) and uvicorn's ws_max_size, above
# which the protocol layer closes the socket with 1009 before a frame reaches the hub.
JSON_ESCAPE_FACTOR: Final = 6
FRAME_OVERHEAD_BYTES: Final = 16_384


class Close(IntEnum):
    """Close codes the server uses (RFC 6455 1xxx, application 4xxx)."""

    NORMAL = 1000
    # Refused in the handshake: an Origin not in HYPERSEND_WS_ALLOWED_ORIGINS (HTTP 403).
    POLICY_VIOLATION = 1008
    INTERNAL_ERROR = 1011
    # Draining (pod shutdown/rollout): reconnect after the ``reconnect`` frame's ``after_ms``.
    SERVICE_RESTART = 1012
    # This process holds HYPERSEND_WS_MAX_CONNECTIONS sockets: retry (another pod) later.
    TRY_AGAIN_LATER = 1013
    # The first frame was not a well-formed ``auth`` frame.
    PROTOCOL_ERROR = 4400
    # Token missing, expired or invalid (the close reason says which).
    UNAUTHORIZED = 4401
    # No ``auth`` frame within the auth timeout.
    AUTH_TIMEOUT = 4408
    # Nothing received from the client for HYPERSEND_WS_IDLE_TIMEOUT_SECONDS.
    IDLE_TIMEOUT = 4410
    # The socket's send queue overflowed: reconnect and ``resume`` from the last seq seen.
    SLOW_CONSUMER = 4413
    # Too many socket opens from the client's address (HYPERSEND_WS_IP_OPENS_PER_MINUTE).
    RATE_LIMITED = 4429
    # Reserved: earlier servers closed every socket with it when Redis pub/sub was lost; now
    # sockets stay open and are caught up from MongoDB (chatserver/bus.py, degraded mode).
    RESYNC_REQUIRED = 4503


@dataclass(frozen=True, slots=True)
class FrameError:
    """A client frame the server refuses; sent back as an ``error`` frame (socket stays open)."""

    code: str
    message: str
    # The refused frame's own `room_id` / `client_id` (when strings of a sane length), so a
    # client with several sends in flight knows which one failed.
    ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthFrame:
    token: str


@dataclass(frozen=True, slots=True)
class ResumeFrame:
    rooms: dict[str, int]


@dataclass(frozen=True, slots=True)
class SendFrame:
    room_id: str
    client_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TypingFrame:
    room_id: str


@dataclass(frozen=True, slots=True)
class ReadFrame:
    room_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class PingFrame:
    pass


@dataclass(frozen=True, slots=True)
class PongFrame:
    pass


ClientFrame = AuthFrame | ResumeFrame | SendFrame | TypingFrame | ReadFrame | PingFrame | PongFrame

CLIENT_TYPES: Final = ("auth", "resume", "send", "typing", "read", "ping", "pong")


def max_frame_bytes(max_message_bytes: int) -> int:
    """Largest client frame accepted: a maximal message text plus its envelope."""
    return JSON_ESCAPE_FACTOR * max_message_bytes + FRAME_OVERHEAD_BYTES


def _id(body: dict[str, Any], key: str) -> str | FrameError:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        return FrameError("invalid_frame", f"`{key}` must be a string of 1-{MAX_ID_CHARS} chars")
    return value


def _seq(value: Any, what: str) -> int | FrameError:
    # bool is an int subclass; true/false is not a sequence number.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return FrameError("invalid_frame", f"{what} must be an integer >= 0")
    return value


def parse_client_frame(raw: str | bytes, max_message_bytes: int) -> ClientFrame | FrameError:
    """Decode and validate one client frame; never raises."""
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > max_frame_bytes(max_message_bytes):
        return FrameError(
            "frame_too_large", f"frames are limited to {max_frame_bytes(max_message_bytes)} bytes"
        )
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return FrameError("invalid_json", "the frame is not valid JSON")
    if not isinstance(body, dict):
        return FrameError("invalid_frame", "a frame must be a JSON object")
    kind = body.get("type")
    if not isinstance(kind, str):
        return FrameError("invalid_frame", "a frame must have a string `type`")
    parsed = _parse_object(body, kind, max_message_bytes)
    if isinstance(parsed, FrameError):
        ids = {
            key: value
            for key in ("room_id", "client_id")
            if isinstance(value := body.get(key), str) and 0 < len(value) <= MAX_ID_CHARS
        }
        return FrameError(parsed.code, parsed.message, ids)
    return parsed


def _parse_object(
    body: dict[str, Any], kind: str, max_message_bytes: int
) -> ClientFrame | FrameError:
    if kind == "auth":
        token = body.get("token")
        if not isinstance(token, str):
            return FrameError("invalid_frame", "`token` must be a string")
        return AuthFrame(token)
    if kind == "resume":
        return _resume(body)
    if kind == "send":
        return _send(body, max_message_bytes)
    if kind == "typing":
        room_id = _id(body, "room_id")
        return room_id if isinstance(room_id, FrameError) else TypingFrame(room_id)
    if kind == "read":
        room_id = _id(body, "room_id")
        if isinstance(room_id, FrameError):
            return room_id
        seq = _seq(body.get("seq"), "`seq`")
        return seq if isinstance(seq, FrameError) else ReadFrame(room_id, seq)
    if kind == "ping":
        return PingFrame()
    if kind == "pong":
        return PongFrame()
    return FrameError("unknown_type", f"unknown frame type; expected one of {list(CLIENT_TYPES)}")


def _resume(body: dict[str, Any]) -> ResumeFrame | FrameError:
    rooms = body.get("rooms")
    if not isinstance(rooms, dict):
        return FrameError("invalid_frame", "`rooms` must be an object {room_id: last_seq}")
    if len(rooms) > MAX_RESUME_ROOMS:
        return FrameError("invalid_frame", f"at most {MAX_RESUME_ROOMS} rooms per resume")
    parsed: dict[str, int] = {}
    for room_id, last_seq in rooms.items():
        if not room_id or len(room_id) > MAX_ID_CHARS:
            return FrameError("invalid_frame", "room ids must be strings of 1-128 chars")
        seq = _seq(last_seq, f"last seq of room {room_id!r}")
        if isinstance(seq, FrameError):
            return seq
        parsed[room_id] = seq
    return ResumeFrame(parsed)


def _send(body: dict[str, Any], max_message_bytes: int) -> SendFrame | FrameError:
    room_id = _id(body, "room_id")
    if isinstance(room_id, FrameError):
        return room_id
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id):
        return FrameError("invalid_frame", "`client_id` must match [A-Za-z0-9_.:-]{1,64}")
    text = body.get("text")
    if not isinstance(text, str):
        return FrameError("invalid_frame", "`text` must be a string")
    problem = message_text_error(text, max_message_bytes)
    if problem == "message_too_large":
        return FrameError(problem, f"message text is limited to {max_message_bytes} bytes")
    if problem is not None:
        return FrameError(problem, "message text must not be empty")
    return SendFrame(room_id, client_id, text)
