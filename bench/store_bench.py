"""Micro-benchmark of the message hot path: MongoDB round trips per stored message and stored
messages/s at 1, 10 and 100 concurrent senders over many rooms (``throughput``, the default),
and append latency p50/p99 when the messages collection already holds 0, 1,000 and 10,000
messages (``latency``).

    .venv/bin/python bench/store_bench.py --backend postgresql
    .venv/bin/python bench/store_bench.py --backend postgresql --senders 1,10,100,200 \
        --rooms 1000 --messages 4000 --membership batch

``throughput`` counts every command PyMongo starts while the senders run (a CommandListener on
the bench's own Store, so the figure does not depend on the server's metrics): round trips per
stored message are that count over the messages stored. Each sender sends to rooms round robin
(sender i starts at room i), every message with a fresh client id. ``--membership MODE`` adds
the sender's membership check, so the figure is the whole send path's: ``find`` one
`is_member` find before each send (what both send paths did before issue #16), ``batch`` the
group commit's check (`append_message(check_member=True)`: one find per batch; the REST send
and a socket's send to a room it does not follow), ``socket`` a socket's send to a room it
follows (chatserver/realtime.py `Session.trusts`: the sender's rooms are read once before the
timed part, as at connect, and no check per message). Each row gets its
own database and Store; the rooms are created and every room gets one message before the timed
part (a warm process: every room's seq is known).

The latency table:

Compares the store's `append_message` (point operations on `_id`: room hint, probing insert,
client-id record and room summary) with the previous algorithm kept here as ``legacy``
(highest seq by a sorted query on `room_id`, insert, room update; a retry looked up by
`room_id`/`sender_id`/`client_id`). On FerretDB v1 with SQLite every filter not on `_id`
scans the collection, which is what the legacy figures show; FerretDB/PostgreSQL pushes string
equality down to SQL.

    .venv/bin/python bench/store_bench.py                 # starts FerretDB (SQLite) for the run
    .venv/bin/python bench/store_bench.py --backend postgresql
    .venv/bin/python bench/store_bench.py --mongo-url mongodb://127.0.0.1:27017

Each level gets its own database: the prefill is inserted directly (`insert_many`), then
``--appends`` sequential appends are timed per algorithm, each in its own room.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pymongo import DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
    register,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from chatserver.config import Settings  # noqa: E402
from chatserver.models import utcnow  # noqa: E402
from chatserver.store import Store, message_id, new_message_doc  # noqa: E402

Document = dict[str, Any]
LEVELS = (0, 1_000, 10_000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def legacy_append(db: AsyncDatabase[Document], room_id: str, sender: str, cid: str) -> int:
    """The append of the previous store version (commit 30c47a3), for comparison."""
    top = await db.messages.find_one(
        {"room_id": room_id}, projection={"seq": True}, sort=[("seq", DESCENDING)]
    )
    seq = (0 if top is None else int(top["seq"])) + 1
    while True:
        doc = new_message_doc(room_id, seq, sender, cid, "hello", utcnow())
        try:
            await db.messages.insert_one(doc)
        except DuplicateKeyError:
            found = await db.messages.find_one(
                {"room_id": room_id, "sender_id": sender, "client_id": cid}
            )
            if found is not None:
                return int(found["seq"])
            seq += 1
            continue
        await db.rooms.update_one(
            {"_id": room_id, "last_seq": {"$lt": seq}}, {"$set": {"last_seq": seq}}
        )
        return seq


async def prefill(db: AsyncDatabase[Document], count: int) -> None:
    """`count` messages in 10 filler rooms (the collection size is what FerretDB scans)."""
    batch: list[Document] = []
    for i in range(count):
        room, seq = f"fill{i % 10}", i // 10 + 1
        batch.append(new_message_doc(room, seq, "filler", f"f{i}", "x" * 100, utcnow()))
        if len(batch) == 1000:
            await db.messages.insert_many(batch)
            batch = []
    if batch:
        await db.messages.insert_many(batch)


async def timed(appends: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    took = []
    for i in range(appends):
        started = time.perf_counter()
        await one(i)
        took.append((time.perf_counter() - started) * 1000)
    return took


class CommandCounter(CommandListener):
    """Counts the commands PyMongo sends (one round trip each), by command name."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def started(self, event: CommandStartedEvent) -> None:
        self.counts[event.command_name] = self.counts.get(event.command_name, 0) + 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def total(self) -> int:
        return sum(self.counts.values())


async def send_all(
    store: Store,
    room_ids: list[str],
    concurrency: int,
    messages: int,
    membership: str | None,
    followed: dict[str, set[str]],
) -> list[float]:
    """`messages` sends by `concurrency` senders; the latency of each in ms."""
    ids: Iterator[int] = itertools.count()
    took: list[float] = []

    async def sender(index: int, count: int) -> None:
        for k in range(count):
            at = (index + k * concurrency) % len(room_ids)
            room, user = room_ids[at], (f"u{at % 50}" if membership else "owner")
            started = time.perf_counter()
            if membership == "find" and not await store.is_member(room, user):
                raise AssertionError("the bench's sender is a member")
            if membership == "socket" and room not in followed[user]:
                raise AssertionError("the bench's sender follows the room")
            await store.append_message(
                room, user, f"c{next(ids)}", "x" * 100, check_member=membership == "batch"
            )
            took.append((time.perf_counter() - started) * 1000)

    per_sender = [
        messages // concurrency + (i < messages % concurrency) for i in range(concurrency)
    ]
    await asyncio.gather(*(sender(i, n) for i, n in enumerate(per_sender)))
    return took


async def measure_throughput(
    mongo_url: str, senders: list[int], rooms: int, messages: int, membership: str | None
) -> None:
    print(
        f"{'senders':>7} {'rooms':>6} {'stored':>7} {'seconds':>8} {'msg/s':>8} "
        f"{'trips/msg':>9} {'p50 ms':>7} {'p99 ms':>7}  commands"
    )
    # Registered globally, so it sees the Store's own client without changing how it is built;
    # the Store is the only client open while the senders run.
    counter = CommandCounter()
    register(counter)
    for concurrency in senders:
        name = f"storebench_{secrets.token_hex(4)}"
        settings = Settings(
            jwt_secret=SecretStr("k" * 32), mongo_url=SecretStr(mongo_url), mongo_db=name
        )
        store = Store(settings)
        await store.connect()
        try:
            await store.ensure_indexes()
            room_ids = [
                (await store.create_group_room("owner", f"r{i}", [f"u{i % 50}"])).id
                for i in range(rooms)
            ]
            # Warm: every room's seq is known to this process, as on a server that has run.
            await asyncio.gather(*(store.append_message(r, "owner", "warm", "w") for r in room_ids))
            # What a socket of each sender reads at connect (not counted: not per message).
            followed = {
                f"u{i}": set(await store.room_ids_for_user(f"u{i}"))
                for i in range(50 if membership == "socket" else 0)
            }
            counter.counts.clear()
            started = time.perf_counter()
            took = await send_all(store, room_ids, concurrency, messages, membership, followed)
            seconds = time.perf_counter() - started
            for room in room_ids[: min(rooms, 20)]:
                seqs = [m.seq for m in await store.messages_after(room, 0, 10_000)]
                assert seqs == list(range(1, len(seqs) + 1)), f"gap in {room}: {seqs}"
        finally:
            await store.close()
        # Counted up to the close, which writes what bookkeeping was still due; the check of
        # the first rooms' seqs above (messages and reactions) is not counted.
        counter.counts.pop("endSessions", None)
        counter.counts["find"] = counter.counts.get("find", 0) - 2 * min(rooms, 20)
        trips = counter.total()
        commands = ", ".join(f"{k} {v}" for k, v in sorted(counter.counts.items()))
        print(
            f"{concurrency:>7} {rooms:>6} {messages:>7} {seconds:>8.2f} "
            f"{messages / seconds:>8.0f} {trips / messages:>9.3f} "
            f"{percentile(took, 0.5):>7.1f} {percentile(took, 0.99):>7.1f}  {commands}",
            flush=True,
        )
        client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_url)
        await client.drop_database(name)
        await client.close()


async def measure(mongo_url: str, appends: int) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_url)
    print(f"{'messages':>9} {'algorithm':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    try:
        for level in LEVELS:
            name = f"storebench_{secrets.token_hex(4)}"
            settings = Settings(
                jwt_secret=SecretStr("k" * 32), mongo_url=SecretStr(mongo_url), mongo_db=name
            )
            store = Store(settings)
            await store.connect()
            try:
                await store.ensure_indexes()
                db = client[name]
                await prefill(db, level)
                new_room = await store.create_group_room("owner", "new", [])
                old_room = await store.create_group_room("owner", "old", [])
                old_id, new_id = old_room.id, new_room.id

                def old(i: int, db: AsyncDatabase[Document] = db, room: str = old_id) -> Any:
                    return legacy_append(db, room, "owner", f"o{i}")

                def new(i: int, store: Store = store, room: str = new_id) -> Any:
                    return store.append_message(room, "owner", f"n{i}", "hello")

                results = {"legacy": await timed(appends, old), "point": await timed(appends, new)}
                for algorithm, took in results.items():
                    print(
                        f"{level:>9} {algorithm:>9} {percentile(took, 0.5):>8.2f} "
                        f"{percentile(took, 0.99):>8.2f} {statistics.fmean(took):>8.2f}",
                        flush=True,
                    )
                assert await store.highest_seq(new_room.id) == appends
                assert await db.messages.find_one({"_id": message_id(new_room.id, appends)})
            finally:
                await client.drop_database(name)
                await store.close()
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", nargs="?", choices=("throughput", "latency"), default="throughput")
    parser.add_argument("--appends", type=int, default=200, help="latency: appends per algorithm")
    parser.add_argument(
        "--senders", default="1,10,100", help="throughput: concurrent senders per row (a list)"
    )
    parser.add_argument("--rooms", type=int, default=1000, help="throughput: rooms")
    parser.add_argument("--messages", type=int, default=2000, help="throughput: per row")
    parser.add_argument(
        "--membership",
        choices=("find", "batch", "socket"),
        help="throughput: the sender's membership check: a find per send (before issue #16), "
        "the group commit's one per batch, or none for a room the socket follows",
    )
    parser.add_argument("--mongo-url", help="an existing MongoDB/FerretDB (default: start one)")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="storage of the FerretDB started when there is no --mongo-url",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        mongo_url = args.mongo_url
        where = mongo_url.split("@")[-1] if mongo_url else f"FerretDB on {args.backend}"
        if mongo_url is None:
            from hypersend_devenv.datastores import ferretdb_server

            mongo_url = stack.enter_context(ferretdb_server(args.backend)).url
        if args.table == "latency":
            print(f"# append latency, {args.appends} sequential appends per row, {where}")
            asyncio.run(measure(mongo_url, args.appends))
            return
        senders = [int(n) for n in args.senders.split(",")]
        check = f", membership checked ({args.membership})" if args.membership else ""
        print(f"# stored messages/s and MongoDB round trips per message, {where}{check}")
        asyncio.run(
            measure_throughput(mongo_url, senders, args.rooms, args.messages, args.membership)
        )


if __name__ == "__main__":
    main()
