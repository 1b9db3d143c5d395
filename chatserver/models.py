"""Domain models of the chat server and their JSON wire forms (protocol v1).

Wire forms are plain JSON-safe dicts: timestamps are ISO 8601 UTC strings, ids are strings.
A soft-deleted message keeps its text in MongoDB but never shows it on the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

RoomKind = Literal["direct", "group"]
Role = Literal["owner", "admin", "member"]

# Roles that may add and remove members of a group room.
MANAGER_ROLES: Final = frozenset({"owner", "admin"})


def utcnow() -> datetime:
    """Now, as an aware UTC datetime with millisecond precision (what BSON dates keep)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` suffix, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_text_error(text: str, max_bytes: int) -> str | None:
    """Why `text` cannot be a message (code `empty_message` / `message_too_large`), or None."""
    if not text.strip():
        return "empty_message"
    if len(text.encode("utf-8")) > max_bytes:
        return "message_too_large"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class User(_Model):
    """An account; `password_hash` never leaves the store layer's callers."""

    id: str
    username: str
    display_name: str
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "created_at": iso(self.created_at),
        }


class Edit(_Model):
    """A previous version of an edited message."""

    text: str
    edited_at: datetime


class Message(_Model):
    """A stored chat message; `seq` is its per-room monotonic sequence number."""

    room_id: str
    seq: int
    id: str
    sender_id: str
    client_id: str
    text: str
    created_at: datetime
    edited_at: datetime | None = None
    deleted: bool = False
    deleted_at: datetime | None = None
    edits: tuple[Edit, ...] = ()
    # emoji -> ids of the users who reacted with it
    reactions: dict[str, list[str]] = Field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "client_id": self.client_id,
            "text": "" if self.deleted else self.text,
            "created_at": iso(self.created_at),
            "edited_at": iso(self.edited_at),
            "deleted": self.deleted,
            "deleted_at": iso(self.deleted_at),
            "edits": []
            if self.deleted
            else [{"text": e.text, "edited_at": iso(e.edited_at)} for e in self.edits],
            "reactions": {emoji: list(users) for emoji, users in self.reactions.items() if users},
        }


class Member(_Model):
    """A user's membership of a room."""

    room_id: str
    user_id: str
    role: Role
    joined_at: datetime
    last_read_seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "user_id": self.user_id,
            "role": self.role,
            "joined_at": iso(self.joined_at),
            "last_read_seq": self.last_read_seq,
        }


class Room(_Model):
    """A direct (1:1) or group room. `last_seq` is the highest sequence number allocated."""

    id: str
    kind: RoomKind
    name: str | None
    created_by: str
    created_at: datetime
    last_activity_at: datetime
    last_seq: int = 0
    last_message: Message | None = None
    # Direct rooms only: the two member ids, sorted.
    pair: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "last_activity_at": iso(self.last_activity_at),
            "last_seq": self.last_seq,
            "last_message": self.last_message.to_wire() if self.last_message else None,
        }
