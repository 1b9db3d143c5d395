"""What a relist stands for (cache.relist_changes) and which CR changes wake a pass
(handlers._essence): the pure parts of the watch-fed caches."""

from __future__ import annotations

from typing import Any

import pytest
from hypersend_operator.api import PAUSED_ANNOTATION
from hypersend_operator.cache import relist_changes
from hypersend_operator.handlers import _essence

pytestmark = pytest.mark.unit


def obj(name: str, version: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version, **meta}}


def test_a_relist_announces_what_changed_while_no_watch_ran() -> None:
    before = {("ns", n): obj(n, v) for n, v in [("kept", "1"), ("edited", "2"), ("gone", "3")]}
    after = {("ns", n): obj(n, v) for n, v in [("kept", "1"), ("edited", "9"), ("new", "10")]}
    events = {(t, o["metadata"]["name"]) for t, o in relist_changes(before, after)}
    assert events == {("MODIFIED", "edited"), ("ADDED", "new"), ("DELETED", "gone")}


def test_status_writes_do_not_wake_a_pass_but_spec_and_annotations_do() -> None:
    base = obj("demo", "1", uid="u", generation=3, annotations={"a": "1"})
    status_only = {**obj("demo", "2", uid="u", generation=3, annotations={"a": "1"})}
    status_only["status"] = {"phase": "Ready"}
    assert _essence(base) == _essence(status_only)
    assert _essence(base) != _essence(
        obj("demo", "3", uid="u", generation=4, annotations={"a": "1"})
    )
    paused = obj(
        "demo", "4", uid="u", generation=3, annotations={"a": "1", PAUSED_ANNOTATION: "true"}
    )
    assert _essence(base) != _essence(paused)
    deleting = obj(
        "demo", "5", uid="u", generation=3, annotations={"a": "1"}, deletionTimestamp="t"
    )
    assert _essence(base) != _essence(deleting)
