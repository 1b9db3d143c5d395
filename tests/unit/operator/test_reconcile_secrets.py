"""Reading the generated Secrets back (reconcile.read_or_generate_secrets) against a stub API:
values are kept whoever owns the Secret (a MongoDB Secret retained from a deleted cluster is owned
by nobody, or still by the old uid while the garbage collector catches up), and only what is
missing is generated (issue #11)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, cast

import pytest
from hypersend_operator import reconcile
from hypersend_operator.kube import ApiError, Kube

pytestmark = pytest.mark.unit


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class StubKube:
    """Only `get` of Secrets by name; a failed read when asked to."""

    def __init__(self, secrets: Mapping[str, dict[str, Any]], fail: str | None = None) -> None:
        self.secrets = secrets
        self.fail = fail
        self.gets: list[str] = []

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        assert (api_version, kind, namespace) == ("v1", "Secret", "team-a")
        self.gets.append(name)
        if name == self.fail:
            raise ApiError(403, "Forbidden", "no")
        return self.secrets.get(name)


def mongo_secret(owners: list[dict[str, Any]] | None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo-mongo-credentials", "namespace": "team-a"}
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"metadata": meta, "data": {k.replace("_", "-"): b64(v) for k, v in data.items()}}


OLD_OWNER = [{"kind": "HypersendCluster", "name": "demo", "uid": "old-uid", "controller": True}]


@pytest.mark.parametrize("owners", [None, OLD_OWNER], ids=["owned-by-nobody", "old-uid"])
async def test_retained_mongo_credentials_are_read_back_whoever_owns_them(
    owners: list[dict[str, Any]] | None,
) -> None:
    secret = mongo_secret(owners, password="root-pw", app_password="app-pw")
    kube = StubKube({"demo-mongo-credentials": secret})
    reads: reconcile.Reads = {}
    values = await reconcile.read_or_generate_secrets(cast(Kube, kube), "team-a", "demo", reads)
    assert values.mongo_root_password == "root-pw"
    assert values.mongo_app_password == "app-pw"
    # One read per Secret; the pass reuses it instead of fetching it again.
    assert kube.gets == ["demo-jwt", "demo-mongo-credentials", "demo-redis-credentials"]
    assert reads[("v1", "Secret", "demo-mongo-credentials")] is secret


async def test_a_secret_from_before_the_app_user_keeps_root_and_gains_an_app_password() -> None:
    kube = StubKube({"demo-mongo-credentials": mongo_secret(OLD_OWNER, password="root-pw")})
    values = await reconcile.read_or_generate_secrets(cast(Kube, kube), "team-a", "demo")
    assert values.mongo_root_password == "root-pw"
    assert len(values.mongo_app_password) >= 32
    assert values.mongo_app_password != values.mongo_root_password


async def test_missing_secrets_are_generated_and_a_failed_read_never_is() -> None:
    values = await reconcile.read_or_generate_secrets(cast(Kube, StubKube({})), "team-a", "demo")
    generated = [
        values.jwt_keys,
        values.mongo_root_password,
        values.mongo_app_password,
        values.redis_password,
    ]
    assert all(len(v) >= 32 for v in generated)
    assert len(set(generated)) == 4
    with pytest.raises(ApiError):
        await reconcile.read_or_generate_secrets(
            cast(Kube, StubKube({}, fail="demo-mongo-credentials")), "team-a", "demo"
        )
