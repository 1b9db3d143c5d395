"""Issue #16, connect rate: a connect with resume reads MongoDB the same number of times
whatever the number of rooms (chatserver/realtime.py `Hub._replay_rooms` reads every held-back
room's history in one find, chatserver/store.py `messages_after_rooms`), and still delivers
exactly the history after each room's seq, in order."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess
from tests.integration.chatserver.realtime_client import (
    Account,
    connect_user,
    create_group,
    register,
    rest_as,
)

pytestmark = pytest.mark.integration

MANY_ROOMS = 12
MESSAGES = 3


async def _finds(server: ChatServerProcess) -> float:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=20) as http:
        text = (await http.get("/metrics")).text
    prefix = 'hypersend_mongo_commands_total{command="find"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def _rooms_with_history(
    server: ChatServerProcess, owner: Account, member: Account, n: int
) -> list[str]:
    rooms = [await create_group(server.url, owner, [member]) for _ in range(n)]
    rest = rest_as(server.url, owner)
    try:
        for room in rooms:
            for i in range(MESSAGES):
                await rest.post_message(room, f"m{i}")
    finally:
        await rest.aclose()
    return rooms


async def _resume_finds(server: ChatServerProcess, account: Account, rooms: list[str]) -> float:
    """MongoDB finds of one connect resuming every room after its first message; checks that
    exactly the later messages arrive, in order."""
    before = await _finds(server)
    sock = await connect_user(server.ws_url, account, resume={room: 1 for room in rooms})
    after = await _finds(server)
    try:
        for room in rooms:
            assert sock.message_seqs(room) == list(range(2, MESSAGES + 1)), sock.frames
    finally:
        await sock.close()
    return after - before


async def test_resume_reads_do_not_grow_with_rooms(
    chat_server_factory: ChatServerFactory,
) -> None:
    # No membership recheck during the test: its finds would be counted too.
    server = chat_server_factory.start(membership_recheck_seconds=3600)
    owner, few, many = [await register(server.url) for _ in range(3)]
    few_rooms = await _rooms_with_history(server, owner, few, 1)
    many_rooms = await _rooms_with_history(server, owner, many, MANY_ROOMS)

    one = await _resume_finds(server, few, few_rooms)
    twelve = await _resume_finds(server, many, many_rooms)

    # A read per room would make the second connect cost MANY_ROOMS - 1 finds more.
    assert one > 0
    assert twelve == one, (one, twelve)
