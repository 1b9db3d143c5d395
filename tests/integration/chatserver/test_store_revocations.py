"""Login revocation checks on a real FerretDB: checks asked together share one find, and each
gets its own login's answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from chatserver.models import utcnow
from chatserver.store import Store

pytestmark = pytest.mark.integration


def _finds() -> float:
    return REGISTRY.get_sample_value("hypersend_mongo_commands_total", {"command": "find"}) or 0.0


async def test_checks_asked_together_share_one_find(stores: list[Store]) -> None:
    store, other = stores[0], stores[1]
    families = [f"fam-{i}" for i in range(50)]
    revoked = {families[3], families[17], families[49]}
    for family in revoked:
        await other.revoke_token_family(family, utcnow() + timedelta(hours=1))
    before = _finds()
    answers = await asyncio.gather(*(store.is_family_revoked(f) for f in families))
    assert _finds() - before == 1
    assert {f for f, revoked_now in zip(families, answers, strict=True) if revoked_now} == revoked


async def test_a_revocation_is_seen_by_the_next_check(stores: list[Store]) -> None:
    store, other = stores[0], stores[1]
    assert await store.is_family_revoked("fam-late") is False
    await other.revoke_token_family("fam-late", utcnow() + timedelta(hours=1))
    assert await store.is_family_revoked("fam-late") is True
