"""The essence kopf diffs to fire `on.update`: the pause and restart annotations are in it.

kopf drops every annotation under a prefix its storages marked (`hypersend.io/kopf-managed`); the
operator's storage keeps `hypersend.io/paused` and `hypersend.io/restartedAt`, so changing them is
an update like a spec change (tests/e2e/test_operator_annotations.py measures it end to end).
"""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest
from hypersend_operator.api import PAUSED_ANNOTATION, RESTARTED_AT_ANNOTATION
from hypersend_operator.handlers import STORAGE_PREFIX, diffbase_storage

pytestmark = pytest.mark.unit


def body(**annotations: str) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {
            "name": "demo",
            "namespace": "default",
            "uid": "u1",
            "generation": 1,
            "annotations": {
                # What kopf's own storages leave on every CR the operator handled.
                f"{STORAGE_PREFIX}/kopf-managed": "yes",
                f"{STORAGE_PREFIX}/last-handled-configuration": '{"spec":{}}\n',
                **annotations,
            },
        },
        "spec": {"chat": {"image": "x"}},
        "status": {"phase": "Ready"},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def annotations_of(essence: Any) -> dict[str, str]:
    return dict(essence.get("metadata", {}).get("annotations", {}))


def test_stock_storage_drops_the_acting_annotations() -> None:
    """The cause of the slow pause: kopf's storage on our prefix hides our own annotations."""
    stock = kopf.AnnotationsDiffBaseStorage(prefix=STORAGE_PREFIX, key="last-handled-configuration")
    essence = stock.build(body=body(**{PAUSED_ANNOTATION: "true"}))
    assert PAUSED_ANNOTATION not in annotations_of(essence)


@pytest.mark.parametrize("key", [PAUSED_ANNOTATION, RESTARTED_AT_ANNOTATION])
def test_acting_annotations_are_in_the_essence_and_change_it(key: str) -> None:
    storage = diffbase_storage()
    before = storage.build(body=body())
    after = storage.build(body=body(**{key: "2026-12-02T04:00:00Z"}))
    assert annotations_of(after) == {key: "2026-12-02T04:00:00Z"}
    assert before != after  # kopf's diff is not empty: on.update fires


def test_kopf_bookkeeping_stays_out_of_the_essence() -> None:
    essence = diffbase_storage().build(body=body(**{PAUSED_ANNOTATION: "true"}))
    assert annotations_of(essence) == {PAUSED_ANNOTATION: "true"}
    assert "status" not in essence
    assert essence["spec"] == {"chat": {"image": "x"}}
