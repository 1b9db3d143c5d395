"""What a relist stands for (cache.relist_changes), which CR changes wake a pass
(handlers._essence), and when the pod metric cache reads again and wakes a pass (cache.due,
cache.worth_a_pass): the pure parts of the caches."""

from __future__ import annotations

from typing import Any

import pytest
from hypersend_operator.api import PAUSED_ANNOTATION
from hypersend_operator.cache import Kept, due, relist_changes, worth_a_pass
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


def test_a_metric_is_read_when_never_read_or_older_than_max_age() -> None:
    assert due(None, now=100.0, max_age=10.0)
    assert not due(Kept(95.0, []), now=100.0, max_age=10.0)
    assert not due(Kept(90.0, []), now=100.0, max_age=10.0)  # exactly max_age old: still fresh
    assert due(Kept(89.9, []), now=100.0, max_age=10.0)
    # A failed read is kept as long as a value: failures are retried at the same pace.
    assert not due(Kept(95.0, None), now=100.0, max_age=10.0)


def pod(name: str, value: str) -> dict[str, Any]:
    return {"describedObject": {"kind": "Pod", "name": name}, "value": value, "timestamp": "t"}


def test_a_pass_is_woken_only_when_the_status_would_change() -> None:
    a, b = pod("chat-0", "3"), pod("chat-1", "4")
    assert worth_a_pass(None, [a])  # the first value
    assert worth_a_pass(None, None)  # the first read failed: still the first answer
    assert not worth_a_pass(Kept(1.0, [a, b]), [{**b, "timestamp": "later"}, a])  # same values
    assert worth_a_pass(Kept(1.0, [a, b]), [a, pod("chat-1", "5")])  # a value changed
    assert worth_a_pass(Kept(1.0, [a]), [a, b])  # a pod came
    assert worth_a_pass(Kept(1.0, [a]), [])  # every pod went
    assert worth_a_pass(Kept(1.0, [a]), None)  # known -> unknown
    assert worth_a_pass(Kept(1.0, None), [a])  # unknown -> known
    assert not worth_a_pass(Kept(1.0, None), None)
    assert worth_a_pass(Kept(1.0, None), [])  # unknown -> no pod reports: 0 is news
