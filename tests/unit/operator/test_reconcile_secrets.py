"""Reading the generated Secrets back (reconcile.read_or_generate_secrets) against a stub API:
values are kept whoever owns the Secret (a MongoDB Secret retained from a deleted cluster is owned
by nobody, or still by the old uid while the garbage collector catches up), and only what is
missing is generated (issue #11). A Secret of a generated name that is not this cluster's, a JWT
key ring that does not parse and a value that is not text stop the pass as a SecretProblem (a
condition, never a value in its message); which Secrets count as the cluster's
(plan.belongs_to); a problem is announced once (reconcile.reported)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, cast

import pytest
from hypersend_operator import reconcile
from hypersend_operator import status as st
from hypersend_operator.builders import jwtring
from hypersend_operator.kube import ApiError, Kube
from hypersend_operator.plan import belongs_to

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


OWNER = reconcile.SecretOwner("team-a", "demo", "uid-1")
# What every child of cluster "demo" carries (builders/labels.py).
OURS = {
    "app.kubernetes.io/managed-by": "hypersend-operator",
    "app.kubernetes.io/instance": "demo",
}


def secret(
    name: str,
    labels: dict[str, str] | None = OURS,
    owners: list[dict[str, Any]] | None = None,
    **data: str,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "team-a"}
    if labels is not None:
        meta["labels"] = labels
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"metadata": meta, "data": {k.replace("_", "-"): b64(v) for k, v in data.items()}}


def mongo_secret(owners: list[dict[str, Any]] | None, **data: str) -> dict[str, Any]:
    return secret("demo-mongo-credentials", OURS, owners, **data)


OLD_OWNER = [{"kind": "HypersendCluster", "name": "demo", "uid": "old-uid", "controller": True}]


@pytest.mark.parametrize("owners", [None, OLD_OWNER], ids=["owned-by-nobody", "old-uid"])
async def test_retained_mongo_credentials_are_read_back_whoever_owns_them(
    owners: list[dict[str, Any]] | None,
) -> None:
    secret = mongo_secret(owners, password="root-pw", app_password="app-pw")
    kube = StubKube({"demo-mongo-credentials": secret})
    reads: reconcile.Reads = {}
    values = await reconcile.read_or_generate_secrets(cast(Kube, kube), OWNER, reads)
    assert values.mongo_root_password == "root-pw"
    assert values.mongo_app_password == "app-pw"
    # One read per Secret; the pass reuses it instead of fetching it again.
    assert kube.gets == ["demo-jwt", "demo-mongo-credentials", "demo-redis-credentials"]
    assert reads[("v1", "Secret", "demo-mongo-credentials")] is secret


async def test_a_secret_from_before_the_app_user_keeps_root_and_gains_an_app_password() -> None:
    kube = StubKube({"demo-mongo-credentials": mongo_secret(OLD_OWNER, password="root-pw")})
    values = await reconcile.read_or_generate_secrets(cast(Kube, kube), OWNER)
    assert values.mongo_root_password == "root-pw"
    assert len(values.mongo_app_password) >= 32
    assert values.mongo_app_password != values.mongo_root_password


async def test_missing_secrets_are_generated_and_a_failed_read_never_is() -> None:
    values = await reconcile.read_or_generate_secrets(cast(Kube, StubKube({})), OWNER)
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
            cast(Kube, StubKube({}, fail="demo-mongo-credentials")), OWNER
        )


THEIRS = {"app.kubernetes.io/managed-by": "helm", "app.kubernetes.io/instance": "demo"}
OTHER_CLUSTER = {**OURS, "app.kubernetes.io/instance": "demo-other"}
US = [{"kind": "HypersendCluster", "name": "demo", "uid": "uid-1", "controller": True}]


@pytest.mark.parametrize(
    ("labels", "owners", "ours"),
    [
        (OURS, None, True),  # kept under Retain: the labels only
        (OURS, OLD_OWNER, True),  # a re-created cluster, before the garbage collector
        (None, US, True),  # our labels removed by someone: still owned by this cluster
        (None, None, False),  # made by hand
        (THEIRS, None, False),  # another tool's
        (OTHER_CLUSTER, None, False),  # another cluster's, by our own labels
        ({"app.kubernetes.io/managed-by": "hypersend-operator"}, OLD_OWNER, False),
    ],
)
def test_which_secrets_belong_to_the_cluster(
    labels: dict[str, str] | None, owners: list[dict[str, Any]] | None, ours: bool
) -> None:
    assert belongs_to(secret("demo-jwt", labels, owners), "demo", "uid-1") is ours


@pytest.mark.parametrize("name", ["demo-jwt", "demo-mongo-credentials", "demo-redis-credentials"])
async def test_someone_elses_secret_under_a_generated_name_is_neither_read_nor_taken(
    name: str,
) -> None:
    theirs = secret(name, THEIRS, None, password="their-pw", jwt_secret="their-key")
    kube = StubKube({name: theirs})
    reads: reconcile.Reads = {}
    with pytest.raises(reconcile.SecretProblem) as caught:
        await reconcile.read_or_generate_secrets(cast(Kube, kube), OWNER, reads)
    problem = caught.value
    assert problem.reason == reconcile.SECRET_CONFLICT
    assert f"Secret {name} exists but is not this cluster's" in problem.message
    assert "app.kubernetes.io/instance=demo" in problem.message
    assert "their" not in problem.message
    assert ("v1", "Secret", name) not in reads  # nothing the apply could write over
    assert kube.gets[-1] == name  # the pass stops at it


async def test_secrets_the_spec_does_not_build_are_not_read() -> None:
    # An Atlas cluster's own Secret may well be called <name>-mongo-credentials.
    kube = StubKube({"demo-mongo-credentials": secret("demo-mongo-credentials", THEIRS)})
    values = await reconcile.read_or_generate_secrets(
        cast(Kube, kube), OWNER, mongo_in_cluster=False, redis_in_cluster=False
    )
    assert kube.gets == ["demo-jwt"]
    assert (values.mongo_root_password, values.mongo_app_password, values.redis_password) == (
        "",
        "",
        "",
    )


@pytest.mark.parametrize(
    "ring",
    [
        "not json",
        '{"keys": []}',
        '{"keys": [{"kid": "k1"}]}',
        '["k1", "s3cr3t-value"]',
    ],
)
async def test_a_malformed_jwt_key_ring_is_a_problem_never_replaced(ring: str) -> None:
    kube = StubKube({"demo-jwt": secret("demo-jwt", jwt_keys=ring)})
    with pytest.raises(reconcile.SecretProblem) as caught:
        await reconcile.read_or_generate_secrets(cast(Kube, kube), OWNER)
    problem = caught.value
    assert problem.reason == reconcile.JWT_KEY_RING_MALFORMED
    assert problem.message.startswith("Secret demo-jwt key jwt-keys: the JWT key ring ")
    assert "s3cr3t" not in problem.message
    assert kube.gets == ["demo-jwt"]


async def test_a_value_that_is_not_text_is_a_problem_never_replaced() -> None:
    ring = jwtring.ring_json(jwtring.new_ring("k1", "a-secret"))
    broken = secret("demo-redis-credentials")
    broken["data"]["password"] = base64.b64encode(b"\xff\xfe").decode()
    kube = StubKube(
        {"demo-jwt": secret("demo-jwt", jwt_keys=ring), "demo-redis-credentials": broken}
    )
    with pytest.raises(reconcile.SecretProblem) as caught:
        await reconcile.read_or_generate_secrets(cast(Kube, kube), OWNER)
    assert caught.value.reason == reconcile.SECRET_UNREADABLE
    assert caught.value.message.startswith(
        "Secret demo-redis-credentials key password is not UTF-8 text"
    )


def test_a_problem_is_announced_by_the_pass_that_first_reports_it() -> None:
    problem = st.failed(st.READY, reconcile.SECRET_CONFLICT, "Secret demo-jwt exists but ...")

    def status(reason: str, message: str, state: str = "False") -> dict[str, Any]:
        ready = {"type": "Ready", "status": state, "reason": reason, "message": message}
        return {"conditions": [{"type": "Reconciling", "status": "True"}, ready]}

    assert not reconcile.reported({}, problem)
    assert not reconcile.reported(status("Reconciling", "creating"), problem)
    assert reconcile.reported(status("SecretConflict", f"Ready: {problem.message}"), problem)
    other = status("SecretConflict", "Ready: Secret demo-redis-credentials exists but ...")
    assert not reconcile.reported(other, problem)
    resolved = status("SecretConflict", f"Ready: {problem.message}", state="True")
    assert not reconcile.reported(resolved, problem)
