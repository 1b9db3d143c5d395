"""The data stores the chat server relies on, exercised over real sockets.

MongoDB side: PyMongo's native AsyncMongoClient against FerretDB v1 (or the server named by
HYPERSEND_TEST_MONGO_URL), limited to the features chatserver/store.py allows. Redis side: redis-py
asyncio pub/sub between two clients and the Lua counter the rate limiter builds on.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypersend_devenv.datastores import (
    PG_GIN_TWINS,
    DatastoreError,
    FerretDBServer,
    PostgresError,
    PostgresServer,
    RedisServer,
    ferretdb_server,
    pg_session,
    ping_mongo,
    ping_postgres,
    ping_redis,
)
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, MongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

pytestmark = pytest.mark.integration

Doc = dict[str, Any]

# INCR + PEXPIRE in one atomic step: the first hit of a window starts its expiry, so a counter
# can never be left without one (a crash between INCR and EXPIRE would otherwise pin it forever).
WINDOW_COUNTER = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {n, redis.call('PTTL', KEYS[1])}
"""


@pytest.fixture
async def mongo(mongo_url: str) -> AsyncIterator[AsyncMongoClient[Doc]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    yield client
    await client.close()


@pytest.fixture
def db(mongo: AsyncMongoClient[Doc], mongo_db_name: str) -> AsyncDatabase[Doc]:
    return mongo[mongo_db_name]


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


# --- MongoDB wire (FerretDB) ---------------------------------------------------------------


async def _is_ferretdb(client: AsyncMongoClient[Doc]) -> bool:
    return "ferretdbVersion" in await client.admin.command("buildInfo")


async def test_unique_index_rejects_duplicates(db: AsyncDatabase[Doc]) -> None:
    await db.users.create_index("username", unique=True)
    await db.users.insert_one({"username": "ada"})

    with pytest.raises(DuplicateKeyError):
        await db.users.insert_one({"username": "ada"})

    await db.users.insert_one({"username": "grace"})
    assert await db.users.count_documents({}) == 2


async def test_compound_unique_index_scopes_uniqueness(db: AsyncDatabase[Doc]) -> None:
    name = await db.messages.create_index(
        [("room_id", ASCENDING), ("seq", DESCENDING)], unique=True, name="room_seq"
    )
    assert name == "room_seq"
    info = await db.messages.index_information()
    assert info["room_seq"]["key"] == [("room_id", 1), ("seq", -1)]
    assert info["room_seq"].get("unique") is True

    await db.messages.insert_many([{"room_id": "r1", "seq": 1}, {"room_id": "r2", "seq": 1}])
    with pytest.raises(DuplicateKeyError):
        await db.messages.insert_one({"room_id": "r1", "seq": 1})


async def test_find_with_filter_sort_and_limit(db: AsyncDatabase[Doc]) -> None:
    seqs = [7, 3, 10, 1, 9, 2, 8, 5, 4, 6]
    await db.messages.insert_many([{"room_id": "r1", "seq": s, "text": f"m{s}"} for s in seqs])
    await db.messages.insert_many([{"room_id": "r2", "seq": s} for s in range(100, 110)])

    latest = await (
        db.messages.find({"room_id": "r1"}, {"_id": 0, "seq": 1})
        .sort("seq", DESCENDING)
        .limit(3)
        .to_list()
    )
    assert [d["seq"] for d in latest] == [10, 9, 8]

    after = await (
        db.messages.find({"room_id": "r1", "seq": {"$gt": 4}}).sort("seq", ASCENDING).limit(2)
    ).to_list()
    assert [d["seq"] for d in after] == [5, 6]
    assert after[0]["text"] == "m5"


async def test_counter_with_find_one_and_update(db: AsyncDatabase[Doc]) -> None:
    # upsert creates the counter at 1, $inc moves it, AFTER returns the new value.
    async def next_seq() -> int:
        doc = await db.counters.find_one_and_update(
            {"_id": "room:r1"},
            {"$inc": {"seq": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        return int(doc["seq"])

    assert [await next_seq() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert await db.counters.find_one({"_id": "room:r1"}) == {"_id": "room:r1", "seq": 5}


async def test_find_one_and_update_counter_under_concurrency(
    mongo_url: str, mongo: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]
) -> None:
    """MongoDB applies findAndModify atomically; FerretDB v1 does not (see the xfail reason)."""
    if await _is_ferretdb(mongo):
        pytest.xfail(
            "FerretDB v1 runs findAndModify/update as query, modify in Go, write back by _id, "
            "outside any transaction (FerretDB/FerretDB#3040): concurrent $inc loses updates"
        )
    await db.counters.insert_one({"_id": "room:r1", "seq": 0})
    clients: list[AsyncMongoClient[Doc]] = [AsyncMongoClient(mongo_url) for _ in range(4)]
    try:

        async def next_seq(client: AsyncMongoClient[Doc]) -> int:
            doc = await client[db.name].counters.find_one_and_update(
                {"_id": "room:r1"}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
            )
            assert doc is not None
            return int(doc["seq"])

        got = await asyncio.gather(*(next_seq(clients[i % 4]) for i in range(100)))
    finally:
        for client in clients:
            await client.close()
    assert sorted(got) == list(range(1, 101))


async def test_unique_index_serialises_concurrent_sequence_allocation(
    mongo_url: str, db: AsyncDatabase[Doc]
) -> None:
    """The allocation that is safe on FerretDB v1 and MongoDB alike: the unique (room, seq)
    index is the arbiter; a writer that loses the race gets DuplicateKeyError and retries."""
    await db.messages.create_index([("room_id", 1), ("seq", 1)], unique=True)
    clients: list[AsyncMongoClient[Doc]] = [AsyncMongoClient(mongo_url) for _ in range(4)]
    try:

        async def store(client: AsyncMongoClient[Doc], text: str) -> int:
            messages = client[db.name].messages
            while True:
                last = await messages.find_one(
                    {"room_id": "r1"}, {"seq": 1}, sort=[("seq", DESCENDING)]
                )
                seq = (int(last["seq"]) if last else 0) + 1
                try:
                    await messages.insert_one({"room_id": "r1", "seq": seq, "text": text})
                except DuplicateKeyError:
                    continue
                return seq

        got = await asyncio.gather(*(store(clients[i % 4], f"m{i}") for i in range(30)))
    finally:
        for client in clients:
            await client.close()

    assert sorted(got) == list(range(1, 31))
    assert await db.messages.count_documents({"room_id": "r1"}) == 30


async def test_concurrent_upserts_of_a_new_key_can_collide(
    mongo: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]
) -> None:
    """Two upserts racing to create one document: MongoDB 4.2+ retries the loser internally,
    FerretDB v1 returns DuplicateKeyError (code 11000) to it, so callers must retry once."""
    ferretdb = await _is_ferretdb(mongo)
    outcomes: list[str] = []

    async def upsert() -> None:
        try:
            await db.counters.find_one_and_update(
                {"_id": "room:new"}, {"$inc": {"seq": 1}}, upsert=True
            )
            outcomes.append("ok")
        except DuplicateKeyError:
            outcomes.append("duplicate")

    await asyncio.gather(*(upsert() for _ in range(20)))
    assert await db.counters.count_documents({}) == 1
    if not ferretdb:
        assert outcomes == ["ok"] * 20


async def test_upsert_is_idempotent_on_client_id(db: AsyncDatabase[Doc]) -> None:
    # The send path: a retried message with the same client id must not be stored twice.
    await db.messages.create_index([("room_id", 1), ("client_id", 1)], unique=True)

    async def store(text: str) -> Doc:
        doc = await db.messages.find_one_and_update(
            {"room_id": "r1", "client_id": "c-1"},
            {"$setOnInsert": {"text": text}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        return doc

    first = await store("hello")
    again = await store("hello (retry)")
    assert again["_id"] == first["_id"]
    assert again["text"] == "hello"
    assert await db.messages.count_documents({}) == 1


async def test_insert_and_delete_one_are_exclusive_claims(
    mongo_url: str, db: AsyncDatabase[Doc]
) -> None:
    """What does decide a race on FerretDB v1 as on MongoDB: a unique key on insert, and the
    deleted count of delete_one (e.g. for one-time tokens)."""
    clients: list[AsyncMongoClient[Doc]] = [AsyncMongoClient(mongo_url) for _ in range(4)]
    try:

        async def insert(client: AsyncMongoClient[Doc]) -> int:
            try:
                await client[db.name].claims.insert_one({"_id": "token-1"})
            except DuplicateKeyError:
                return 0
            return 1

        async def delete(client: AsyncMongoClient[Doc]) -> int:
            result = await client[db.name].claims.delete_one({"_id": "token-1"})
            return result.deleted_count

        inserted = await asyncio.gather(*(insert(clients[i % 4]) for i in range(20)))
        deleted = await asyncio.gather(*(delete(clients[i % 4]) for i in range(20)))
    finally:
        for client in clients:
            await client.close()
    assert sum(inserted) == 1
    assert sum(deleted) == 1


async def test_conditional_find_one_and_update_claim_is_exclusive(
    mongo_url: str, mongo: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]
) -> None:
    """A compare-and-set ("claim if unused") must have one winner; FerretDB v1 lets several win."""
    if await _is_ferretdb(mongo):
        pytest.xfail(
            "FerretDB v1 matches the filter, then writes the modified document back by _id only "
            "(FerretDB/FerretDB#3040): concurrent conditional updates can all succeed"
        )
    await db.tokens.insert_one({"_id": "token-1", "used": False})
    clients: list[AsyncMongoClient[Doc]] = [AsyncMongoClient(mongo_url) for _ in range(4)]
    try:

        async def claim(client: AsyncMongoClient[Doc]) -> bool:
            doc = await client[db.name].tokens.find_one_and_update(
                {"_id": "token-1", "used": False}, {"$set": {"used": True}}
            )
            return doc is not None

        won = await asyncio.gather(*(claim(clients[i % 4]) for i in range(20)))
    finally:
        for client in clients:
            await client.close()
    assert won.count(True) == 1


async def test_aggregate_match_group_sum_sort(db: AsyncDatabase[Doc]) -> None:
    rows_in = [("r1", "ada", 2, 3), ("r1", "bob", 5, 2), ("r1", "cy", 1, 4), ("r2", "ada", 100, 5)]
    await db.messages.insert_many(
        [
            {"room_id": room, "sender": sender, "size": size}
            for room, sender, size, times in rows_in
            for _ in range(times)
        ]
    )

    async def per_sender(accumulator: Doc) -> list[Doc]:
        pipeline: list[Doc] = [
            {"$match": {"room_id": "r1"}},
            {"$group": {"_id": "$sender", "v": accumulator}},
            {"$sort": {"v": -1, "_id": 1}},
        ]
        return await (await db.messages.aggregate(pipeline)).to_list()

    # One accumulator per $group: FerretDB v1 computes only the first (see the next test).
    assert await per_sender({"$sum": 1}) == [
        {"_id": "cy", "v": 4},
        {"_id": "ada", "v": 3},
        {"_id": "bob", "v": 2},
    ]
    assert await per_sender({"$sum": "$size"}) == [
        {"_id": "bob", "v": 10},
        {"_id": "ada", "v": 6},
        {"_id": "cy", "v": 4},
    ]


async def test_group_with_two_accumulators(
    mongo: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]
) -> None:
    """FerretDB v1.24 feeds one per-group iterator to every accumulator of a $group, so all
    but the first see no documents and return 0: silently wrong, hence one accumulator each."""
    await db.messages.insert_many([{"g": 1, "a": 2}, {"g": 1, "a": 3}, {"g": 2, "a": 1}])
    pipeline: list[Doc] = [
        {"$group": {"_id": "$g", "n": {"$sum": 1}, "total": {"$sum": "$a"}}},
        {"$sort": {"_id": 1}},
    ]
    rows = await (await db.messages.aggregate(pipeline)).to_list()
    if await _is_ferretdb(mongo):
        assert rows == [{"_id": 1, "n": 2, "total": 0}, {"_id": 2, "n": 1, "total": 0}]
    else:
        assert rows == [{"_id": 1, "n": 2, "total": 5}, {"_id": 2, "n": 1, "total": 1}]


async def test_ferretdb_rejects_features_the_design_avoids(
    mongo: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]
) -> None:
    """Keeps chatserver/store.py's "not relied on" list honest for the test server."""
    if not await _is_ferretdb(mongo):
        pytest.skip("not FerretDB: these features may well work on this server")
    await db.messages.insert_one({"room_id": "r1"})

    with pytest.raises(OperationFailure, match="expireAfterSeconds"):
        await db.messages.create_index("created_at", expireAfterSeconds=60)
    with pytest.raises(OperationFailure, match=r"\$lookup"):
        await db.messages.aggregate(
            [
                {
                    "$lookup": {
                        "from": "rooms",
                        "localField": "room_id",
                        "foreignField": "_id",
                        "as": "r",
                    }
                }
            ]
        )
    with pytest.raises(OperationFailure, match=r"\$changeStream"):
        await db.messages.watch()
    with pytest.raises(OperationFailure, match="startTransaction"):
        async with mongo.start_session() as session, await session.start_transaction():
            await db.messages.insert_one({"room_id": "r2"}, session=session)
    with pytest.raises(OperationFailure, match=r"\$max"):
        await db.messages.aggregate([{"$group": {"_id": "$room_id", "m": {"$max": "$seq"}}}])


# --- Redis ---------------------------------------------------------------------------------


async def test_pubsub_between_two_clients(redis_url: str, redis_prefix: str) -> None:
    channel = f"{redis_prefix}room:r1"
    async with (
        aioredis.Redis.from_url(redis_url, decode_responses=True) as subscriber,
        aioredis.Redis.from_url(redis_url, decode_responses=True) as publisher,
        subscriber.pubsub() as pubsub,
    ):
        await pubsub.subscribe(channel)
        # Live once the server confirms the subscription: nothing published after it is lost.
        confirm = await pubsub.get_message(timeout=5.0)
        assert confirm is not None
        assert (confirm["type"], confirm["channel"], confirm["data"]) == ("subscribe", channel, 1)
        assert await publisher.pubsub_numsub(channel) == [(channel, 1)]

        for i in range(3):
            assert await publisher.publish(channel, f"msg-{i}") == 1

        received: list[str] = []
        async with asyncio.timeout(5.0):
            async for message in pubsub.listen():
                assert message["type"] == "message"
                assert message["channel"] == channel
                received.append(message["data"])
                if len(received) == 3:
                    break
        assert received == ["msg-0", "msg-1", "msg-2"]

        assert await publisher.publish(f"{redis_prefix}room:other", "not for us") == 0
        assert await pubsub.get_message(timeout=0.2) is None


async def test_lua_window_counter_counts_atomically_and_expires(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}rate:user-1"
    counter = redis_client.register_script(WINDOW_COUNTER)
    window_ms = 60_000

    results = await asyncio.gather(*(counter(keys=[key], args=[window_ms]) for _ in range(25)))
    counts = sorted(int(n) for n, _ in results)
    assert counts == list(range(1, 26))
    assert all(0 < int(ttl) <= window_ms for _, ttl in results)

    # A short window really expires, and the next hit starts a fresh window at 1.
    short = f"{redis_prefix}rate:user-2"
    first, _ = await counter(keys=[short], args=[100])
    assert int(first) == 1
    async with asyncio.timeout(5.0):
        while await redis_client.exists(short):  # noqa: ASYNC110 - polling the server's clock
            await asyncio.sleep(0.05)
    n, ttl = await counter(keys=[short], args=[100])
    assert int(n) == 1
    assert 0 < int(ttl) <= 100


async def test_incr_then_expire_pipeline_counter(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    # The same building block without Lua: INCR and EXPIRE NX in one MULTI/EXEC transaction.
    key = f"{redis_prefix}rate:user-3"

    async def hit() -> int:
        async with redis_client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 60, nx=True)
            n, _ = await pipe.execute()
        return int(n)

    counts = await asyncio.gather(*(hit() for _ in range(20)))
    assert sorted(counts) == list(range(1, 21))
    assert 0 < await redis_client.ttl(key) <= 60


# --- the launchers themselves ----------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is gone for our purposes once reaped or defunct.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_redis_server_starts_answers_and_stops_cleanly() -> None:
    with RedisServer() as server:
        assert server.process is not None
        pid, port, workdir = server.process.pid, server.port, server.dir
        assert ping_redis(port)
        assert server.url == f"redis://127.0.0.1:{port}/0"
    assert not _alive(pid)
    assert not ping_redis(port)
    assert not workdir.exists()


def test_ferretdb_server_keeps_data_in_its_state_dir(tmp_path: Path) -> None:
    with FerretDBServer(state_dir=tmp_path) as server:
        assert server.process is not None
        pid, port = server.process.pid, server.port
        assert ping_mongo(port)
        with MongoClient[Doc](server.url) as client:
            client.keep.notes.insert_one({"_id": 1, "text": "kept"})
    assert not _alive(pid)
    assert not ping_mongo(port)

    with FerretDBServer(state_dir=tmp_path) as server, MongoClient[Doc](server.url) as client:
        assert client.keep.notes.find_one({"_id": 1}) == {"_id": 1, "text": "kept"}
    assert tmp_path.exists()


def test_a_server_that_dies_at_start_fails_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "ferretdb"
    fake.write_text("#!/bin/sh\necho 'cannot open sqlite dir' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = FerretDBServer(state_dir=tmp_path / "state", binary=fake)
    with pytest.raises(DatastoreError, match=r"exited with code 3[\s\S]*cannot open sqlite dir"):
        server.start()
    assert server.process is None
    assert "cannot open sqlite dir" in server.log_path.read_text()

    absent = FerretDBServer(binary=tmp_path / "absent")
    with pytest.raises(DatastoreError, match="is missing"):
        absent.start()
    assert absent._temp_dir is None  # nothing was created


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_cli_prints_urls_and_stops_on_ctrl_c(backend: str) -> None:
    tools = Path(__file__).resolve().parents[2] / "tools"
    env = {**os.environ, "PYTHONPATH": str(tools)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypersend_devenv.datastores", "--backend", backend],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    expected = {"REDIS_URL", "MONGO_URL"} | (
        {"POSTGRESQL_URL"} if backend == "postgresql" else set()
    )
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        for line in proc.stdout:
            if "=" in line and line.split("=", 1)[0] in expected:
                key, value = line.strip().split("=", 1)
                urls[key] = value
            if len(urls) == len(expected):
                break
        assert set(urls) == expected
        redis_port = int(urls["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        mongo_port = int(urls["MONGO_URL"].rstrip("/").rsplit(":", 1)[1])
        pg_port = (
            int(urls["POSTGRESQL_URL"].rsplit(":", 1)[1].split("/")[0])
            if backend != "sqlite"
            else 0
        )
        assert ping_redis(redis_port)
        assert ping_mongo(mongo_port)
        if pg_port:
            assert ping_postgres(pg_port)
            with MongoClient[Doc](urls["MONGO_URL"]) as client:
                client.cli.notes.insert_one({"_id": 1})
            _assert_schema_in_postgres(pg_port, "cli")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not ping_redis(redis_port)
        assert not ping_mongo(mongo_port)
        if pg_port:
            assert not ping_postgres(pg_port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- FerretDB on PostgreSQL ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (the postmaster's checkpointer, walwriter, backends...)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_comm = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(after_comm[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _wait_gone(pids: list[int], within: float = 30.0) -> list[int]:
    """The PIDs still alive after up to `within` seconds (orphans are reaped asynchronously)."""
    deadline = time.monotonic() + within
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


# pg_session waits 1 s for an answer by default; planning every FerretDB table's lookups in one
# DO block took longer than that on the loaded 2-core CI machine. This only bounds a hang.
SQL_TIMEOUT_SECONDS = 30.0


def _assert_schema_in_postgres(port: int, mongo_db: str) -> None:
    """FerretDB keeps each MongoDB database as a PostgreSQL schema of tables: prove the data
    went to PostgreSQL (the statement raises unless a collection table there has rows)."""
    sql = f"""
        DO $$ DECLARE t record; n bigint; BEGIN
          FOR t IN SELECT table_name FROM information_schema.tables
                   WHERE table_schema = '{mongo_db}' AND table_name NOT LIKE '\\_ferretdb\\_%'
          LOOP
            EXECUTE format('SELECT count(*) FROM %I.%I', '{mongo_db}', t.table_name) INTO n;
            IF n > 0 THEN RETURN; END IF;
          END LOOP;
          RAISE EXCEPTION 'no rows in schema %', '{mongo_db}';
        END $$"""
    pg_session(port, sql, database="ferretdb", timeout=SQL_TIMEOUT_SECONDS)


def test_ferretdb_lookups_on_postgresql_are_answered_from_an_index() -> None:
    """FerretDB v1 pushes an equality down as `_jsonb->'field' @> '"value"'`, which its btree
    indexes cannot serve; PostgreSQL gets a GIN twin of each index FerretDB creates, also of the
    ones that existed before the trigger, and plans every execution with its parameters
    (hypersend_devenv/datastores.py, PG_GIN_TWINS)."""
    with ferretdb_server("postgresql") as mongo:
        assert mongo.postgres is not None
        pg_port = mongo.postgres.port
        with MongoClient[Doc](mongo.url, serverSelectionTimeoutMS=10_000) as client:
            members = client.twins.members
            members.create_index([("user_id", ASCENDING), ("room_id", ASCENDING)])
            members.insert_many(
                [{"_id": f"r{r}:u{u}", "user_id": f"u{u}", "room_id": f"r{r}"}
                 for u in range(200) for r in range(u, u + 3)]
            )  # fmt: skip
            assert sorted(d["room_id"] for d in members.find({"user_id": "u7"})) == [
                "r7", "r8", "r9"
            ]  # fmt: skip
            assert members.find_one({"_id": "r8:u7"}) == {
                "_id": "r8:u7", "user_id": "u7", "room_id": "r8"
            }  # fmt: skip
        # The plan of the statement FerretDB sends, with sequential scans priced out: it names
        # an index only where one serves the containment.
        pg_session(
            pg_port,
            _INDEX_PLANS.replace("SCHEMA", "twins"),
            database="ferretdb",
            timeout=SQL_TIMEOUT_SECONDS,
        )
        # The twins of indexes made before the trigger existed come with the next start's DO.
        pg_session(
            pg_port,
            "DROP EVENT TRIGGER hypersend_gin_twins",
            database="ferretdb",
            timeout=SQL_TIMEOUT_SECONDS,
        )
        with MongoClient[Doc](mongo.url, serverSelectionTimeoutMS=10_000) as client:
            client.later.members.create_index([("user_id", ASCENDING)])
            client.later.members.insert_one({"_id": "r1:u1", "user_id": "u1", "room_id": "r1"})
        with pytest.raises(PostgresError, match="sequential scan"):
            pg_session(
                pg_port,
                _INDEX_PLANS.replace("SCHEMA", "later"),
                database="ferretdb",
                timeout=SQL_TIMEOUT_SECONDS,
            )
        pg_session(pg_port, PG_GIN_TWINS, database="ferretdb", timeout=SQL_TIMEOUT_SECONDS)
        pg_session(
            pg_port,
            _INDEX_PLANS.replace("SCHEMA", "later"),
            database="ferretdb",
            timeout=SQL_TIMEOUT_SECONDS,
        )


_INDEX_PLANS = """
    DO $$ DECLARE tbl text; field text; line text; plan text; BEGIN
      IF current_setting('plan_cache_mode') <> 'force_custom_plan' THEN
        RAISE EXCEPTION 'plan_cache_mode is %', current_setting('plan_cache_mode');
      END IF;
      SET LOCAL enable_seqscan = off;
      SELECT format('%I.%I', table_schema, table_name) INTO STRICT tbl
        FROM information_schema.tables
       WHERE table_schema = 'SCHEMA' AND table_name LIKE 'members%';
      FOREACH field IN ARRAY ARRAY['_id', 'user_id'] LOOP
        plan := '';
        FOR line IN EXECUTE format(
          'EXPLAIN SELECT _jsonb FROM %s WHERE _jsonb->%L @> %L', tbl, field, '"x"'
        ) LOOP
          plan := plan || line || E'\n';
        END LOOP;
        IF plan NOT LIKE '%Index Scan%' THEN
          RAISE EXCEPTION 'a lookup by % is a sequential scan: %', field, plan;
        END IF;
      END LOOP;
    END $$"""


def test_ferretdb_on_postgresql_round_trip_and_clean_stop() -> None:
    with ferretdb_server("postgresql") as mongo:
        postgres = mongo.postgres
        assert postgres is not None
        assert mongo.process is not None
        assert postgres.process is not None
        ferret_pid, pg_pid = mongo.process.pid, postgres.process.pid
        mongo_port, pg_port = mongo.port, postgres.port
        dirs = [mongo.dir, postgres.dir]
        assert mongo.url == f"mongodb://127.0.0.1:{mongo_port}/"
        assert postgres.url == f"postgres://postgres@127.0.0.1:{pg_port}/ferretdb"
        assert ping_postgres(pg_port)
        assert not (mongo.dir / "sqlite").exists()
        if os.geteuid() == 0:
            assert _uid(pg_pid) == pwd.getpwnam("postgres").pw_uid

        with MongoClient[Doc](mongo.url, serverSelectionTimeoutMS=10_000) as client:
            users = client.roundtrip.users
            users.create_index("username", unique=True)
            users.insert_one({"username": "ada", "n": 1})
            users.insert_many([{"username": "bob", "n": 2}, {"username": "cy", "n": 3}])
            with pytest.raises(DuplicateKeyError):
                users.insert_one({"username": "ada", "n": 4})
            found = users.find({"n": {"$gte": 2}}, {"_id": 0}).sort("n", DESCENDING)
            assert list(found) == [{"username": "cy", "n": 3}, {"username": "bob", "n": 2}]
            assert users.count_documents({}) == 3
        _assert_schema_in_postgres(pg_port, "roundtrip")
        with pytest.raises(PostgresError, match="no rows in schema"):
            _assert_schema_in_postgres(pg_port, "never_written")

        # Trust authentication, but only over the socket and from loopback.
        hba = (postgres.data_dir / "pg_hba.conf").read_text().splitlines()
        rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
        assert {rule[-1] for rule in rules} == {"trust"}
        assert {rule[3] for rule in rules if rule[0] != "local"} == {"127.0.0.1/32", "::1/128"}

        children = _children(pg_pid)
        assert children  # checkpointer, walwriter, ...

    assert _wait_gone([ferret_pid, pg_pid, *children]) == []
    assert not ping_mongo(mongo_port)
    assert not ping_postgres(pg_port)
    assert not any(d.exists() for d in dirs)


def test_postgres_keeps_its_cluster_in_its_state_dir() -> None:
    # Not under pytest's tmp_path: as root that is 0700, and the postgres user must reach it.
    with tempfile.TemporaryDirectory(prefix="hypersend-pg-test-") as top:
        os.chmod(top, 0o755)
        with ferretdb_server("postgresql", top) as mongo, MongoClient[Doc](mongo.url) as client:
            client.keep.notes.insert_one({"_id": 1, "text": "kept"})
        assert (Path(top) / "postgres" / "data" / "PG_VERSION").exists()
        initdb_log = Path(top) / "postgres" / "initdb.log"
        initdb_log.unlink()

        # Second start: no initdb, the database exists already, the document is there.
        with ferretdb_server("postgresql", top) as mongo, MongoClient[Doc](mongo.url) as client:
            assert client.keep.notes.find_one({"_id": 1}) == {"_id": 1, "text": "kept"}
        assert not initdb_log.exists()


def test_postgres_dies_with_the_process_that_started_it() -> None:
    tools = Path(__file__).resolve().parents[2] / "tools"
    script = (
        "import sys, time\n"
        "from hypersend_devenv.datastores import PostgresServer\n"
        "server = PostgresServer()\n"
        "server.start()\n"
        "print(server.process.pid, server.port, server.dir, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tools)},
    )
    workdir = None
    try:
        assert parent.stdout is not None
        pid_text, port_text, workdir = parent.stdout.readline().split()
        pg_pid, pg_port = int(pid_text), int(port_text)
        assert ping_postgres(pg_port)
        children = _children(pg_pid)
        assert children
        parent.kill()  # no cleanup code runs: only PDEATHSIG can stop the postmaster
        parent.wait()
        assert _wait_gone([pg_pid, *children]) == []
        assert not ping_postgres(pg_port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if workdir is not None:  # the killed parent could not remove it
            shutil.rmtree(workdir, ignore_errors=True)


def test_postgres_reports_a_missing_install(tmp_path: Path) -> None:
    server = PostgresServer(bin_dir=tmp_path)
    with pytest.raises(DatastoreError, match="initdb and postgres not found"):
        server.start()
    assert server._temp_dir is None  # nothing was created
