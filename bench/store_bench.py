"""Micro-benchmark of the message hot path: append latency p50/p99 when the messages
collection already holds 0, 1,000 and 10,000 messages.

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
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pymongo import DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from chatserver.config import Settings  # noqa: E402
from chatserver.models import utcnow  # noqa: E402
from chatserver.store import Store, client_key, message_id, new_message_doc  # noqa: E402

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
    claims: list[Document] = []
    for i in range(count):
        room, seq = f"fill{i % 10}", i // 10 + 1
        batch.append(new_message_doc(room, seq, "filler", f"f{i}", "x" * 100, utcnow()))
        claims.append({"_id": client_key(room, "filler", f"f{i}"), "seq": seq})
        if len(batch) == 1000:
            await db.messages.insert_many(batch)
            await db.message_client_ids.insert_many(claims)
            batch, claims = [], []
    if batch:
        await db.messages.insert_many(batch)
        await db.message_client_ids.insert_many(claims)


async def timed(appends: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    took = []
    for i in range(appends):
        started = time.perf_counter()
        await one(i)
        took.append((time.perf_counter() - started) * 1000)
    return took


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
    parser.add_argument("--appends", type=int, default=200, help="timed appends per algorithm")
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
        print(f"# append latency, {args.appends} sequential appends per row, {where}")
        asyncio.run(measure(mongo_url, args.appends))


if __name__ == "__main__":
    main()
