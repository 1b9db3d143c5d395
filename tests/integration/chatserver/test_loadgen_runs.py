"""bench/loadgen against a real server, run after run on one database (issue #16).

A `bench/side_by_side.py --quick` run reported one message "some member never got" at the 10x
load (and one in a ramp step) with every send acknowledged, while Centrifugo had none. The
server lost nothing: the harness runs its workloads one after another with the same users,
rooms and database, and the load generator numbered its client ids c1, c2, ... in every run.
A send whose sender had used the same client id in the same room in an earlier workload is a
retry by the protocol (docs/protocol.md, "Idempotent sends"): the server answers it with the
stored, older message and stores nothing new, so the new text reaches no member; with 1,000
random senders and ~1,000 sends after a 200-user ramp of ~2,000 sends, about one per run.

Here one user alone in its room (so every client id of the second run meets one of the first)
is driven twice by the real load generator: each run must have every send acknowledged as its
own message and delivered live to every member, and the room must hold both runs' messages.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest
from hypersend_devenv.build import build_own_module

from tests.fixtures.chat import REPO_ROOT, ChatServerFactory, register_user

pytestmark = pytest.mark.integration

LOADGEN_SOURCE = REPO_ROOT / "bench" / "loadgen"
# Messages per second of one run, for this long: a few dozen sends, each one a collision if
# the second run reused the first run's client ids.
RATE = 20.0
DURATION_S = 1.5
# The load generator's own hard deadline (it exits by itself); the subprocess bound is above it.
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def loadgen() -> Path:
    # Built from this tree's sources, once per content (~/.cache/hypersend/loadgen-<digest>).
    return build_own_module("loadgen", LOADGEN_SOURCE)


def _run(loadgen: Path, plan: dict[str, Any], plan_path: Path) -> dict[str, Any]:
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.run(
        [str(loadgen), str(plan_path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S + 30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    connected = next(e for e in events if e["event"] == "connected")
    assert connected["connected"] == 1, connected
    return next(e for e in events if e["event"] == "result")


def test_a_second_run_on_the_same_database_gets_every_message_stored_and_delivered(
    chat_server_factory: ChatServerFactory,
    loadgen: Path,
    mongo_url: str,
    mongo_db_name: str,
    tmp_path: Path,
) -> None:
    server = chat_server_factory.start(rate_limit_per_minute=1_000_000)
    user = register_user(server.url)
    created = httpx.post(
        f"{server.url}/api/v1/rooms",
        json={"kind": "group", "name": "loadgen", "members": []},
        headers=user.headers,
        timeout=30.0,
    )
    created.raise_for_status()
    room_id = str(created.json()["id"])
    plan = {
        "protocol": "hypersend",
        "url": server.ws_url,
        "mode": "load",
        "users": [{"id": user.id, "token": user.access_token, "room": room_id}],
        "connect_concurrency": 1,
        "connect_timeout_s": 20,
        "warmup_s": 0,
        "rate": RATE,
        "duration_s": DURATION_S,
        # settle returns as soon as every send is answered and every delivery arrived
        "settle_s": 10,
        "text_bytes": 100,
        "deadline_s": DEADLINE_S,
    }

    results = [_run(loadgen, plan, tmp_path / f"plan-{run}.json") for run in (1, 2)]

    for run, result in enumerate(results, start=1):
        summary = {k: result[k] for k in ("sent", "acked", "delivered", "errors")}
        assert result["sent"] > 0, (run, summary)
        assert result["errors"] == {}, (run, summary)
        assert result["acked"] == result["sent"], (run, summary)
        # the one member (the sender) got each of this run's messages live, once
        assert result["incomplete_messages"] == 0, (run, result["incomplete_messages"], summary)
        assert result["duplicates"] == 0, (run, result["duplicates"], summary)
        assert result["delivered"] == result["expected"] == result["sent"], (run, summary)

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_url, serverSelectionTimeoutMS=10_000
    )
    try:
        stored = list(
            client[mongo_db_name]["messages"].find(
                {"room_id": room_id}, projection={"seq": True, "client_id": True}
            )
        )
    finally:
        client.close()
    # Both runs' sends are stored, each under a client id of its own, seqs 1..n without a gap.
    assert len(stored) == results[0]["sent"] + results[1]["sent"]
    assert len({doc["client_id"] for doc in stored}) == len(stored)
    assert sorted(doc["seq"] for doc in stored) == list(range(1, len(stored) + 1))
