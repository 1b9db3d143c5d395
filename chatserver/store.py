"""MongoDB access for the chat server: the only module that imports pymongo.

Works on MongoDB 6+/Atlas and on FerretDB v1, so it uses only indexes (unique, compound),
find with sort/limit, findAndModify, upserts and plain updates: no TTL indexes, `$lookup`,
change streams or transactions. Refresh-token expiry is done by the application.

Sequence numbers: a message's `_id` is `"<room_id>:<seq>"`, and a unique index on
(room_id, sender_id, client_id) makes the message document its own idempotency record. Sends
go through a group commit (`append_message`): while one batch is being inserted the next
collects, and a batch is one ordered `insert_many` of many rooms' messages, each room's seqs
continuing from its highest stored seq. An ordered insert stores exactly the documents before
its first error, so every room gets a prefix of its seqs: no hole, also when the process dies
mid-insert. The error is a duplicate: another process stored that seq first (the room's
highest is read again and the rest of the batch goes again), or the client id was stored
before (the send is answered with that message and its room's next send takes the seq). So a
seq exists only once its message is stored and seq N is stored only after N-1: resume can
always fetch a missing seq from history. (A separate `$inc` counter would leave a hole whenever
the process dies between allocating and inserting, and FerretDB v1's `$inc` is not atomic.)
The room summaries are written behind the messages, batched (`_summary_loop`). A send may ask
for the sender's membership to be checked: the batch reads all its (room, sender) pairs in one
find right before the insert (`_members_only`), instead of a find per message.

FerretDB v1 applies findAndModify/update as read-modify-write of the whole document without a
transaction (FerretDB/FerretDB#3040): a conditional update can have several winners and
concurrent updates of one document can lose each other's changes. So every race that matters is
decided by a unique key on insert instead: message seqs and client ids, direct rooms (their id
is derived from the pair), memberships, refresh-token use (a claim document per token) and
family revocation, and reactions (one document per user, emoji and message). What stays
read-modify-write is best-effort by design: a room's `last_seq`/`last_activity_at` summary
(written a moment after the messages, and the next message corrects it; reads that need the
exact value use `highest_seq`), read markers, and
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
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, PyMongoError
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
from chatserver.batching import KeyedReads
from chatserver.config import Settings
from chatserver.models import Member, Message, Role, Room, RoomKind, User, utcnow

Document = dict[str, Any]
# Called with a message once it is stored (see `Store.append_message`).
OnStored = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

# A process stores its messages in batches, so a seq race is lost only to other processes;
# after this many lost races the sender gets `SeqContention` (a "try_again" answer).
MAX_SEQ_ATTEMPTS: Final = 64
# Messages in one group commit at most (one insert command). The group commit relies on an
# ordered insert storing exactly the documents before the first error; FerretDB v1 does so only
# within one of its insert batches (`--test-batch-size`, 100 by default): after a duplicate in
# one batch it goes on with the next (internal/handler/msg_insert.go in its module), which
# would leave a hole in a room's seqs.
MAX_COMMIT_BATCH: Final = 100
# Room summaries (`last_seq`, `last_activity_at`) are written at most this often per process,
# at most this many rooms per update command: FerretDB v1 keeps every statement's cursor open
# until the command ends (internal/handler/msg_update.go in its module), so a command of a few
# hundred statements exhausts its backend's connections and hangs (measured: 50 statements
# 0.19 s on PostgreSQL, 200 never finished on SQLite).
SUMMARY_INTERVAL_SECONDS: Final = 0.25
SUMMARY_CHUNK: Final = 16
# Under load the writer rests longer, so a process writes about this many summaries a second,
# each at most SUMMARY_MAX_INTERVAL_SECONDS behind: every busy room was rewritten every 0.25 s,
# and on FerretDB v1 an update costs ~1.2 ms of FerretDB and PostgreSQL CPU (an insert 0.17 ms),
# so at 1,139 msg/s over 200 rooms the summaries alone came to ~1 core (issue #16).
SUMMARY_WRITES_PER_SECOND: Final = 100
SUMMARY_MAX_INTERVAL_SECONDS: Final = 5.0
# Rooms whose highest known seq a process remembers (a cache; cleared when full).
MAX_SEQ_HINTS: Final = 100_000
# Rooms listed by GET /rooms at most (newest activity first).
MAX_ROOMS_LISTED: Final = 500
# Memberships read by one `existing_members` command at most (its answer comes in one batch).
MEMBERSHIP_CHUNK: Final = 1000
# Logins whose revocation one `find` reads at most (see `is_family_revoked`).
REVOCATION_CHUNK: Final = 1000


# The server error code of a duplicate key (MongoDB and FerretDB).
DUPLICATE_KEY: Final = 11000

# Errors meaning MongoDB is unreachable right now (callers answer 503, not 500).
UNAVAILABLE_ERRORS: Final[tuple[type[Exception], ...]] = (ConnectionFailure,)


class StoreError(Exception):
    """Base class of the store's domain errors."""


class UsernameTaken(StoreError):
    """A user with this username already exists."""


class RoomNotFound(StoreError):
    """The room does not exist."""


class NotMember(RoomNotFound):
    """The sender is not a member of the room (or the room does not exist): nothing stored."""


class SeqContention(StoreError):
    """Other processes kept winning the room's next seq; nothing was stored, retry later."""


class UnexplainedDuplicate(StoreError):
    """A message collided on a unique index other than its seq and client id: not stored."""


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


@dataclass(slots=True)
class _PendingSend:
    """A send waiting for its group commit."""

    room_id: str
    sender_id: str
    client_id: str
    text: str
    on_stored: OnStored | None
    future: asyncio.Future[tuple[Message, bool]]
    # Whether the group commit checks the sender's membership before the insert (the caller
    # has not: a REST send, or a socket that does not know the room, see `append_message`).
    check_member: bool = False
    attempts: int = 0
    # Sends with the same client key in the same batch: answered with this one's message.
    retries: list[_PendingSend] = field(default_factory=list)

    @property
    def key(self) -> str:
        return client_key(self.room_id, self.sender_id, self.client_id)

    def answer(self, msg: Message, created: bool) -> None:
        for send, first in ((self, created), *((r, False) for r in self.retries)):
            if not send.future.done():  # a caller that gave up (cancelled) has no answer
                send.future.set_result((msg, first))

    def fail(self, exc: BaseException) -> None:
        for send in (self, *self.retries):
            if not send.future.done():
                send.future.set_exception(exc)


def merge_retries(batch: list[_PendingSend]) -> list[_PendingSend]:
    """The batch without sends repeating an earlier one's client key (attached to it)."""
    first: dict[str, _PendingSend] = {}
    for send in batch:
        if send.key in first:
            first[send.key].retries.append(send)
        else:
            first[send.key] = send
    return list(first.values())


def only_members(
    batch: list[_PendingSend], members: set[tuple[str, str]]
) -> tuple[list[_PendingSend], list[_PendingSend]]:
    """(sends that may be stored, sends refused): a send asking for the membership check is
    refused unless its (room, sender) is in `members`."""
    allowed: list[_PendingSend] = []
    refused: list[_PendingSend] = []
    for send in batch:
        ok = not send.check_member or (send.room_id, send.sender_id) in members
        (allowed if ok else refused).append(send)
    return allowed, refused


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def assign_seqs(rooms: list[str], highest: Mapping[str, int]) -> list[int]:
    """Seqs for sends to `rooms` (in order): each room's continue from its highest stored."""
    nxt = dict(highest)
    seqs = []
    for room in rooms:
        nxt[room] = nxt[room] + 1
        seqs.append(nxt[room])
    return seqs


def summary_pause(rooms_written: int) -> float:
    """How long the summary writer rests after writing ``rooms_written`` room summaries: the
    usual interval, longer as more rooms were due (SUMMARY_WRITES_PER_SECOND), never more than
    SUMMARY_MAX_INTERVAL_SECONDS."""
    paced = rooms_written / SUMMARY_WRITES_PER_SECOND
    return min(SUMMARY_MAX_INTERVAL_SECONDS, max(SUMMARY_INTERVAL_SECONDS, paced))


def first_duplicate(details: Mapping[str, Any]) -> int | None:
    """Index of the duplicate that stopped an ordered insert; None if it failed otherwise."""
    errors = details.get("writeErrors") or []
    if len(errors) != 1 or errors[0].get("code") != DUPLICATE_KEY:
        return None
    return int(errors[0]["index"])


async def _deliver_after(
    previous: asyncio.Task[None] | None, sends: list[tuple[_PendingSend, Message, bool]]
) -> None:
    if previous is not None:
        await asyncio.wait([previous])
    for send, msg, created in sends:
        if send.on_stored is not None:
            try:
                await send.on_stored(msg)
            except Exception:
                log.exception("on_stored failed room=%s seq=%d", msg.room_id, msg.seq)
        send.answer(msg, created)


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
        self._collections: dict[str, AsyncCollection[Document]] = {}
        self._seq_hints: dict[str, int] = {}
        # The group commit (see `append_message`).
        self._pending: list[_PendingSend] = []
        self._in_flight: list[_PendingSend] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        # Per room, the task publishing and answering its latest stored messages.
        self._delivering: dict[str, asyncio.Task[None]] = {}
        # Per room, the summary read `seq_floors` has under way: callers meanwhile share it.
        self._floor_reads: dict[str, asyncio.Future[int]] = {}
        # Room summaries waiting for their bulk update.
        self._dirty_summaries: dict[str, Message] = {}
        self._summaries_wake = asyncio.Event()
        self._summarizer: asyncio.Task[None] | None = None
        # Revocation checks asked together share a find (see `is_family_revoked`).
        self._revocations = KeyedReads(self._revoked_among, max_keys=REVOCATION_CHUNK)

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
        self._collections.clear()

    async def close(self) -> None:
        # Sends still queued or in flight get an error (their outcome is unknown: a retry with
        # the same client id finds a stored one); stored ones are answered first.
        for task in (self._committer, self._summarizer):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._committer = self._summarizer = None
        await self._revocations.close()
        if self._delivering:
            await asyncio.wait(list(self._delivering.values()))
        closed = ConnectionFailure("the store was closed")
        for send in (*self._in_flight, *self._pending):
            send.fail(closed)  # answered ones keep their answer
        self._in_flight, self._pending = [], []
        if self._client is not None:
            await self._write_summaries()
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._db = None
            self._collections.clear()

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
        await self._removals.create_index([("at", ASCENDING)], name="at")
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

    def _collection(self, name: str) -> AsyncCollection[Document]:
        # Kept: a collection object costs a few µs to make, and the hot paths use several.
        collection = self._collections.get(name)
        if collection is None:
            collection = self._collections[name] = self._database[name]
        return collection

    @property
    def _users(self) -> AsyncCollection[Document]:
        return self._collection("users")

    @property
    def _refresh_tokens(self) -> AsyncCollection[Document]:
        return self._collection("refresh_tokens")

    @property
    def _refresh_claims(self) -> AsyncCollection[Document]:
        return self._collection("refresh_token_claims")

    @property
    def _revoked_families(self) -> AsyncCollection[Document]:
        return self._collection("revoked_token_families")

    @property
    def _reactions(self) -> AsyncCollection[Document]:
        return self._collection("reactions")

    @property
    def _rooms(self) -> AsyncCollection[Document]:
        return self._collection("rooms")

    @property
    def _members(self) -> AsyncCollection[Document]:
        return self._collection("members")

    @property
    def _messages(self) -> AsyncCollection[Document]:
        return self._collection("messages")

    @property
    def _removals(self) -> AsyncCollection[Document]:
        return self._collection("membership_removals")

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
        """Whether the login was revoked, as of a read sent after this call.

        Every socket's connect asks this, so the checks asked together (a reconnect wave) go
        out as one find by `_id` (chatserver/batching.py). On MongoDB an `$in` of `_id`s is an
        index lookup; FerretDB v1 filters an `$in` itself after reading the collection, which
        holds one record per logout until its family expires (a single check asks by equality,
        which it pushes down).
        """
        return await self._revocations.contains(family_id)

    async def _revoked_among(self, family_ids: list[str]) -> set[str]:
        query: Document = {"_id": family_ids[0] if len(family_ids) == 1 else {"$in": family_ids}}
        # One more than can match: the first batch exhausts the cursor (no getMore).
        cursor = self._revoked_families.find(
            query, projection={"_id": True}, batch_size=len(family_ids) + 1
        )
        return {str(doc["_id"]) async for doc in cursor}

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
        room_docs = [doc async for doc in self._rooms.find({"_id": {"$in": list(members)}})]
        for doc in room_docs:
            # The summaries are written behind the messages (`_summary_loop`): what this
            # process stored itself it knows already.
            doc["last_seq"] = max(int(doc["last_seq"] or 0), self._seq_hints.get(doc["_id"], 0))
        last_ids = [message_id(d["_id"], int(d["last_seq"])) for d in room_docs if d["last_seq"]]
        found = [_message(doc) async for doc in self._messages.find({"_id": {"$in": last_ids}})]
        last_messages = {m.room_id: m for m in await self._with_reactions(found)}
        for doc in room_docs:
            last = last_messages.get(doc["_id"])
            if last is not None and last.created_at > doc["last_activity_at"]:
                doc["last_activity_at"] = last.created_at
        room_docs.sort(key=lambda doc: doc["last_activity_at"], reverse=True)
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

    async def existing_members(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (room_id, user_id) pairs are memberships: one find per MEMBERSHIP_CHUNK pairs.

        By `_id` (an index lookup on MongoDB; FerretDB v1 pushes only a single `_id` equality
        down to its backend and filters an `$in` itself, so one pair is asked by equality).
        """
        wanted = {member_id(room, user): (room, user) for room, user in pairs}
        found: set[tuple[str, str]] = set()
        for chunk in chunked(list(wanted), MEMBERSHIP_CHUNK):
            query: Document = {"_id": chunk[0] if len(chunk) == 1 else {"$in": chunk}}
            # One more than can match: the first batch exhausts the cursor (no getMore).
            cursor = self._members.find(query, projection={"_id": True}, batch_size=len(chunk) + 1)
            found.update([wanted[str(doc["_id"])] async for doc in cursor])
        return found

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
        """Remove a membership, logging the removal first (see `removals_since`)."""
        # Logged before the delete: a process that dies in between leaves a removal to check,
        # never an unlogged one.
        await self._removals.insert_one({"room_id": room_id, "user_id": user_id, "at": utcnow()})
        result = await self._members.delete_one({"_id": member_id(room_id, user_id)})
        return result.deleted_count == 1

    async def removals_since(self, since: datetime) -> set[tuple[str, str]]:
        """The (room_id, user_id) pairs removed at `since` or later, by the removers' clocks.

        What lets a process find a removal whose bus event its sockets never got by reading
        what was removed, not every membership they follow (chatserver/realtime.py,
        Hub.recheck_memberships). The log holds only what `prune_removals` keeps, so a read
        stays small also where the range is not served from the index (FerretDB v1).
        """
        cursor = self._removals.find(
            {"at": {"$gte": since}}, projection={"_id": False, "room_id": True, "user_id": True}
        )
        return {(str(doc["room_id"]), str(doc["user_id"])) async for doc in cursor}

    async def prune_removals(self, before: datetime) -> None:
        await self._removals.delete_many({"at": {"$lt": before}})

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
        *,
        check_member: bool = False,
    ) -> tuple[Message, bool]:
        """Store a message with the room's next seq; (message, created).

        The send joins this process's group commit: sends that arrive while a batch is being
        inserted go into the next one, many rooms' messages in one ordered `insert_many`
        (docs/architecture.md, "Group commit"). Returns once the message is stored. A retry
        with the same (room_id, sender_id, client_id) returns the stored message with
        created=False, also when it races the first attempt or sits in the same batch. Raises
        `SeqContention` (nothing stored) when other processes kept winning the room's seqs,
        and the database's error when the batch failed (then this message may or may not be
        stored: the sender retries with the same client id and gets the one message).

        `on_stored` (the caller's publish) runs right after the insert and before this returns;
        a process runs it for a room's messages in seq order (a publish that overtakes an
        earlier seq makes every receiver hold it back until the gap is filled). Its failure is
        logged: the message is stored and the sender gets its ack.

        `check_member`: refuse the send with `NotMember` (nothing stored) unless MongoDB says
        the sender is a member of the room, read right before the insert. The batch's checks
        are one find for all of them, so a checked send costs no round trip of its own under
        load (issue #16), where a separate check before the call cost one per message.
        """
        send = _PendingSend(
            room_id,
            sender_id,
            client_id,
            text,
            on_stored,
            asyncio.get_running_loop().create_future(),
            check_member,
        )
        self._pending.append(send)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop(), name="store-group-commit")
        self._wake.set()
        return await send.future

    async def _commit_loop(self) -> None:
        # One batch in flight per process: a room's messages of two concurrent batches could
        # leave a hole if the earlier batch failed and the later one did not.
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._in_flight = self._pending[:MAX_COMMIT_BATCH]
            del self._pending[:MAX_COMMIT_BATCH]
            await self._commit(self._in_flight)
            self._in_flight = []

    async def _commit(self, batch: list[_PendingSend]) -> None:
        todo = await self._members_only(merge_retries(batch))
        highest: dict[str, int] = {}
        while todo:
            done: list[tuple[_PendingSend, Message, bool]] = []
            try:
                await self._learn_highest(highest, {send.room_id for send in todo})
                now = utcnow()
                docs = [
                    new_message_doc(s.room_id, seq, s.sender_id, s.client_id, s.text, now)
                    for s, seq in zip(
                        todo, assign_seqs([s.room_id for s in todo], highest), strict=True
                    )
                ]
                started = time.monotonic()
                try:
                    await self._messages.insert_many(docs, ordered=True)
                    stored = len(docs)
                except BulkWriteError as exc:
                    duplicate = first_duplicate(exc.details)
                    if duplicate is None:
                        raise
                    stored = duplicate
                finally:
                    metrics.STORE_COMMIT_SECONDS.observe(time.monotonic() - started)
                    metrics.STORE_COMMIT_MESSAGES.observe(len(docs))
                done = [
                    (send, _message(doc), True)
                    for send, doc in zip(todo[:stored], docs[:stored], strict=True)
                ]
                for _, msg, _ in done:
                    highest[msg.room_id] = msg.seq
                    self._note_seq(msg.room_id, msg.seq)
                # Ordered: the docs before `stored` are in, the one at `stored` is a duplicate
                # and nothing after it was tried.
                todo = todo[stored:]
                if todo:
                    send, rest = todo[0], todo[1:]
                    try:
                        existing = await self._settle_duplicate(send, docs[stored], highest)
                    except UnexplainedDuplicate as exc:
                        # Not stored; its room's later sends take its seq.
                        send.fail(exc)
                        todo = rest
                    else:
                        todo = self._after_duplicate(send, existing, rest, done)
            except Exception as exc:
                # Not stored as far as we know (or in part: then the retry finds it by its
                # client id). What was stored is a prefix of each room's seqs, so no hole.
                log.warning("storing %d messages failed: %s", len(todo), str(exc)[:200])
                for send in todo:
                    send.fail(exc)
                todo = []
            if done:
                self._deliver(done)

    async def _members_only(self, batch: list[_PendingSend]) -> list[_PendingSend]:
        """The sends of `batch` that may be stored; the others are answered with `NotMember`
        (or the error of the membership read: then nothing of theirs was stored)."""
        pairs = {(s.room_id, s.sender_id) for s in batch if s.check_member}
        if not pairs:
            return batch
        members: set[tuple[str, str]] = set()
        failed: Exception | None = None
        try:
            members = await self.existing_members(pairs)
        except Exception as exc:
            log.warning("membership check of %d sends failed: %s", len(batch), str(exc)[:200])
            failed = exc
        allowed, refused = only_members(batch, members)
        for send in refused:
            send.fail(failed if failed is not None else NotMember(send.room_id))
        return allowed

    @staticmethod
    def _after_duplicate(
        send: _PendingSend,
        existing: Message | None,
        rest: list[_PendingSend],
        done: list[tuple[_PendingSend, Message, bool]],
    ) -> list[_PendingSend]:
        """What is left to insert after `send` hit a duplicate (`existing`: it was a retry)."""
        if existing is not None:
            done.append((send, existing, False))
            return rest
        if send.attempts + 1 >= MAX_SEQ_ATTEMPTS:
            send.fail(SeqContention(send.room_id))
            return rest
        send.attempts += 1
        return [send, *rest]  # first again: its room's later sends follow it

    async def _learn_highest(self, highest: dict[str, int], rooms: set[str]) -> None:
        """Fill `highest` for `rooms` from this process's hints, else the rooms' summaries."""
        unknown = [room for room in rooms if room not in highest]
        for room in list(unknown):
            if room in self._seq_hints:
                highest[room] = self._seq_hints[room]
                unknown.remove(room)
        # A lower bound (the summary is written after the insert): a stale one costs a
        # duplicate on insert, never a hole.
        found = await asyncio.gather(*(self._room_last_seq(room) for room in unknown))
        highest.update(zip(unknown, found, strict=True))

    async def _settle_duplicate(
        self, send: _PendingSend, doc: Document, highest: dict[str, int]
    ) -> Message | None:
        """The stored message if `send` is a retry, else None after catching up the room."""
        taken = await self._messages.find_one({"_id": doc["_id"]})
        if taken is None:
            # The seq is free, so the client id collided: a retry of a stored message.
            found = await self._find_by_client_id(send.room_id, send.sender_id, send.client_id)
            if found is None:
                raise UnexplainedDuplicate(f"message {doc['_id']} collided on another index")
            return found
        if taken["sender_id"] == send.sender_id and taken["client_id"] == send.client_id:
            return _message(taken)
        # Another process stored this seq first: start again from the room's highest.
        self._note_seq(send.room_id, int(doc["seq"]))
        highest[send.room_id] = await self.highest_seq(send.room_id)
        return None

    def _deliver(self, done: list[tuple[_PendingSend, Message, bool]]) -> None:
        """Publish and answer `done`, each room in seq order after its earlier batches: a
        publish that hangs (Redis gone) holds up its room only."""
        by_room: dict[str, list[tuple[_PendingSend, Message, bool]]] = {}
        for item in done:
            by_room.setdefault(item[1].room_id, []).append(item)
            self._summaries_due(item[1])
        for room_id, sends in by_room.items():
            task = asyncio.create_task(
                _deliver_after(self._delivering.get(room_id), sends), name="store-deliver"
            )
            self._delivering[room_id] = task
            task.add_done_callback(partial(self._delivered, room_id))

    def _delivered(self, room_id: str, task: asyncio.Task[None]) -> None:
        if self._delivering.get(room_id) is task:
            del self._delivering[room_id]

    def _summaries_due(self, msg: Message) -> None:
        due = self._dirty_summaries.get(msg.room_id)
        if due is None or due.seq < msg.seq:
            self._dirty_summaries[msg.room_id] = msg
        if self._summarizer is None or self._summarizer.done():
            self._summarizer = asyncio.create_task(self._summary_loop(), name="store-summaries")
        self._summaries_wake.set()

    async def _summary_loop(self) -> None:
        # Best-effort and off the send path: one bulk update for every room that got messages
        # since the last one (a crash loses at most an interval of them; the next message
        # corrects the summary, reads that need the exact value use `highest_seq`).
        while True:
            await self._summaries_wake.wait()
            self._summaries_wake.clear()
            await asyncio.sleep(summary_pause(await self._write_summaries()))

    async def _write_summaries(self) -> int:
        """Write the summaries due; how many rooms were due."""
        due, self._dirty_summaries = self._dirty_summaries, {}
        if not due:
            return 0
        updates = [
            UpdateOne(
                {"_id": room_id, "last_seq": {"$lt": msg.seq}},
                {"$set": {"last_seq": msg.seq, "last_activity_at": msg.created_at}},
            )
            for room_id, msg in due.items()
        ]
        for start in range(0, len(updates), SUMMARY_CHUNK):
            try:
                await self._rooms.bulk_write(updates[start : start + SUMMARY_CHUNK], ordered=False)
            except PyMongoError as exc:
                problem = str(exc)[:200]
                log.warning("room summaries not written (%d rooms): %s", len(due), problem)
        return len(due)

    def _note_seq(self, room_id: str, seq: int) -> None:
        """Remember that `seq` is stored (a lower bound of the room's highest seq)."""
        if len(self._seq_hints) >= MAX_SEQ_HINTS and room_id not in self._seq_hints:
            self._seq_hints.clear()  # a cache only: losing it costs a probe per room
        if seq > self._seq_hints.get(room_id, 0):
            self._seq_hints[room_id] = seq

    async def _room_last_seq(self, room_id: str) -> int:
        doc = await self._rooms.find_one({"_id": room_id}, projection={"last_seq": True})
        return 0 if doc is None else int(doc.get("last_seq") or 0)

    async def seq_floors(self, room_ids: list[str]) -> dict[str, int]:
        """Each room's highest stored seq as of the read (`highest_seq`), where a new socket's
        live delivery starts.

        Not the summary alone: it is written behind the messages, and a process killed before
        writing it leaves it behind until the room's next message. Every socket of such a room
        then filled the difference from history, messages from before it went live, with a
        range read each that FerretDB v1 answers by reading the room's every message (issue
        #16: the 10x load after a ramp fell 26 s behind). Per room the summary and the probes,
        all by `_id`, concurrent across rooms: FerretDB v1 pushes down only an `_id` equality
        (internal/backends/sqlite/collection.go in its module), so one `$in` find would read
        the whole rooms collection.

        A read under way for a room is shared: the members of a room connecting together (a
        burst of reconnects after a deploy) cost one read, not one each. A read that started
        earlier is still a lower bound, since seqs only grow; a socket fills from history what
        is stored above its floor and it did not get live."""
        found = await asyncio.gather(*(self._shared_floor_read(room) for room in room_ids))
        return {
            room: max(seq, self._seq_hints.get(room, 0))
            for room, seq in zip(room_ids, found, strict=True)
        }

    def _shared_floor_read(self, room_id: str) -> asyncio.Future[int]:
        read = self._floor_reads.get(room_id)
        if read is None:
            read = asyncio.ensure_future(self.highest_seq(room_id))
            self._floor_reads[room_id] = read
            read.add_done_callback(lambda done: self._floor_read_done(room_id, done))
        # Shielded: a caller cancelled (its socket closed) must not cancel the others' read.
        return asyncio.shield(read)

    def _floor_read_done(self, room_id: str, read: asyncio.Future[int]) -> None:
        if self._floor_reads.get(room_id) is read:
            del self._floor_reads[room_id]
        if not read.cancelled():
            read.exception()  # retrieved: a failed read is each caller's error, not a log line

    async def highest_seq(self, room_id: str) -> int:
        """The room's highest stored seq (0 if empty): exact as of the read, unlike
        `Room.last_seq`.

        From what is known stored (the summary, this process's hint) it looks ahead by `_id`,
        doubling the step, then bisects back: seq n is stored only after n - 1, so `room:n`
        exists for every n up to the highest. A current summary costs one lookup more; one
        that is k behind about 2·log2(k)."""
        low = max(self._seq_hints.get(room_id, 0), await self._room_last_seq(room_id))
        step, high = 1, 0
        while not high:
            if await self._is_stored(room_id, low + step):
                low, step = low + step, step * 2
            else:
                high = low + step
        while high - low > 1:
            middle = (low + high) // 2
            if await self._is_stored(room_id, middle):
                low = middle
            else:
                high = middle
        self._note_seq(room_id, low)
        return low

    async def _is_stored(self, room_id: str, seq: int) -> bool:
        found = await self._messages.find_one(
            {"_id": message_id(room_id, seq)}, projection={"_id": True}
        )
        return found is not None

    async def _find_by_client_id(
        self, room_id: str, sender_id: str, client_id: str
    ) -> Message | None:
        # Only for a retry of a stored message (rare): an indexed equality query on MongoDB and
        # FerretDB/PostgreSQL, a scan on FerretDB/SQLite.
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
