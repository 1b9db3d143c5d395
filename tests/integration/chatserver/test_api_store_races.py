"""Races the store must decide correctly on FerretDB v1 (whose updates are read-modify-write):
several Store instances (as several server processes) against one real database."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from chatserver.store import Store
from tests.fixtures.chat import STORE_PROCESSES as PROCESSES
from tests.fixtures.chat import SharedChatServer, register_user

pytestmark = pytest.mark.integration


async def test_concurrent_appends_get_unique_gap_free_seqs(stores: list[Store]) -> None:
    room = await stores[0].create_group_room("owner", "race", [])
    results = await asyncio.gather(
        *(
            stores[i % PROCESSES].append_message(room.id, f"user{i % 4}", f"c{i}", f"text {i}")
            for i in range(30)
        )
    )
    assert all(created for _, created in results)
    assert sorted(m.seq for m, _ in results) == list(range(1, 31))
    stored = await stores[1].messages_after(room.id, 0, 100)
    assert [m.seq for m in stored] == list(range(1, 31))
    assert len({m.client_id for m in stored}) == 30


async def test_concurrent_retries_store_one_message(stores: list[Store]) -> None:
    room = await stores[0].create_group_room("owner", "retry", [])
    results = await asyncio.gather(
        *(stores[i % PROCESSES].append_message(room.id, "u", "same", "hi") for i in range(12))
    )
    assert sum(created for _, created in results) == 1
    assert {m.seq for m, _ in results} == {1}
    assert len(await stores[2].messages_after(room.id, 0, 10)) == 1


async def test_concurrent_reactions_are_all_kept(stores: list[Store]) -> None:
    room = await stores[0].create_group_room("owner", "react", [])
    message, _ = await stores[0].append_message(room.id, "owner", "c", "react")
    await asyncio.gather(
        *(
            stores[i % PROCESSES].add_reaction(room.id, message.seq, "+1", f"user{i}")
            for i in range(15)
        )
    )
    final = await stores[1].get_message(room.id, message.seq)
    assert final is not None
    assert sorted(final.reactions["+1"]) == sorted(f"user{i}" for i in range(15))


async def test_concurrent_direct_room_creation_makes_one_room(stores: list[Store]) -> None:
    results = await asyncio.gather(
        *(
            stores[i % PROCESSES].get_or_create_direct_room(*(("a", "b") if i % 2 else ("b", "a")))
            for i in range(10)
        )
    )
    assert len({room.id for room, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert sorted(await stores[0].member_ids(results[0][0].id)) == ["a", "b"]


def test_concurrent_refresh_has_one_winner(shared_chat_server: SharedChatServer) -> None:
    user = register_user(shared_chat_server.url)
    url = f"{shared_chat_server.url}/api/v1/auth/refresh"

    def refresh(_: int) -> httpx.Response:
        return httpx.post(url, json={"refresh_token": user.refresh_token})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(refresh, range(8)))
    statuses = sorted(r.status_code for r in responses)
    # At most one rotation wins; every other attempt is a detected reuse (or, if the family was
    # revoked first, refused as revoked, including the winner's freshly issued pair).
    assert statuses.count(200) <= 1
    assert all(s in (200, 401) for s in statuses)
    codes = {r.json()["error"]["code"] for r in responses if r.status_code == 401}
    assert codes <= {"refresh_token_reused", "refresh_token_revoked"}
    assert "refresh_token_reused" in codes
    winners = [r for r in responses if r.status_code == 200]
    if winners:
        # The leak revoked the family: the winner's new refresh token is dead too.
        after = httpx.post(url, json={"refresh_token": winners[0].json()["refresh_token"]})
        assert after.status_code == 401
