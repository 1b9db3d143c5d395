"""The essence kopf diffs to fire `on.update` keeps the pause and restart annotations.

kopf builds the essence with the diff-base storage, then lets the progress storage clear its own
annotations from it (kopf/_core/reactor/processing.py), and fires `on.update` when the essence
differs from the recorded one. Both storages drop every annotation under a prefix a kopf storage
uses or marked. These tests run that pipeline with the operator's real settings; the end-to-end
effect is measured in tests/e2e/test_operator_annotations.py.
"""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest
from hypersend_operator.__main__ import parse_args, settings
from hypersend_operator.api import PAUSED_ANNOTATION, RESTARTED_AT_ANNOTATION
from hypersend_operator.handlers import DIFFBASE_KEY, KOPF_PREFIX

pytestmark = pytest.mark.unit

STAMP = "2026-12-02T04:00:00Z"
# What an operator that kept kopf's bookkeeping under hypersend.io left on every CR it handled.
LEGACY = {"hypersend.io/kopf-managed": "yes", f"hypersend.io/{DIFFBASE_KEY}": '{"spec":{}}\n'}
CURRENT = {f"{KOPF_PREFIX}/kopf-managed": "yes", f"{KOPF_PREFIX}/{DIFFBASE_KEY}": '{"spec":{}}\n'}


def body(bookkeeping: dict[str, str], **annotations: str) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {
            "name": "demo",
            "namespace": "default",
            "uid": "u1",
            "generation": 1,
            "annotations": {**bookkeeping, **annotations},
        },
        "spec": {"chat": {"image": "x"}},
        "status": {"phase": "Ready"},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def essence(s: kopf.OperatorSettings, b: kopf.Body) -> dict[str, Any]:
    """What kopf compares: the diff base's essence, cleared of progress annotations."""
    built = s.persistence.diffbase_storage.build(body=b)
    return dict(s.persistence.progress_storage.clear(essence=built))


def annotations_of(e: dict[str, Any]) -> dict[str, str]:
    return dict(e.get("metadata", {}).get("annotations", {}))


@pytest.fixture
def operator_settings() -> kopf.OperatorSettings:
    return settings(parse_args(["run"]))


def test_bookkeeping_under_our_api_prefix_hides_the_acting_annotations() -> None:
    """The cause of the slow pause: kopf's stock storages under `hypersend.io`."""
    s = kopf.OperatorSettings()
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hypersend.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hypersend.io", key=DIFFBASE_KEY
    )
    paused = essence(s, body(LEGACY, **{PAUSED_ANNOTATION: "true"}))
    assert PAUSED_ANNOTATION not in annotations_of(paused)
    assert paused == essence(s, body(LEGACY))  # no diff: on.update never fires


@pytest.mark.parametrize("bookkeeping", [CURRENT, LEGACY], ids=["current", "legacy-marker"])
@pytest.mark.parametrize(
    ("key", "value"), [(PAUSED_ANNOTATION, "true"), (RESTARTED_AT_ANNOTATION, STAMP)]
)
def test_acting_annotations_change_the_essence(
    operator_settings: kopf.OperatorSettings, bookkeeping: dict[str, str], key: str, value: str
) -> None:
    before = essence(operator_settings, body(bookkeeping))
    after = essence(operator_settings, body(bookkeeping, **{key: value}))
    assert annotations_of(after) == {key: value}
    assert before != after  # kopf's diff is not empty: on.update fires


def test_kopf_bookkeeping_stays_out_of_the_essence(
    operator_settings: kopf.OperatorSettings,
) -> None:
    e = essence(operator_settings, body(CURRENT, **{PAUSED_ANNOTATION: "true"}))
    assert annotations_of(e) == {PAUSED_ANNOTATION: "true"}
    assert "status" not in e
    assert e["spec"] == {"chat": {"image": "x"}}
