"""MongoDB access for the chat server: the only module that imports pymongo.

Works on MongoDB 6+/Atlas and on FerretDB v1, so it uses only indexes (unique, compound),
find with sort/limit, findAndModify, upserts and plain updates: no TTL indexes, `$lookup`,
change streams or transactions. Refresh-token expiry is done by the application.

Sequence numbers: a message's `_id` is `"<room_id>:<seq>"`. `append_message` reads the room's
highest stored seq and inserts seq + 1; a concurrent sender that took the same seq makes the
insert fail on the unique `_id`, and the loser retries with the next one. So a seq exists only
once its message is stored, seq N is stored only after N-1 was, and per-room sequences have no
gaps: resume can always fetch a missing seq from history instead of waiting for it. (A separate
`$inc` counter would leave a hole whenever the process dies between allocating and inserting.)

FerretDB v1 applies findAndModify/update as read-modify-write of the whole document without a
transaction (FerretDB/FerretDB#3040): a conditional update can have several winners and
concurrent updates of one document can lose each other's changes. So every race that matters is
decided by a unique key on insert instead: message seqs and client ids, direct rooms (their id
is derived from the pair), memberships, refresh-token use (a claim document per token) and
family revocation, and reactions (one document per user, emoji and message). What stays
read-modify-write is best-effort by design: a room's `last_seq`/`last_activity_at` summary (the
next message corrects it; reads that need the exact value use `highest_seq`), read markers, and
the rare race of an edit with a delete of the same message.

Hot paths (send, resume, membership checks) are point operations on `_id`, fast everywhere.
Lists by a field (a user's rooms at connect, a room's members) are indexed equality queries: on
MongoDB and on FerretDB/PostgreSQL (which pushes string equality down to SQL) they cost about as
much as an `_id` lookup; only FerretDB/SQLite, the test server, scans for them (measured with
40,000 memberships: a user's rooms in 7.9 ms on FerretDB/PostgreSQL, 523 ms on FerretDB/SQLite).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
    ConnectionCheckedInEvent,
    ConnectionCheckedOutEvent,
    ConnectionCheckOutFailedEvent,
    ConnectionCheckOutStartedEvent,
    ConnectionClosedEvent,
    ConnectionCreatedEvent,
    ConnectionPoolListener,
    ConnectionReadyEvent,
    PoolClearedEvent,
    PoolClosedEvent,
    PoolCreatedEvent,
    PoolReadyEvent,
)

from chatserver import metrics
from chatserver.config import Settings
from chatserver.models import Member, Message, Role, Room, RoomKind, User, utcnow

Document = dict[str, Any]
# Called with a message once it is stored (see `Store.append_message`).
OnStored = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

# Within a process senders take turns per room, so a seq race is lost only to other processes;
# after this many lost races the sender gets `SeqContention` (a "try_again" answer).
MAX_SEQ_ATTEMPTS: Final = 64
# Jittered pause after a lost race (full jitter, exponential up to the cap), so racing processes
# spread out instead of colliding on every next seq.
BACKOFF_BASE_SECONDS: Final = 0.001
BACKOFF_CAP_SECONDS: Final = 0.05
# Rooms whose highest known seq a process remembers (a cache; cleared when full).
MAX_SEQ_HINTS: Final = 100_000
# `_id` probes past the room's `last_seq` before `highest_seq` falls back to the seq index.
MAX_SEQ_PROBES: Final = 64
# Rooms listed by GET /rooms at most (newest activity first).
MAX_ROOMS_LISTED: Final = 500


# Errors meaning MongoDB is unreachable right now (callers answer 503, not 500).
UNAVAILABLE_ERRORS: Final[tuple[type[Exception], ...]] = (ConnectionFailure,)


class StoreError(Exception):
    """Base class of the store's domain errors."""


class UsernameTaken(StoreError):
    """A user with this username already exists."""


class RoomNotFound(StoreError):
    """The room does not exist."""


class SeqContention(StoreError):
    """Other processes kept winning the room's next seq; nothing was stored, retry later."""


class EditContention(SeqContention):
    """Concurrent edits of one message kept overwriting each other; retry later."""


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """A stored refresh token (only its SHA-256 hash is stored)."""

    token_hash: str
    user_id: str
    family_id: str
    expires_at: datetime
    used: bool
    revoked: bool


def message_id(room_id: str, seq: int) -> str:
    """The `_id` (and public id) of the message `seq` of `room_id`."""
    return f"{room_id}:{seq}"


def member_id(room_id: str, user_id: str) -> str:
    return f"{room_id}:{user_id}"


def direct_room_id(user_a: str, user_b: str) -> str:
    """Deterministic id of the direct room of two users, so the pair can only have one."""
    low, high = sorted((user_a, user_b))
    return "d" + hashlib.sha256(f"{low}\n{high}".encode()).hexdigest()[:31]


def new_id() -> str:
    return uuid.uuid4().hex


def client_key(room_id: str, sender_id: str, client_id: str) -> str:
    """`_id` of the document mapping a sender's client id to the seq it was stored under."""
    return f"{room_id}:{sender_id}:{client_id}"


def contention_backoff(attempt: int, draw: float | None = None) -> float:
    """Seconds to wait after losing seq race number `attempt` (0-based): full jitter."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**attempt)
    return ceiling * (random.random() if draw is None else draw)


def new_message_doc(
    room_id: str, seq: int, sender_id: str, client_id: str, text: str, now: datetime
) -> Document:
    return {
        "_id": message_id(room_id, seq),
        "room_id": room_id,
        "seq": seq,
        "sender_id": sender_id,
        "client_id": client_id,
        "text": text,
        "created_at": now,
        "edited_at": None,
        "deleted": False,
        "deleted_at": None,
        "edits": [],
    }


class _RoomTurn:
    """`async with`: one sender of this process at a time per room (locks freed when idle)."""

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], room_id: str) -> None:
        self._locks = locks
        self._room_id = room_id

    async def __aenter__(self) -> None:
        lock, users = self._locks.get(self._room_id, (asyncio.Lock(), 0))
        self._locks[self._room_id] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._locks[self._room_id][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._locks[self._room_id]
        if users <= 1:
            del self._locks[self._room_id]
        else:
            self._locks[self._room_id] = (lock, users - 1)


def _user(doc: Mapping[str, Any]) -> User:
    return User.model_validate({**doc, "id": doc["_id"]})


def _message(doc: Mapping[str, Any]) -> Message:
    return Message.model_validate({**doc, "id": doc["_id"]})


def _member(doc: Mapping[str, Any]) -> Member:
    return Member.model_validate(doc)


def _room(doc: Mapping[str, Any], last_message: Message | None = None) -> Room:
    return Room.model_validate({**doc, "id": doc["_id"], "last_message": last_message})


def pool_address(address: tuple[str, int | None]) -> str:
    host, port = address
    return host if port is None else f"{host}:{port}"


class PoolMetrics(ConnectionPoolListener):
    """Keeps `hypersend_mongo_pool_checked_out_connections` from PyMongo's pool events.

    Every Store of the process reports into the same gauge (one per server address), which is
    what the pool alert compares with `maxPoolSize`: PyMongo's pool limit is per server.
    """

    def connection_checked_out(self, event: ConnectionCheckedOutEvent) -> None:
        metrics.MONGO_POOL_CHECKED_OUT.labels(pool_address(event.address)).inc()

    def connection_checked_in(self, event: ConnectionCheckedInEvent) -> None:
        metrics.MONGO_POOL_CHECKED_OUT.labels(pool_address(event.address)).dec()

    # The other events change nothing the gauge shows (a cleared pool's checked-out connections
    # are still checked in one by one), but the listener interface wants every method.
    def pool_created(self, event: PoolCreatedEvent) -> None:
        pass

    def pool_ready(self, event: PoolReadyEvent) -> None:
        pass

    def pool_cleared(self, event: PoolClearedEvent) -> None:
        pass

    def pool_closed(self, event: PoolClosedEvent) -> None:
        pass

    def connection_created(self, event: ConnectionCreatedEvent) -> None:
        pass

    def connection_ready(self, event: ConnectionReadyEvent) -> None:
        pass

    def connection_closed(self, event: ConnectionClosedEvent) -> None:
        pass

    def connection_check_out_started(self, event: ConnectionCheckOutStartedEvent) -> None:
        pass

    def connection_check_out_failed(self, event: ConnectionCheckOutFailedEvent) -> None:
        pass


class CommandMetrics(CommandListener):
    """Counts `hypersend_mongo_commands_total{command}` from PyMongo's command monitoring.

    Each started command is one round trip to MongoDB (a getMore of a long cursor is one more),
    whatever the backend's speed: divided by the stored messages, the round trips per message
    (issue #16). The driver's own monitoring (hello heartbeats) is not a command event.
    """

    def started(self, event: CommandStartedEvent) -> None:
        metrics.MONGO_COMMANDS.labels(event.command_name).inc()

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


class Store:
    """Async MongoDB access (PyMongo's `AsyncMongoClient`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AsyncMongoClient[Document] | None = None
        self._db: AsyncDatabase[Document] | None = None
        self._room_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._seq_hints: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def connect(self) -> None:
        self._client = AsyncMongoClient(
            self._settings.mongo_url.get_secret_value(),
            tz_aware=True,
            minPoolSize=self._settings.mongo_min_pool,
            maxPoolSize=self._settings.mongo_max_pool,
            serverSelectionTimeoutMS=5000,
            appname=f"hypersend-{self._settings.pod_name}",
            event_listeners=[PoolMetrics(), CommandMetrics()],
        )
        metrics.MONGO_POOL_MAX_CONNECTIONS.set(self._settings.mongo_max_pool)
        self._db = self._client[self._settings.mongo_db]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._db = None

    async def ping(self) -> None:
        """Raises if MongoDB cannot be reached."""
        await self._database.command("ping")

    async def ensure_indexes(self) -> None:
        await self._users.create_index([("username", ASCENDING)], unique=True, name="username")
        await self._refresh_tokens.create_index([("family_id", ASCENDING)], name="family")
        for tokens in (self._refresh_tokens, self._refresh_claims, self._revoked_families):
            await tokens.create_index([("expires_at", ASCENDING)], name="expires_at")
        await self._reactions.create_index(
            [("room_id", ASCENDING), ("seq", ASCENDING)], name="room_seq"
        )
        await self._members.create_index(
            [("user_id", ASCENDING), ("room_id", ASCENDING)], name="user_rooms"
        )
        await self._members.create_index(
            [("room_id", ASCENDING), ("joined_at", ASCENDING)], name="room_members"
        )
        await self._messages.create_index(
            [("room_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="room_seq"
        )
        # Makes a retried send idempotent even when two retries race.
        await self._messages.create_index(
            [("room_id", ASCENDING), ("sender_id", ASCENDING), ("client_id", ASCENDING)],
            unique=True,
            name="room_sender_client",
        )

    @property
    def _database(self) -> AsyncDatabase[Document]:
        if self._db is None:
            raise RuntimeError("Store.connect() was not called")
        return self._db

    @property
    def _users(self) -> AsyncCollection[Document]:
        return self._database["users"]

    @property
    def _refresh_tokens(self) -> AsyncCollection[Document]:
        return self._database["refresh_tokens"]

    @property
    def _refresh_claims(self) -> AsyncCollection[Document]:
        return self._database["refresh_token_claims"]

    @property
    def _revoked_families(self) -> AsyncCollection[Document]:
        return self._database["revoked_token_families"]

    @property
    def _reactions(self) -> AsyncCollection[Document]:
        return self._database["reactions"]

    @property
    def _rooms(self) -> AsyncCollection[Document]:
        return self._database["rooms"]

    @property
    def _members(self) -> AsyncCollection[Document]:
        return self._database["members"]

    @property
    def _messages(self) -> AsyncCollection[Document]:
        return self._database["messages"]

    @property
    def _client_ids(self) -> AsyncCollection[Document]:
        return self._database["message_client_ids"]

    # -- users ----------------------------------------------------------------------------------

    async def create_user(self, username: str, display_name: str, password_hash: str) -> User:
        doc: Document = {
            "_id": new_id(),
            "username": username,
            "display_name": display_name,
            "password_hash": password_hash,
            "created_at": utcnow(),
        }
        try:
            await self._users.insert_one(doc)
        except DuplicateKeyError as exc:
            raise UsernameTaken(username) from exc
        return _user(doc)

    async def user_with_password_hash(self, username: str) -> tuple[User, str] | None:
        doc = await self._users.find_one({"username": username})
        return None if doc is None else (_user(doc), str(doc["password_hash"]))

    async def get_user(self, user_id: str) -> User | None:
        doc = await self._users.find_one({"_id": user_id})
        return None if doc is None else _user(doc)

    async def users_by_ids(self, user_ids: Iterable[str]) -> list[User]:
        ids = list(dict.fromkeys(user_ids))
        return [_user(doc) async for doc in self._users.find({"_id": {"$in": ids}})]

    async def search_users(self, query: str, limit: int) -> list[User]:
        """Users whose username starts with `query` or whose display name contains it."""
        pattern = re.escape(query)
        cursor = (
            self._users.find(
                {
                    "$or": [
                        {"username": {"$regex": f"^{pattern}"}},
                        {"display_name": {"$regex": pattern, "$options": "i"}},
                    ]
                }
            )
            .sort("username", ASCENDING)
            .limit(limit)
        )
        return [_user(doc) async for doc in cursor]

    # -- refresh tokens -------------------------------------------------------------------------

    async def insert_refresh_token(
        self, token_hash: str, user_id: str, family_id: str, expires_at: datetime
    ) -> None:
        await self._refresh_tokens.insert_one(
            {
                "_id": token_hash,
                "user_id": user_id,
                "family_id": family_id,
                "expires_at": expires_at,
                "created_at": utcnow(),
            }
        )

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        doc = await self._refresh_tokens.find_one({"_id": token_hash})
        if doc is None:
            return None
        used = await self._refresh_claims.find_one({"_id": token_hash}) is not None
        return RefreshTokenRecord(
            token_hash=token_hash,
            user_id=str(doc["user_id"]),
            family_id=str(doc["family_id"]),
            expires_at=doc["expires_at"],
            used=used,
            revoked=await self.is_family_revoked(str(doc["family_id"])),
        )

    async def claim_refresh_token(self, token_hash: str, expires_at: datetime) -> bool:
        """Use a refresh token once: True for exactly one caller, even across processes."""
        try:
            await self._refresh_claims.insert_one(
                {"_id": token_hash, "used_at": utcnow(), "expires_at": expires_at}
            )
        except DuplicateKeyError:
            return False
        return True

    async def revoke_token_family(self, family_id: str, expires_at: datetime) -> None:
        """Revoke every token of a family; `expires_at` is when the record may be swept (no
        token of the family outlives it)."""
        with suppress(DuplicateKeyError):
            await self._revoked_families.insert_one(
                {"_id": family_id, "revoked_at": utcnow(), "expires_at": expires_at}
            )

    async def is_family_revoked(self, family_id: str) -> bool:
        return await self._revoked_families.find_one({"_id": family_id}) is not None

    async def delete_expired_refresh_tokens(self, now: datetime) -> int:
        expired = {"expires_at": {"$lt": now}}
        result = await self._refresh_tokens.delete_many(expired)
        await self._refresh_claims.delete_many(expired)
        await self._revoked_families.delete_many(expired)
        return result.deleted_count

    # -- rooms and members ----------------------------------------------------------------------

    def _room_doc(
        self, room_id: str, kind: RoomKind, name: str | None, creator: str, pair: tuple[str, ...]
    ) -> Document:
        now = utcnow()
        return {
            "_id": room_id,
            "kind": kind,
            "name": name,
            "created_by": creator,
            "created_at": now,
            "last_activity_at": now,
            "last_seq": 0,
            "pair": list(pair),
        }

    async def create_group_room(self, creator_id: str, name: str, member_ids: list[str]) -> Room:
        doc = self._room_doc(new_id(), "group", name, creator_id, ())
        await self._rooms.insert_one(doc)
        await self._ensure_member(doc["_id"], creator_id, "owner")
        for user_id in member_ids:
            if user_id != creator_id:
                await self._ensure_member(doc["_id"], user_id, "member")
        return _room(doc)

    async def get_or_create_direct_room(self, creator_id: str, other_id: str) -> tuple[Room, bool]:
        """The one direct room of the pair, created if missing; (room, created)."""
        pair = tuple(sorted((creator_id, other_id)))
        room_id = direct_room_id(creator_id, other_id)
        doc = self._room_doc(room_id, "direct", None, creator_id, pair)
        created = True
        try:
            await self._rooms.insert_one(doc)
        except DuplicateKeyError:
            created = False
        # Upserts, so a crash between the room insert and here heals on the next attempt.
        for user_id in pair:
            await self._ensure_member(room_id, user_id, "member")
        room = await self.get_room(room_id)
        if room is None:  # pragma: no cover - the room was just inserted or found
            raise RoomNotFound(room_id)
        return room, created

    async def _ensure_member(self, room_id: str, user_id: str, role: Role) -> bool:
        """Add a member unless already one; True if added."""
        try:
            result = await self._members.update_one(
                {"_id": member_id(room_id, user_id)},
                {
                    "$setOnInsert": {
                        "room_id": room_id,
                        "user_id": user_id,
                        "role": role,
                        "joined_at": utcnow(),
                        "last_read_seq": 0,
                    }
                },
                upsert=True,
            )
        except DuplicateKeyError:
            # FerretDB v1: the loser of two racing upserts gets a duplicate key; it exists now.
            return False
        return result.upserted_id is not None

    async def get_room(self, room_id: str) -> Room | None:
        doc = await self._rooms.find_one({"_id": room_id})
        if doc is None:
            return None
        # The room's summary fields are best-effort on FerretDB; the messages are exact.
        last_seq = await self.highest_seq(room_id)
        last = await self.get_message(room_id, last_seq) if last_seq else None
        return _room({**doc, "last_seq": last_seq}, last)

    async def rooms_for_user(self, user_id: str) -> list[tuple[Room, Member]]:
        """The user's rooms with their membership, newest activity first, with last messages."""
        members = {
            m["room_id"]: _member(m)
            async for m in self._members.find({"user_id": user_id}).limit(MAX_ROOMS_LISTED)
        }
        if not members:
            return []
        room_docs = [
            doc
            async for doc in self._rooms.find({"_id": {"$in": list(members)}}).sort(
                "last_activity_at", DESCENDING
            )
        ]
        last_ids = [message_id(d["_id"], int(d["last_seq"])) for d in room_docs if d["last_seq"]]
        found = [_message(doc) async for doc in self._messages.find({"_id": {"$in": last_ids}})]
        last_messages = {m.room_id: m for m in await self._with_reactions(found)}
        return [
            (_room(doc, last_messages.get(doc["_id"])), members[doc["_id"]]) for doc in room_docs
        ]

    async def room_ids_for_user(self, user_id: str) -> list[str]:
        cursor = self._members.find({"user_id": user_id}, projection={"room_id": True})
        return [str(doc["room_id"]) async for doc in cursor]

    async def get_member(self, room_id: str, user_id: str) -> Member | None:
        doc = await self._members.find_one({"_id": member_id(room_id, user_id)})
        return None if doc is None else _member(doc)

    async def is_member(self, room_id: str, user_id: str) -> bool:
        doc = await self._members.find_one(
            {"_id": member_id(room_id, user_id)}, projection={"_id": True}
        )
        return doc is not None

    async def members(self, room_id: str) -> list[Member]:
        cursor = self._members.find({"room_id": room_id}).sort("joined_at", ASCENDING)
        return [_member(doc) async for doc in cursor]

    async def member_ids(self, room_id: str) -> list[str]:
        cursor = self._members.find({"room_id": room_id}, projection={"user_id": True})
        return [str(doc["user_id"]) async for doc in cursor]

    async def add_member(self, room_id: str, user_id: str, role: Role) -> bool:
        """True if the user was added, False if already a member (role unchanged)."""
        return await self._ensure_member(room_id, user_id, role)

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        result = await self._members.delete_one({"_id": member_id(room_id, user_id)})
        return result.deleted_count == 1

    async def set_role(self, room_id: str, user_id: str, role: Role) -> Member | None:
        doc = await self._members.find_one_and_update(
            {"_id": member_id(room_id, user_id)},
            {"$set": {"role": role}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _member(doc)

    async def mark_read(self, room_id: str, user_id: str, seq: int) -> None:
        """Raise the member's read marker to `seq` (never lowers it)."""
        await self._members.update_one(
            {"_id": member_id(room_id, user_id), "last_read_seq": {"$lt": seq}},
            {"$set": {"last_read_seq": seq}},
        )

    # -- messages -------------------------------------------------------------------------------

    async def append_message(
        self,
        room_id: str,
        sender_id: str,
        client_id: str,
        text: str,
        on_stored: OnStored | None = None,
    ) -> tuple[Message, bool]:
        """Store a message with the room's next seq; (message, created).

        A retry with the same (room_id, sender_id, client_id) returns the stored message with
        created=False; the unique index makes that hold for concurrent retries too. Raises
        `SeqContention` (nothing stored) when other processes kept winning the seq race.

        `on_stored` (the caller's publish; it must not raise) runs right after the insert, still
        in this process's turn for the room: so a process publishes a room's messages in seq
        order, and receivers never wait for the bookkeeping writes that follow (a publish that
        overtakes an earlier seq makes every receiver hold it back until the gap is filled).
        """
        # Senders of this process take turns per room, so seqs are raced only across processes.
        async with self._room_lock(room_id):
            msg, created = await self._insert_next(room_id, sender_id, client_id, text)
            if on_stored is not None:
                await on_stored(msg)
        if created:
            # Both best-effort: the message is stored and needs neither to be found or ordered
            # (a missing client-id record falls back to the unique index, the next message
            # corrects the summary). Their failure must not turn a stored message into an error
            # answer: the sender would be told "not stored" and nobody told it exists.
            outcomes = await asyncio.gather(
                self._record_client_id(msg),
                self._rooms.update_one(
                    {"_id": room_id, "last_seq": {"$lt": msg.seq}},
                    {"$set": {"last_seq": msg.seq, "last_activity_at": msg.created_at}},
                ),
                return_exceptions=True,
            )
            for step, outcome in zip(("client-id record", "room summary"), outcomes, strict=True):
                if isinstance(outcome, PyMongoError):
                    problem = str(outcome)[:200]
                    log.warning("%s not written room=%s: %s", step, room_id, problem)
                elif isinstance(outcome, BaseException):
                    raise outcome
        return msg, created

    async def _insert_next(
        self, room_id: str, sender_id: str, client_id: str, text: str
    ) -> tuple[Message, bool]:
        # Every probe is a point operation on `_id`: FerretDB v1 scans for anything else. The
        # first seq tried is at most the highest stored + 1 (hints never run ahead of stored
        # messages) and a seq is only tried after the one below it was seen stored, so the
        # seq that wins is always exactly highest + 1: no gap.
        seq = max(self._seq_hints.get(room_id, 0), await self._room_last_seq(room_id)) + 1
        for attempt in range(MAX_SEQ_ATTEMPTS):
            doc = new_message_doc(room_id, seq, sender_id, client_id, text, utcnow())
            try:
                await self._messages.insert_one(doc)
            except DuplicateKeyError:
                taken = await self._messages.find_one({"_id": message_id(room_id, seq)})
                if taken is None:
                    # The seq is free, so the client id collided: a retry of a stored message.
                    existing = await self._find_by_client_id(room_id, sender_id, client_id)
                    if existing is not None:
                        return existing, False
                    continue  # pragma: no cover - messages are never removed
                if taken["sender_id"] == sender_id and taken["client_id"] == client_id:
                    return _message(taken), False
                # Another process stored this seq first: go on from the freshest hint.
                self._note_seq(room_id, seq)
                seq = max(seq, await self._room_last_seq(room_id)) + 1
                await asyncio.sleep(contention_backoff(attempt))
                continue
            self._note_seq(room_id, seq)
            return _message(doc), True
        raise SeqContention(room_id)

    def _room_lock(self, room_id: str) -> _RoomTurn:
        return _RoomTurn(self._room_locks, room_id)

    def _note_seq(self, room_id: str, seq: int) -> None:
        """Remember that `seq` is stored (a lower bound of the room's highest seq)."""
        if len(self._seq_hints) >= MAX_SEQ_HINTS and room_id not in self._seq_hints:
            self._seq_hints.clear()  # a cache only: losing it costs a probe per room
        if seq > self._seq_hints.get(room_id, 0):
            self._seq_hints[room_id] = seq

    async def _room_last_seq(self, room_id: str) -> int:
        doc = await self._rooms.find_one({"_id": room_id}, projection={"last_seq": True})
        return 0 if doc is None else int(doc.get("last_seq") or 0)

    async def _record_client_id(self, msg: Message) -> None:
        with suppress(DuplicateKeyError):
            await self._client_ids.insert_one(
                {"_id": client_key(msg.room_id, msg.sender_id, msg.client_id), "seq": msg.seq}
            )

    async def highest_seq(self, room_id: str) -> int:
        """The room's highest stored seq (0 if empty): exact, unlike `Room.last_seq`."""
        seq = max(self._seq_hints.get(room_id, 0), await self._room_last_seq(room_id))
        for _ in range(MAX_SEQ_PROBES):
            found = await self._messages.find_one(
                {"_id": message_id(room_id, seq + 1)}, projection={"_id": True}
            )
            if found is None:
                self._note_seq(room_id, seq)
                return seq
            seq += 1
        # The room's summary is far behind (lost updates): ask the index instead.
        doc = await self._messages.find_one(
            {"room_id": room_id}, projection={"seq": True}, sort=[("seq", DESCENDING)]
        )
        return 0 if doc is None else int(doc["seq"])

    async def _find_by_client_id(
        self, room_id: str, sender_id: str, client_id: str
    ) -> Message | None:
        claim = await self._client_ids.find_one({"_id": client_key(room_id, sender_id, client_id)})
        if claim is not None:
            doc = await self._messages.find_one({"_id": message_id(room_id, int(claim["seq"]))})
        else:
            # Only if the process died (or is still busy) between storing and recording it.
            doc = await self._messages.find_one(
                {"room_id": room_id, "sender_id": sender_id, "client_id": client_id}
            )
        return None if doc is None else _message(doc)

    async def get_message(self, room_id: str, seq: int) -> Message | None:
        doc = await self._messages.find_one({"_id": message_id(room_id, seq)})
        return None if doc is None else (await self._with_reactions([_message(doc)]))[0]

    async def messages_after(self, room_id: str, after_seq: int, limit: int) -> list[Message]:
        """Messages with seq > after_seq, ascending, at most `limit`."""
        cursor = (
            self._messages.find({"room_id": room_id, "seq": {"$gt": after_seq}})
            .sort("seq", ASCENDING)
            .limit(limit)
        )
        return await self._with_reactions([_message(doc) async for doc in cursor])

    async def messages_before(
        self, room_id: str, before_seq: int | None, limit: int
    ) -> list[Message]:
        """The `limit` newest messages with seq < before_seq (all if None), ascending."""
        query: Document = {"room_id": room_id}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        cursor = self._messages.find(query).sort("seq", DESCENDING).limit(limit)
        newest_first = [_message(doc) async for doc in cursor]
        return await self._with_reactions(newest_first[::-1])

    async def edit_message(self, room_id: str, seq: int, text: str) -> Message | None:
        """Replace the text, keeping the previous one in `edits`; None if missing or deleted."""
        for _ in range(MAX_SEQ_ATTEMPTS):
            current = await self.get_message(room_id, seq)
            if current is None or current.deleted:
                return None
            now = utcnow()
            # Conditional on the text we read, so two racing edits both keep their history.
            doc = await self._messages.find_one_and_update(
                {"_id": current.id, "text": current.text, "deleted": False},
                {
                    "$set": {"text": text, "edited_at": now},
                    "$push": {"edits": {"text": current.text, "edited_at": now}},
                },
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return (await self._with_reactions([_message(doc)]))[0]
        raise EditContention(room_id)

    async def delete_message(self, room_id: str, seq: int) -> Message | None:
        """Soft-delete (idempotent); None if the message does not exist."""
        doc = await self._messages.find_one_and_update(
            {"_id": message_id(room_id, seq), "deleted": False},
            {"$set": {"deleted": True, "deleted_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return await self.get_message(room_id, seq)
        return (await self._with_reactions([_message(doc)]))[0]

    async def add_reaction(
        self, room_id: str, seq: int, emoji: str, user_id: str
    ) -> Message | None:
        """Add the user's reaction (a no-op if present); None if the message does not exist."""
        if await self.get_message(room_id, seq) is None:
            return None
        with suppress(DuplicateKeyError):
            await self._reactions.insert_one(
                {
                    "_id": f"{message_id(room_id, seq)}:{user_id}:{emoji}",
                    "room_id": room_id,
                    "seq": seq,
                    "emoji": emoji,
                    "user_id": user_id,
                    "created_at": utcnow(),
                }
            )
        return await self.get_message(room_id, seq)

    async def remove_reaction(
        self, room_id: str, seq: int, emoji: str, user_id: str
    ) -> Message | None:
        await self._reactions.delete_one({"_id": f"{message_id(room_id, seq)}:{user_id}:{emoji}"})
        return await self.get_message(room_id, seq)

    async def _with_reactions(self, messages: list[Message]) -> list[Message]:
        """Attach reactions (kept in their own collection, one document per reaction)."""
        if not messages:
            return messages
        keys = {(m.room_id, m.seq) for m in messages}
        rooms = {room for room, _ in keys}
        query: Document = (
            {"room_id": next(iter(rooms)), "seq": {"$in": [seq for _, seq in keys]}}
            if len(rooms) == 1
            else {"$or": [{"room_id": room, "seq": seq} for room, seq in keys]}
        )
        found: dict[tuple[str, int], dict[str, list[str]]] = {}
        async for doc in self._reactions.find(query).sort("created_at", ASCENDING):
            by_emoji = found.setdefault((doc["room_id"], int(doc["seq"])), {})
            by_emoji.setdefault(str(doc["emoji"]), []).append(str(doc["user_id"]))
        return [
            m.model_copy(update={"reactions": found[(m.room_id, m.seq)]})
            if (m.room_id, m.seq) in found
            else m
            for m in messages
        ]
